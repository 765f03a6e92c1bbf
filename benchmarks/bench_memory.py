"""Peak memory of ``record=[T-1]`` runs on every backend (issue 15): N=8, T=4000, K=1024.

Each run is a fresh process; its peak is sampled over it and all its descendants (Lava
runs in a child and forked model processes that share pages), 20 ms apart plus the time a
sample takes: reading every page table for the pages-once count takes ~0.02 s for the
reference and ~0.16 s for Lava's six processes here.  Three measures of the same tree:

- **resident, pages once** (the verdict): the physical pages the tree maps, each counted
  once however many of its processes map it (frame numbers from ``/proc/PID/pagemap``,
  readable by root or with CAP_SYS_ADMIN; "—" elsewhere, and the verdict falls back to PSS).
  It is what the run holds in RAM and does not depend on what else runs;
- **PSS** (``/proc/PID/smaps_rollup``): each page split among all processes mapping it,
  also those outside the run (the benchmark's own Python maps the same libraries), so on a
  busy machine a single-process run's PSS drops with what else is loaded;
- **RSS** summed over the tree: counts the pages the tree's processes share once per process.

The same run with a few steps (``STARTUP_STEPS``) is the start-up (imports, the
network built, compiled code loaded from the cache, which an unmeasured first run
fills); the difference is what the run adds.  The target compares whole
peaks; the run's own cost is compared too, and where start-up goes is measured
in a second table (RSS after each stage of a Brian2 run's process).

Run alone: ``.venv/bin/python benchmarks/bench_memory.py [--quick]``.
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
N, T, K, D = 8, 4000, 1024, 64
QUICK = dict(n=2, steps=100, k=128, d=64)
"""``bench(quick=True)`` (``make bench --quick``): a tiny problem, the same columns; the figures
mean nothing (K = 128 reuses the compiled Brian2 code the tests leave in the cache)."""
BACKENDS = ("reference", "lava", "brian2")
STARTUP_STEPS = 50
"""The start-up is measured as the same run with this few steps: everything is built and
every process is up (Lava's tree lives long enough to be sampled whole), the steps add
nothing that grows with T."""
MIN_RUN_MIB = 4.0
"""Below this, what the reference's run adds is measurement noise: no ratio is given."""

SCRIPT = """
import sys
from networks import planted_network, simulate
backend, steps = sys.argv[1], int(sys.argv[2])
net, x, _ = planted_network({d}, {k}, 10, seed=0, n_inputs={n})
trace = simulate(net, x, steps, backend=backend, seed=0, record=[steps - 1])
assert trace.spikes.shape == (1, {n}, {k}), trace.spikes.shape
"""

STAGES = """
import sys
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024
out = [("python, numpy", None)]
import numpy
out[0] = ("python, numpy", rss())
import networks
out.append(("+ import networks (ours; scipy through neurons.poisson)", rss()))
if sys.argv[1] == "brian2":
    from networks.brian import import_brian2
    import_brian2()
    out.append(("+ import brian2 (sympy, jinja2, Cython; not its pylab and pytest)", rss()))
    from networks import planted_network, simulate
    net, x, _ = planted_network({d}, {k}, 10, seed=0, n_inputs={n})
    simulate(net, x, 1, backend="brian2", seed=0, record=[0])
    out.append(("+ network built (all-to-all Synapses: K² weights and indices), compiled "
                "code loaded, one step", rss()))
else:
    import pylab, pytest
    out.append(("+ import pylab, pytest (what a plain `import brian2` adds with them)", rss()))
for name, value in out:
    print(f"{{name}}\\t{{value:.1f}}")
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


def _kib(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of ``pid`` in KiB (0, 0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            values = dict(line.split()[:2] for line in f if line.startswith(("Pss:", "Rss:")))
        return int(values["Pss:"]), int(values["Rss:"])
    except (OSError, KeyError, ValueError):
        return 0, 0


_PAGE = os.sysconf("SC_PAGE_SIZE")
_PRESENT = np.uint64(1 << 63)
_FRAME = np.uint64((1 << 55) - 1)


def _frames(pid: int) -> np.ndarray:
    """Frame numbers (uint64) of the pages ``pid`` has resident (empty once it is gone).

    Without CAP_SYS_ADMIN the kernel reports every frame as 0: see :func:`frames_readable`.
    """
    found = []
    try:
        with open(f"/proc/{pid}/maps") as maps, \
                open(f"/proc/{pid}/pagemap", "rb", buffering=0) as pagemap:
            for line in maps:
                start, end = (int(a, 16) for a in line.split(None, 1)[0].split("-"))
                if line.rstrip().endswith("[vsyscall]"):
                    continue  # not in the page tables
                pagemap.seek(start // _PAGE * 8)
                entries = np.frombuffer(pagemap.read((end - start) // _PAGE * 8), np.uint64)
                found.append(entries[(entries & _PRESENT) != 0] & _FRAME)
    except (OSError, ValueError):
        pass
    return np.concatenate(found) if found else np.zeros(0, np.uint64)


@functools.lru_cache(maxsize=None)
def frames_readable() -> bool:
    """Whether ``/proc/PID/pagemap`` gives real frame numbers here (root or CAP_SYS_ADMIN)."""
    return bool(_frames(os.getpid()).any())


def _resident_once_kib(pids: list[int]) -> int:
    """KiB of the distinct physical pages the processes ``pids`` have resident together."""
    frames = [_frames(p) for p in pids]
    return len(np.unique(np.concatenate(frames))) * _PAGE // 1024 if frames else 0


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_WAIT_POLICY="PASSIVE")


def _role(pid: int, root: int) -> str:
    """What a process of a run's tree is, from its command line and parent."""
    if pid == root:
        return "the caller (simulate)"
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        with open(f"/proc/{pid}/stat", "rb") as f:
            ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return "gone"
    if "resource_tracker" in cmd:
        return "multiprocessing's resource tracker"
    if ppid == root:
        return "Lava child (imports Lava, compiles the graph, runs the runtime)"
    return "forked Lava process model"


def peak(backend: str, steps: int, n: int = N, k: int = K, d: int = D,
         detail: bool = False):
    """(peak PSS, peak RSS summed over the tree, peak resident pages counted once or None
    where frame numbers are not readable, all MiB; wall seconds) of one run; ``detail`` adds
    the tree at the PSS peak: [(role, PSS MiB, RSS MiB), ...]."""
    code = SCRIPT.format(n=n, k=k, d=d)
    once = frames_readable()
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, backend, str(steps)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    pss = rss = resident = 0
    at_peak = []
    while proc.poll() is None:
        pids = _tree(proc.pid)
        sizes = [_kib(p) for p in pids]
        total = sum(s[0] for s in sizes)
        if total > pss and detail:
            at_peak = [(_role(p, proc.pid), s[0] / 1024, s[1] / 1024)
                       for p, s in zip(pids, sizes) if s[1]]
        pss, rss = max(pss, total), max(rss, sum(s[1] for s in sizes))
        if once:
            resident = max(resident, _resident_once_kib(pids))
        time.sleep(0.02)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"{backend} run failed: {err.strip().splitlines()[-1:]}")
    result = (pss / 1024, rss / 1024, resident / 1024 if once else None,
              time.perf_counter() - start)
    return (*result, at_peak) if detail else result


def stages(kind: str, n: int = N, k: int = K, d: int = D) -> list[tuple[str, float]]:
    """RSS (MiB) after each stage of a fresh process: ``kind`` "brian2" (a Brian2 run of one
    step) or "libraries" (matplotlib and pytest imported after networks)."""
    out = subprocess.run([sys.executable, "-c", STAGES.format(n=n, k=k, d=d), kind],
                         env=_env(), capture_output=True, text=True, check=True).stdout
    return [(name, float(value)) for name, value in
            (line.split("\t") for line in out.strip().splitlines())]


def _verdict(ratio: float) -> str:
    return "met" if ratio <= 2.0 else "missed"


def bench(quick: bool = False) -> str:
    """The markdown section; ``quick``: the smaller problem of :data:`QUICK`."""
    size = QUICK if quick else dict(n=N, steps=T, k=K, d=D)
    n, steps, k, d = size["n"], size["steps"], size["k"], size["d"]
    few = min(STARTUP_STEPS, steps)
    peak("brian2", few, n, k, d)  # unmeasured: fills Brian2's compiled-code cache for this size
    rows = {b: (peak(b, steps, n, k, d), peak(b, few, n, k, d)) for b in BACKENDS}
    *_, lava_tree = peak("lava", few, n, k, d, detail=True)
    (ref_pss, ref_rss, ref_once, _), (ref_pss1, ref_rss1, ref_once1, _) = rows["reference"]
    ref_adds = ref_rss - ref_rss1

    def adds_ratio(mib):
        return f"{mib / ref_adds:.2f}x" if ref_adds >= MIN_RUN_MIB else "—"

    def mib(value):
        return "—" if value is None else f"{value:.0f} MiB"

    lines = [f"## Peak memory, record=[T-1] (N={n}, T={steps}, K={k}, D={d})", "",
             f"| backend | peak resident, pages once | start-up (T={few}) | "
             f"peak / reference's | peak PSS | PSS / reference's | peak RSS (tree) | "
             f"run adds (RSS) | run adds / reference's | wall s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for b, ((pss, rss, once, wall), (pss1, rss1, once1, _)) in rows.items():
        ratio = "—" if once is None else f"{once / ref_once:.2f}x"
        lines.append(
            f"| {b} | {mib(once)} | {mib(once1)} | {ratio} | {pss:.0f} MiB | "
            f"{pss / ref_pss:.2f}x | {rss:.0f} MiB | {rss - rss1:.0f} MiB | "
            f"{adds_ratio(rss - rss1)} | {wall:.1f} |")
    measure = ("resident pages counted once" if ref_once is not None else
               "PSS: frame numbers are not readable here (not root), so the pages the tree "
               "shares cannot be counted once")
    lines += ["", f"Peak of the whole process tree (Lava: caller, child and model processes), "
              f"sampled 20 ms apart plus the time a sample takes (with the pages-once count, "
              f"about 0.2 s for Lava's tree). \"Pages once\": the distinct physical pages the tree has "
              f"resident (from /proc/PID/pagemap), what the run holds in RAM whatever else "
              f"runs; PSS splits pages also with processes outside the run (this benchmark's "
              f"Python maps the same libraries), which lowers a single process's figure most. "
              f"Start-up is the same run with T = {few}; \"run adds\" is the RSS difference "
              f"(what a run allocates is private, so no sharing blurs it; \"—\" where the "
              f"reference adds under {MIN_RUN_MIB:.0f} MiB, within the noise).", "",
              f"Verdict from {measure}:", ""]
    for b in ("lava", "brian2"):
        (pss, rss, once, _), (pss1, rss1, once1, _) = rows[b]
        if ref_once is not None:
            ratio, start_ratio = once / ref_once, once1 / ref_once1
            start_more = once1 - ref_once1
        else:
            ratio, start_ratio, start_more = pss / ref_pss, pss1 / ref_pss1, pss1 - ref_pss1
        lines.append(
            f"- {b}: peak {ratio:.2f}x the reference's (PSS {pss / ref_pss:.2f}x, RSS "
            f"{rss / ref_rss:.2f}x): target ≤ 2x **{_verdict(ratio)}**. Start-up alone is "
            f"{start_ratio:.2f}x the reference's, {start_more:.0f} MiB more; "
            f"the run adds {rss - rss1:.0f} MiB (the reference: {ref_adds:.0f} MiB).")
    brian, libs = stages("brian2", n, k, d), stages("libraries", n, k, d)
    lines += ["", "Where a Brian2 run's start-up goes (RSS of one process after each stage):",
              "", "| stage | RSS | adds |", "| --- | ---: | ---: |"]
    before = 0.0
    for name, value in brian:
        lines.append(f"| {name} | {value:.0f} MiB | {value - before:+.0f} MiB |")
        before = value
    extra = libs[-1][1] - libs[-2][1]
    lines += ["", f"A plain `import brian2` would also import pylab (matplotlib.pyplot) and "
              f"pytest, {extra:.0f} MiB more; the backend imports Brian2 without them "
              f"(`networks.brian.import_brian2`).", "",
              f"Where a Lava run's start-up goes (its process tree at the PSS peak of the "
              f"T = {few} run; forked processes share their parent's pages, which PSS splits):",
              "", "| process | PSS | RSS |", "| --- | ---: | ---: |"]
    for role, p_mib, r_mib in sorted(lava_tree, key=lambda row: -row[1]):
        lines.append(f"| {role} | {p_mib:.0f} MiB | {r_mib:.0f} MiB |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(bench(quick="--quick" in sys.argv[1:]))
