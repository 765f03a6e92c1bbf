"""Brian2 backend speed per code-generation target beside the reference simulator.

D = 784, K = 512, one input, T = 256 steps, a planted network (10 active codes of
50–150 spikes/step), shared noise.  Per target: Brian2's own run time for the
T steps (steps/s), and separately the build time (objects, code generation,
compilation or loading of cached code).  The cold cython compile is measured in
a child process with an empty cache directory.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from common import QUICK, ROOT, blas, load_average, pick

D, K, N, T = pick(784, 32), pick(512, 24), 1, pick(256, 8)
TARGETS = pick(("numpy", "cython", "cpp_standalone"), ("numpy",))
"""Quick mode runs the numpy target only: cython and C++ compile for a minute when cold."""

_COLD = """
import time, warnings
t0 = time.perf_counter()
from networks import planted_network, simulate
net, x, _ = planted_network(%d, %d, 10, seed=0, n_inputs=1)
tr = simulate(net, x, 8, backend="brian2", target="cython")
print(tr.info["build_seconds"], time.perf_counter() - t0)
""" % (D, K)


def _cold_cython() -> str:
    with tempfile.TemporaryDirectory(prefix="ipvae-bench-cache-") as cache:
        env = dict(os.environ, IPVAE_BRIAN2_CACHE=cache)
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", _COLD], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=900)
        if out.returncode:
            return f"failed: {out.stderr.strip().splitlines()[-1] if out.stderr else '?'}"
        build, wall = (float(v) for v in out.stdout.split()[-2:])
        return f"{build:.1f} s build incl. compile ({time.perf_counter() - t0:.1f} s process)"


CASES = (("planted, codes of 50–150 spikes/step", 1.0), ("low rates, inputs × 0.03", 0.03))


def _case(net, x, label) -> list[str]:
    from networks import simulate

    simulate(net, x, 4)  # warm-up
    ref_s = np.inf
    for _ in range(3):
        t0 = time.perf_counter()
        ref = simulate(net, x, T, seed=0)
        ref_s = min(ref_s, time.perf_counter() - t0)
    spikes = ref.spikes.sum(axis=2).mean()
    active = (ref.spikes > 0).sum(axis=2).mean()
    rows = [f"| {label}: {spikes:.0f} spikes/step from {active:.1f} neurons | | | | |",
            f"| reference (numpy) | {T / ref_s:,.0f} | – | – | 1.00 |"]
    for target in TARGETS:
        try:
            runs = [simulate(net, x, T, backend="brian2", seed=0, target=target)]
            if target != "cpp_standalone":  # cpp_standalone rebuilds its project every call
                runs.append(simulate(net, x, T, backend="brian2", seed=0, target=target))
        except Exception as err:  # report the failure in the table
            rows.append(f"| brian2 {target} | failed: {err} | | | |")
            continue
        last = runs[-1]
        builds = " / ".join(f"{r.info['build_seconds']:.2f} s" for r in runs)
        same = float(np.mean(last.spikes == ref.spikes))
        run_s = min(r.info["run_seconds"] for r in runs)
        rows.append(f"| brian2 {target} | {T / run_s:,.0f} | {builds} | {same:.4%} | "
                    f"{run_s / ref_s:.2f} |")
    return rows


def bench() -> str:
    from networks import planted_network

    net, x, _ = planted_network(D, K, pick(10, 2), seed=0, n_inputs=N)
    rows = []
    try:
        import brian2  # noqa: F401
    except ImportError as err:
        rows.append(f"| brian2 | not installed ({err}) | | | |")
    else:
        for label, scale in CASES:
            rows += _case(net, x * scale, label)
        if not QUICK:
            rows.append(f"| brian2 cython, cold compile (empty cache) | {_cold_cython()} | | | |")
    return "\n".join([
        f"## Brian2 backend vs reference (D={D}, K={K}, N={N}, T={T})",
        "",
        f"Planted network, shared noise, one input; reference BLAS: {blas()}. "
        "Steps/s is Brian2's own step loop over the T steps (event-driven synapses; "
        "`Network.run` after its set-up), best of the calls; "
        "build = Brian2 objects + code generation + compilation or cache load, per call, "
        "including the ~50 ms with which every runtime `Network.run` regenerates its code "
        "objects (first call in this process / second call; cpp_standalone recompiles its "
        "project on every call). time / reference = Brian2's step loop over the reference's "
        f"whole `simulate` (best of 3) for the same T steps. {load_average()}.",
        "",
        "| simulator | steps/s | build | counts = reference | time / reference |",
        "| --- | --- | --- | --- | --- |",
        *rows,
        "",
    ])


if __name__ == "__main__":
    print(bench())
