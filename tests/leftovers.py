"""What a Lava run may leave behind: marked processes and /dev/shm segments (Linux /proc)."""
from __future__ import annotations

from pathlib import Path

SHM = Path("/dev/shm")


def marked_processes(mark: str) -> list[int]:
    """PIDs of live processes whose environment carries IPVAE_LAVA_TEST_MARK=mark."""
    needle = f"IPVAE_LAVA_TEST_MARK={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def shm_names() -> set[str]:
    """Names of the shared-memory segments that exist now."""
    return {p.name for p in SHM.iterdir()} if SHM.is_dir() else set()


def leaked_shared_memory(before: set[str]) -> set[str]:
    """Segments created since ``before`` that no live process maps any more (other runs'
    segments are mapped by their processes)."""
    mapped = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "maps").read_text(errors="replace")
            except OSError:
                continue
            mapped.update(line.split("/dev/shm/", 1)[1].split()[0]
                          for line in text.splitlines() if "/dev/shm/" in line)
    return {name for name in shm_names() - before - mapped if (SHM / name).exists()}
