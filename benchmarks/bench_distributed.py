"""Evaluation throughput with 1 and 2 processes (``torchrun -m ipvae evaluate``) on this machine.

The whole command as a user runs it, timed from outside: ``ipvae evaluate`` (one
process) and ``torchrun --nproc_per_node 2 -m ipvae evaluate`` (gloo), on
planted inputs (D = 784, K = 512, 10 active units; the 20% test split of 5,000
saved as a .npy file) to ``STEPS`` steps, ``N`` inputs in chunks of 100, no
probe.  Throughput = inputs × steps / wall time; the same command on 1 input
for 1 step gives the fixed cost (imports, process group, plots, writing), and
the last column leaves it out.  The two runs' ``evaluation.json`` must be equal.
IPVAE_BENCH_DIST_N / IPVAE_BENCH_DIST_STEPS change the size.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import load_average, pick

N = int(os.environ.get("IPVAE_BENCH_DIST_N", pick(1000, 4)))
STEPS = int(os.environ.get("IPVAE_BENCH_DIST_STEPS", pick(1000, 3)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _evaluate(procs: int, net: Path, data: Path, n: int, steps: int, out: Path) -> float:
    """Wall seconds of one ``ipvae evaluate`` over ``procs`` processes."""
    args = ["evaluate", str(net), "--data", str(data), "--n-inputs", str(n),
            "--steps", str(steps), "--no-probe", "--quiet", "--out", str(out)]
    if procs == 1:
        cmd = [sys.executable, "-m", "ipvae", *args]
    else:
        cmd = [str(Path(sys.executable).parent / "torchrun"), "--nproc_per_node", str(procs),
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
               "-m", "ipvae", *args]
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=out.parent, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return wall


def bench() -> str:
    import numpy as np

    from networks import planted_network, save_network

    rows, results = [], {}
    with tempfile.TemporaryDirectory(prefix="ipvae-bench-dist-") as tmp:
        tmp = Path(tmp)
        net, x, _ = planted_network(784, 512, 10, seed=0, n_inputs=5 * N)
        save_network(net, tmp / "net.npz")
        np.save(tmp / "x.npy", x.astype(np.float32))
        for procs in (1, 2):
            # the fixed cost (quick mode: not measured, so not subtracted)
            fixed = pick(lambda: _evaluate(procs, tmp / "net.npz", tmp / "x.npy", 1, 1,
                                           tmp / f"fixed{procs}"), lambda: 0.0)()
            wall = _evaluate(procs, tmp / "net.npz", tmp / "x.npy", N, STEPS, tmp / f"run{procs}")
            results[procs] = json.loads((tmp / f"run{procs}" / "evaluation.json").read_text())
            rows.append((procs, wall, fixed, N * STEPS / wall, N * STEPS / max(wall - fixed, 1e-9)))
    same = "identical" if results[1] == results[2] else "DIFFERENT"
    base = rows[0]
    lines = [f"## Evaluation over processes (torchrun, gloo): {N} inputs x {STEPS} steps",
             "",
             f"Planted D=784, K=512 inputs, chunks of 100, no probe; evaluation.json of 1 and "
             f"2 processes: {same}. At the end: {load_average()}.",
             "",
             "| processes | wall s | fixed cost s (1 input, 1 step) | inputs x steps / s "
             "| without the fixed cost | speed-up (without) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for procs, wall, fixed, rate, net_rate in rows:
        ok = wall > fixed and base[1] > base[2]  # else the fixed cost is noise-dominated
        lines.append(f"| {procs} | {wall:.1f} | {fixed:.1f} | {rate:,.0f} | "
                     + (f"{net_rate:,.0f} | {net_rate / base[4]:.2f}x |" if ok else "– | – |"))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(bench())
