"""Child process of the LCA baseline: ``python -m train.baselines.lca_child DIR``.

Runs lava-optimization's ``LCA1Layer`` on Lava's CPU backend (floating point) in a
process of its own, started by :func:`train.baselines.lca.run_lca` in a new session:
Lava forces the ``fork`` start method on whoever imports its runtime and hangs when a
model fails, so the parent can kill this process group on a timeout (design §4.2's
isolation, with ``networks.lava``'s clean-up helpers).

DIR holds ``dictionary.npy`` (K, D), ``x.npy`` (N, D) and ``params.json`` (``lams``,
``steps`` T, ``tau``); the child writes ``progress.txt`` (inputs done over all λ) and
``out.npz``: ``codes`` (L, N, K) after T updates, ``curve`` (L, T + 1, N) the MSE per
pixel of the code a_t after t updates, ``seconds`` (L,) wall time per λ (compilation
included). Per input: potentials zeroed, one flush step with zero drive (it clears the
Dense's one-step-delayed output of the previous input), potentials zeroed again, the
drive τ D x set, T steps; the code sent at step t + 1 is a_t = soft_threshold(v_t, λ),
and a_T comes from the potentials after the last step.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from networks.lava_child import _limit_blas_threads, _watch_parent, _write_progress


def main(directory: str) -> int:
    tmp = Path(directory)
    _watch_parent(os.getppid(), directory)
    params = json.loads((tmp / "params.json").read_text())
    d = np.load(tmp / "dictionary.npy")
    x = np.load(tmp / "x.npy")
    lams, steps, tau = params["lams"], int(params["steps"]), float(params["tau"])

    from lava.lib.optimization.solvers.lca.process import LCA1Layer
    from lava.lib.optimization.solvers.lca.util import (apply_activation, get_1_layer_bias,
                                                        get_1_layer_weights)
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.extractor import Extractor, PyLoihiExtractorModel

    _limit_blas_threads(1)
    n, k = x.shape[0], d.shape[0]
    codes = np.zeros((len(lams), n, k))
    curve = np.zeros((len(lams), steps + 1, n))
    seconds = np.zeros(len(lams))
    weights = get_1_layer_weights(d, tau)                     # τ (I − D Dᵀ), (K, K)
    cfg = Loihi2SimCfg(select_tag="floating_pt", select_sub_proc_model=True,
                       exception_proc_model_map={Extractor: PyLoihiExtractorModel})
    zeros = np.zeros(k)
    a = np.empty((steps + 1, k))
    for j, lam in enumerate(lams):
        t0 = time.perf_counter()
        lca = LCA1Layer(weights=weights, bias=zeros, threshold=lam, tau=tau)
        out = Extractor(shape=(k,), buffer_size=steps + 1)
        lca.v1.connect(out.in_port)
        try:
            for i in range(n):
                if i:                                 # (a new network starts at v = 0, no drive)
                    lca.voltage.set(zeros)
                    lca.bias.set(zeros)
                lca.run(condition=RunSteps(num_steps=1), run_cfg=cfg)
                out.receive()
                lca.voltage.set(zeros)
                lca.bias.set(get_1_layer_bias(d, tau, x[i]))
                lca.run(condition=RunSteps(num_steps=steps, blocking=False), run_cfg=cfg)
                for t in range(steps):
                    a[t] = out.receive()
                lca.wait()
                a[steps] = apply_activation(np.asarray(lca.voltage.get(), dtype=np.float64), lam)
                codes[j, i] = a[steps]
                curve[j, :, i] = ((x[i] - a @ d) ** 2).mean(axis=1)
                _write_progress(tmp / "progress.txt", j * n + i + 1)
        finally:
            lca.stop()
        seconds[j] = time.perf_counter() - t0
    part = tmp / "out.tmp.npz"
    np.savez(part, codes=codes, curve=curve, seconds=seconds)
    os.replace(part, tmp / "out.npz")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
