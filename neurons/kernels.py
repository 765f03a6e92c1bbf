"""The reference simulator's per-step kernels, compiled, with a numpy fallback.

``neurons/_kernels.c`` runs the recipe of ``neurons/recipe.h`` (the inverse
CDF fused with the rate e^u, and ``membrane_update``) with the same float64
operations in the same order as :mod:`neurons.poisson`; exp and log1p come from
glibc's vector library (libmvec, AVX2) where it runs, else from scalar libm
(``vector_math(False)``).  numpy's exp may be libm's or its own SIMD code (on
AVX-512), so neither mode equals numpy bit for bit on every CPU; both meet the
contract of design §2.1: rates within ``EXP_ULP_TOLERANCE`` ulp of the exact
exp, potentials within ``POTENTIAL_TOLERANCE``, and counts equal to the
recipe's except where ξ lies within rounding of a CDF step
(``count_flip_tolerance``).  The module also holds the event-driven read-out and the shared-noise
generator (numpy's Philox streams computed from their counters, bit for bit).

It is built by ``pip install`` (``setup.py``); where it could not be built,
every function here falls back to numpy (same counts, slower).  The C loops
release the GIL, so callers may run independent rows in threads.
"""
from __future__ import annotations

import numpy as np

from neurons.poisson import membrane_update, poisson_icdf

try:
    from neurons import _kernels
except ImportError:  # built without a C compiler: the numpy path
    _kernels = None


def compiled() -> bool:
    """True when the compiled kernels are in use (False: the numpy fallback)."""
    return _kernels is not None


def vector_math(on: bool | None = None) -> bool:
    """Whether exp/log1p run vectorised (libmvec); ``on`` asks for it or for scalar libm."""
    if _kernels is None:
        return False
    return _kernels.vector_math(on)


def spikes(u, xi, rate_out, counts_out) -> int:
    """rate_out ← e^u; counts_out ← poisson_icdf(xi, rate_out) as float64.

    u, xi : (N, K) float64 C-contiguous potentials and uniforms.
    rate_out, counts_out : (N, K) float64 C-contiguous arrays, written in place.
    Returns the number of nonzero counts.
    """
    if _kernels is None:
        np.exp(u, out=rate_out)
        counts_out[...] = poisson_icdf(xi, rate_out)
        return int(np.count_nonzero(counts_out))
    return _kernels.spikes(u, xi, rate_out, counts_out)


def membrane(u, feedback, eta, bias, clamp_u, clamp_du, out):
    """out ← membrane_update(u, feedback, eta, bias, clamp_u, clamp_du).

    u, feedback, out : (N, K) float64 C-contiguous; bias (K,); out written in place.
    """
    if _kernels is None:
        out[...] = membrane_update(u, feedback, eta, bias, clamp_u, clamp_du)
        return
    _kernels.membrane(u, feedback, np.ascontiguousarray(bias, dtype=np.float64), out,
                      float(eta), float(clamp_u), float(clamp_du))


def readout(z, phi_t, out):
    """out ← z @ phi_t summed over the nonzero counts only (event-driven).

    z (N, K) counts, phi_t = Φᵀ (K, D), out (N, D): float64 C-contiguous.  Costs
    D multiply-adds per nonzero count, against N·K·D for the dense product, and
    sums in order of k, so it agrees with BLAS to rounding.
    """
    if _kernels is None:
        np.matmul(z, phi_t, out=out)
        return
    _kernels.readout(z, phi_t, out)


def uniforms(out, seed: int, first_index: int, first_step: int):
    """out (steps, N, K) ← ξ of design §2.2 for those samples and steps (float64, C-contiguous).

    out[s, n] is positions (first_step + s)·K … of the stream
    ``Generator(Philox(key=[seed, first_index + n]))``: the same numbers,
    computed from the counter instead of drawn in order.
    """
    if _kernels is None:
        raise RuntimeError("neurons._kernels is not built; draw the streams with numpy "
                           "(networks.noise.sample_stream)")
    _kernels.uniforms(out, int(seed), int(first_index), int(first_step))
