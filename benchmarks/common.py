"""What the benchmarks share: quick mode, the machine's state, timing, child processes.

``make bench`` (``benchmarks/run.py``) runs every ``bench_*.py``; ``--quick`` sets
``IPVAE_BENCH_QUICK=1`` before they are imported, and each module then picks tiny
sizes with :func:`pick`, so the benchmark code itself runs in the test suite
(``tests/test_bench.py``) in about a minute.  Quick figures time nothing worth
reporting; they only show the code runs and writes finite numbers.

Child processes (Lava graphs, fresh-process measurements) print one JSON line last;
:func:`run_json` runs them and parses it.  :func:`timed_lava_run` is the one way a
Lava graph is timed, in the child (``bench_lava``, ``bench_fixed``).
"""
from __future__ import annotations

import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

QUICK = os.environ.get("IPVAE_BENCH_QUICK") == "1"
"""Tiny sizes (``run.py --quick``): the code runs, the figures mean nothing."""


def pick(full, quick):
    """``full`` normally, ``quick`` in quick mode."""
    return quick if QUICK else full


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages and the core count, as a phrase."""
    try:
        loads = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:  # not available on this system
        loads = "unknown"
    return f"load average {loads} on {os.cpu_count()} cores"


def blas() -> str:
    """numpy's BLAS libraries: internal API, version, kernel and threads (threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info

        importlib.import_module("numpy")  # loads its BLAS, so that threadpoolctl sees it

        info = [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')}, "
                f"{i.get('num_threads')} threads)"
                for i in threadpool_info() if i.get("user_api") == "blas"]
        return ", ".join(info) or "unknown"
    except Exception:  # noqa: BLE001 - informational only
        return "unknown"


def best_time(f, repeats: int = 5, number: int = 10) -> float:
    """Seconds per call of f(): the best of ``repeats`` means over ``number`` calls (one
    warm-up call first)."""
    f()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(number):
            f()
        times.append((time.perf_counter() - t) / number)
    return min(times)


def run_json(argv: list[str], what: str, env: dict | None = None, timeout: float = 900,
             cwd: Path = ROOT) -> dict:
    """Run ``python *argv`` with the repository on the path; return its last stdout line
    parsed as JSON.  A failure raises RuntimeError naming ``what`` and the child's last
    error line."""
    full_env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_WAIT_POLICY="PASSIVE",
                    **(env or {}))
    done = subprocess.run([sys.executable, *argv], env=full_env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, start_new_session=True)
    if done.returncode != 0:
        last = done.stderr.strip().splitlines()[-1:] or ["(no message)"]
        raise RuntimeError(f"{what} failed: {last[0]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def timed_lava_run(top, n_steps: int, outs, cfg, cpu) -> dict:
    """Run a Lava graph for ``n_steps`` and time it (called in the child process).

    A non-blocking ``run`` (its return: compile + start), then the host drains every
    output in ``outs`` (an Extractor, an OutPort flagged as an external pipe, or a
    function returning the next message) each step until the run ends (the run time); ``cpu()`` returns
    CPU seconds (a number, or a dict by process) and is read around the run.
    Returns compile_s, run_s, cpu_s, lava_steps, spikes (the sum drained) and, when cpu()
    gives a dict, by_process.
    """
    from lava.magma.core.run_conditions import RunSteps

    t0 = time.perf_counter()
    try:
        top.run(condition=RunSteps(num_steps=n_steps, blocking=False), run_cfg=cfg)
        t1 = time.perf_counter()
        c1 = cpu()
        spikes = 0.0
        receives = [out if callable(out) else out.receive if hasattr(out, "receive")
                    else out.external_pipe_csp_recv_port.recv for out in outs]
        for _ in range(n_steps):
            for receive in receives:
                spikes += float(receive().sum())
        top.wait()
        t2 = time.perf_counter()
        c2 = cpu()
    finally:
        top.stop()
    result = dict(compile_s=t1 - t0, run_s=t2 - t1, lava_steps=n_steps, spikes=spikes)
    if isinstance(c2, dict):
        result["by_process"] = {name: c2[name] - c1.get(name, 0.0) for name in c2}
        result["cpu_s"] = sum(result["by_process"].values())
    else:
        result["cpu_s"] = c2 - c1
    return result


def lava_backend_run(net, x, steps: int, backend: str, **options) -> dict:
    """One ``simulate`` on a Lava backend, in the shape :func:`timed_lava_run` returns
    (Lava steps: ``steps`` + 1 for the reset step, doubled for error units)."""
    from networks import simulate

    trace = simulate(net, x, steps, backend=backend, seed=0, **options)
    stride = 2 if options.get("topology") == "error-units" else 1
    return dict(compile_s=trace.info["compile_s"], run_s=trace.info["run_s"],
                cpu_s=trace.info["cpu_s"], lava_steps=stride * steps + 1,
                spikes=float(trace.spikes.sum()))


def times(a: float, b: float) -> str:
    """a / b as "0.00", or "–" when b is 0 (a CPU time below the clock's tick)."""
    return f"{a / b:.2f}" if b > 0 else "–"


def lava_summary(runs: list[dict], cpu: str = "median") -> tuple[float, float, float]:
    """(best Lava steps/s, least compile + start seconds, CPU µs per Lava step) of repeated
    runs; the CPU figure is the ``median`` (steadier on a shared machine) or the ``min``."""
    rate = max(r["lava_steps"] / r["run_s"] for r in runs)
    per_step = [r["cpu_s"] / r["lava_steps"] for r in runs]
    cpu_us = (statistics.median(per_step) if cpu == "median" else min(per_step)) * 1e6
    return rate, min(r["compile_s"] for r in runs), cpu_us
