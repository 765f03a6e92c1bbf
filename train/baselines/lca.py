"""LCA on Lava: the Locally Competitive Algorithm of Intel's lava-optimization (issue 14).

The sparse-coding solver a Loihi user would pick: ``LCA1Layer`` of
``lava.lib.optimization.solvers.lca`` (Rozell et al. 2008), run on Lava's CPU backend
(``Loihi2SimCfg``, floating point). Given a dictionary D (K, D) of K atoms (rows, unit
norm from :mod:`train.baselines.sparse_coding`) and an input x (D,), its K neurons run,
per Lava step, with time constant τ and threshold λ,

    a_t     = soft_threshold(v_t, λ) = sign(v_t) max(|v_t| − λ, 0)
    v_{t+1} = (1 − τ) v_t + τ (I − D Dᵀ) a_t + τ D x

(the recurrent weights τ(I − D Dᵀ) in a ``Dense``, the drive τ D x as the neurons'
bias). Its fixed points satisfy v − a = D (x − Dᵀ a) with a = soft_threshold(v, λ):
the optimality conditions of the LASSO min_a ½ ‖x − aD‖² + λ ‖a‖₁, the same objective
(and the same λ ≡ α) as scikit-learn's codes. τ defaults to min(1, 1/‖D Dᵀ‖₂), the step at
which every eigenvalue 1 − τ g of the iteration restricted to an active set lies in
[0, 1) (a contraction: it converges without oscillating).

Lava runs in a child process (``train.baselines.lca_child``) in a session of its own:
Lava forces the ``fork`` start method on whoever imports its runtime and hangs when a
model fails, so the host never imports Lava and kills the child's process group on a
timeout and on every other exit path (``networks.lava``'s clean-up, design §4.2); the
child stops its runtime in a ``finally``. Inputs run one after another through one
compiled network per λ: before each input the potentials are zeroed and one flush step
with zero drive clears the ``Dense``'s one-step-delayed output, so no input leaks into
the next; an ``Extractor`` receives every step's code.

``steps_to_error`` is the first step t (number of LCA updates) at which the
reconstruction MSE per pixel of the codes a_t, averaged over the inputs, is at or below
a target: by default 1.05 × the MSE at the last step (the steps to come within 5 % of
the error LCA settles at); with ``target_mse`` a fixed MSE for every λ (e.g. an
iP-VAE's, to compare steps to equal error). None when the target is never reached.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from train.baselines.metrics import as_matrix, summary

REL_TARGET = 1.05
"""Default ``steps_to_error`` target: this factor times the final MSE."""
QUICK_N, QUICK_STEPS = 4, 100


def default_tau(dictionary) -> float:
    """τ = min(1, 1 / ‖D Dᵀ‖₂) (‖D Dᵀ‖₂ the largest eigenvalue of the atoms' Gram matrix)."""
    d = np.asarray(dictionary, dtype=np.float64)
    return float(min(1.0, 1.0 / np.linalg.eigvalsh(d @ d.T)[-1]))


def convergence_rate(dictionary, support, tau: float) -> float:
    """ρ: the per-step contraction of LCA near a fixed point with active set ``support``.

    With the active set fixed the update is affine: on the active atoms
    v ← (I − τ G_AA) v + const (G = D Dᵀ), on the others v ← (1 − τ) v + const, so
    ρ = max(1 − τ, max |1 − τ eig(G_AA)|), and ‖v_t − v*‖ shrinks like ρ^t (and so
    does ‖a_t − a*‖: the soft threshold is 1-Lipschitz).
    """
    d = np.asarray(dictionary, dtype=np.float64)
    idx = np.flatnonzero(np.asarray(support))
    rho = abs(1.0 - tau)
    if idx.size:
        g = d[idx] @ d[idx].T
        rho = max(rho, float(np.abs(1.0 - tau * np.linalg.eigvalsh(g)).max()))
    return rho


def soft_threshold(v, lam: float) -> np.ndarray:
    """sign(v) max(|v| − λ, 0), elementwise: LCA's activation (lava-optimization's
    ``apply_activation``, restated here so the host never imports Lava's runtime)."""
    v = np.asarray(v, dtype=np.float64)
    return np.sign(v) * np.maximum(np.abs(v) - lam, 0.0)


def check_lava_optimization() -> None:
    """ImportError (one line) unless lava-optimization is installed; Lava is not imported."""
    import importlib.util

    try:
        found = importlib.util.find_spec("lava.lib.optimization.solvers.lca") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ImportError("the LCA baseline needs lava-optimization 0.5.0 beside lava-nc 0.10 "
                          "(pip install lava-optimization==0.5.0)")


def default_timeout(steps: int, n: int, n_lams: int) -> float:
    """Wall-clock limit (s) of one child run: 120 s + 20 ms per Lava step (measured
    ~1–2 ms per step at K = 512 on a loaded 2-core machine) + 30 s per compilation."""
    return 120.0 + 0.02 * (steps + 1) * n * n_lams + 30.0 * n_lams


def run_lca(dictionary, x, lams, *, steps: int, tau: float | None = None,
            timeout: float | None = None, progress: bool = True) -> dict:
    """Run LCA on Lava (child process ``train.baselines.lca_child``) for each λ and input.

    dictionary (K, D), x (N, D) float64, lams L thresholds, steps T updates per input.
    Returns dict: ``codes`` (L, N, K) a_T; ``curve`` (L, T + 1, N) the MSE per pixel of
    the codes a_t after t updates; ``seconds`` (L,) Lava wall time per λ; ``tau``.
    Raises RuntimeError (with the child's last error lines) on a failure or a timeout;
    on every exit path the child's process group is killed and its shared memory and
    temporary folder removed.
    """
    from networks.lava import check_lava, run_child
    from networks.signals import signals_as_exceptions

    check_lava()
    check_lava_optimization()
    d = np.asarray(dictionary, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    tau = default_tau(d) if tau is None else float(tau)
    lams = [float(v) for v in lams]
    n = x.shape[0]
    if timeout is None:
        timeout = default_timeout(steps, n, len(lams))
    with signals_as_exceptions(), tempfile.TemporaryDirectory(prefix="ipvae-lca-") as tmp:
        tmp = Path(tmp)
        (tmp / "tmp").mkdir()
        np.save(tmp / "dictionary.npy", d)
        np.save(tmp / "x.npy", x)
        (tmp / "params.json").write_text(json.dumps(dict(lams=lams, steps=int(steps), tau=tau)))
        res = run_child("train.baselines.lca_child", tmp, total=n * len(lams),
                        timeout=timeout, desc="LCA on Lava", unit="input", progress=progress,
                        what="LCA on Lava")
    res["tau"] = tau
    return res


def steps_to_error(curve, target: float):
    """First t with mean-over-inputs curve[t] ≤ target (curve (T + 1, N)), else None."""
    mean = np.asarray(curve).mean(axis=1)
    hit = np.flatnonzero(mean <= target)
    return int(hit[0]) if hit.size else None


def sweep(dictionary, x, lambdas, *, steps: int, quick: bool = False, tau: float | None = None,
          target_mse: float | None = None, keep_curves: bool = False,
          timeout: float | None = None, progress: bool = True) -> list:
    """Rate-distortion sweep of LCA on Lava over thresholds λ on inputs x.

    dictionary (K, D) atoms as rows (e.g. ``SparseCoding.dictionary``); x (N, D) inputs;
    lambdas one or more thresholds λ > 0 (the LASSO penalty, α's units); steps T ≥ 1 LCA
    updates per input; tau the time constant (default :func:`default_tau`); target_mse the error of
    ``steps_to_error`` (default 1.05 × each λ's final MSE; see the module docstring).
    ``quick``: at most 4 inputs and 100 steps. timeout: wall-clock limit of the Lava
    child in seconds (default :func:`default_timeout`).
    Returns a list (in the order of ``lambdas``) of dict(lam, mse, r2, sparsity, distance,
    steps_to_error) of the codes after T updates, plus ``error_target`` (the MSE used),
    ``steps``, ``tau``, ``n``, ``seconds`` (Lava wall time) and, with ``keep_curves``,
    ``mse_curve`` (T + 1,) the MSE after t updates averaged over inputs and ``codes``.
    """
    d = as_matrix(dictionary, "dictionary")
    x = as_matrix(x, "x", d.shape[1])
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    lams = [float(v) for v in np.atleast_1d(np.asarray(lambdas, dtype=np.float64))]
    if not lams:
        raise ValueError("lambdas is empty")
    if not all(np.isfinite(v) and v > 0 for v in lams):
        raise ValueError(f"every λ must be a finite number > 0, got {lams}")
    if tau is not None and not 0 < tau <= 1:
        raise ValueError(f"tau must be in (0, 1], got {tau}")
    if target_mse is not None and not target_mse > 0:
        raise ValueError(f"target_mse must be > 0, got {target_mse}")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    steps = int(steps)
    if quick:
        x, steps = x[:QUICK_N], min(steps, QUICK_STEPS)
    run = run_lca(d, x, lams, steps=steps, tau=tau, timeout=timeout, progress=progress)
    out = []
    for j, lam in enumerate(lams):
        codes, curve = run["codes"][j], run["curve"][j]
        target = REL_TARGET * float(curve[-1].mean()) if target_mse is None \
            else float(target_mse)
        row = dict(lam=lam, **summary(x, codes @ d, codes),
                   steps_to_error=steps_to_error(curve, target), error_target=target,
                   error_target_rule=(f"{REL_TARGET} x final MSE" if target_mse is None
                                      else "given target_mse"),
                   steps=steps, tau=run["tau"], n=len(x), seconds=float(run["seconds"][j]))
        if keep_curves:
            row["mse_curve"] = curve.mean(axis=1)
            row["codes"] = codes
        out.append(row)
    return out
