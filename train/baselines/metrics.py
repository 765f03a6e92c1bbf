"""The iP-VAE's quality metrics for any code and reconstruction (design §7).

``summary(x, recon, codes)`` computes, for N inputs of D pixels and K-dimensional codes:

- ``mse``: mean squared error per pixel, averaged over inputs (input units squared);
- ``r2``: per input 1 − Σ(x − x̂)² / Σ(x − x̄)² (x̄ that input's mean), averaged over the
  inputs with non-zero variance — ``train.evaluate.r2_curve``, the iP-VAE's own function;
- ``sparsity``: the fraction of code entries that are exactly zero (the iP-VAE counts
  zero spike counts; a LASSO or LCA code has exact zeros; a Gaussian code has none);
- ``distance``: the Euclidean distance of (sparsity, r2) to the ideal (1, 1), the
  rate-distortion figure of merit of the paper's Table 1.
"""
from __future__ import annotations

import math

import numpy as np

from train.evaluate import r2_curve


def as_matrix(a, name: str, dim: int | None = None) -> np.ndarray:
    """``a`` as a finite float64 (N, M) array, or ValueError naming ``name`` and the problem.

    dim : the required number of columns M (None: any).
    """
    try:
        arr = np.asarray(a, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} is not a numeric array ({err})") from None
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, {'D' if dim is None else dim}), "
                         f"got shape {arr.shape}")
    if arr.shape[0] < 1:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} has {arr.shape[1]} columns, expected {dim} "
                         f"(shape {arr.shape})")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).sum())
        raise ValueError(f"{name} holds {bad} non-finite value(s) (NaN or inf)")
    return arr


def distance_to_ideal(sparsity: float, r2: float) -> float:
    """Euclidean distance of the point (sparsity, R²) to (1, 1)."""
    return math.hypot(1.0 - float(sparsity), 1.0 - float(r2))


def summary(x, recon, codes) -> dict:
    """Metrics of a reconstruction and its code.

    x (N, D) inputs, recon (N, D) reconstructions, codes (N, K) codes (any K ≥ 1).
    Returns dict(mse, r2, sparsity, distance) of Python floats (see the module docstring).
    Raises ValueError on shape mismatches, empty or non-finite arrays, or when every
    input has zero variance (R² undefined).
    """
    x = as_matrix(x, "x")
    recon = as_matrix(recon, "recon", x.shape[1])
    codes = as_matrix(codes, "codes")
    if recon.shape[0] != x.shape[0] or codes.shape[0] != x.shape[0]:
        raise ValueError(f"x, recon and codes must have the same number of rows N, got "
                         f"{x.shape[0]}, {recon.shape[0]}, {codes.shape[0]}")
    mse_n = ((x - recon) ** 2).mean(axis=1)                       # (N,) per pixel
    r2 = float(r2_curve(x, mse_n[None, :])[0])
    sparsity = float((codes == 0.0).mean())
    return dict(mse=float(mse_n.mean()), r2=r2, sparsity=sparsity,
                distance=distance_to_ideal(sparsity, r2))
