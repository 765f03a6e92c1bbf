"""Peak memory of ``record=[T-1]`` runs on every backend (issue 15): N=8, T=4000, K=1024.

Each run is a fresh process; its peak is the largest total proportional set size
(PSS, from ``/proc/PID/smaps_rollup``) of it and all its descendants, sampled
every 20 ms (Lava runs in a child and forked model processes: PSS counts pages
they share once).  The same run with T = 1 shows the start-up cost (imports,
compiled objects) apart from what the run keeps.

Run alone: ``.venv/bin/python benchmarks/bench_memory.py``.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
N, T, K, D = 8, 4000, 1024, 64
BACKENDS = ("reference", "lava", "brian2")

SCRIPT = """
import sys
from networks import planted_network, simulate
backend, steps = sys.argv[1], int(sys.argv[2])
net, x, _ = planted_network({d}, {k}, 10, seed=0, n_inputs={n})
trace = simulate(net, x, steps, backend=backend, seed=0, record=[steps - 1])
assert trace.spikes.shape == (1, {n}, {k}), trace.spikes.shape
"""


def _tree(root: int) -> list[int]:
    """``root`` and its live descendants (Linux /proc)."""
    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    parent[int(entry)] = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [root], [root]
    while frontier:
        frontier = [p for p, pp in parent.items() if pp in frontier]
        found += frontier
    return found


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
    except (OSError, StopIteration):
        return 0


def peak_mib(backend: str, steps: int) -> tuple[float, float]:
    """(peak PSS in MiB of the run's process tree, wall seconds) of one run."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_WAIT_POLICY="PASSIVE")
    code = SCRIPT.format(n=N, k=K, d=D)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, backend, str(steps)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, sum(_pss_kib(p) for p in _tree(proc.pid)))
        time.sleep(0.02)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{backend} run failed: {err.strip().splitlines()[-1:]}")
    return peak / 1024, time.perf_counter() - start


def bench() -> str:
    rows = {b: (peak_mib(b, T), peak_mib(b, 1)) for b in BACKENDS}
    ref = rows["reference"][0][0]
    lines = [f"## Peak memory, record=[T-1] (N={N}, T={T}, K={K}, D={D})", "",
             "| backend | peak PSS, T=4000 | peak PSS, T=1 (start-up) | run adds | "
             "vs reference | wall s |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for b, ((peak, wall), (base, _)) in rows.items():
        lines.append(f"| {b} | {peak:.0f} MiB | {base:.0f} MiB | {peak - base:.0f} MiB | "
                     f"{peak / ref:.2f}x | {wall:.1f} |")
    lines.append("")
    lines.append("Peak PSS of the whole process tree (Lava: parent, child and model "
                 "processes), sampled every 20 ms.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(bench())
