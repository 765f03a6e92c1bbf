"""The reference simulator's per-step kernels, compiled, with a numpy fallback.

``neurons/_kernels.c`` runs the recipe of ``neurons/recipe.h`` (the inverse
CDF fused with the rate e^u, and ``membrane_update``) with the same float64
operations in the same order as :mod:`neurons.poisson`; exp and log1p come from
glibc's vector library (libmvec: AVX-512 where the CPU has it, else AVX2) where it
runs, else from scalar libm (``vector_math(False)``).  numpy's exp may be libm's or its
own SIMD code (on AVX-512), so no mode equals numpy bit for bit on every CPU; all meet the
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


def vector_math(on: bool | int | None = None) -> bool:
    """Whether exp/log1p run vectorised (libmvec); ``on`` asks for it or for scalar libm.

    ``on``: True (the widest libmvec this CPU runs), False (scalar libm), or the lanes per
    call, 4 (AVX2) or 8 (AVX-512; falls back to 4 where the CPU or glibc lacks it).
    """
    return vector_lanes(on) > 0


def vector_lanes(on: bool | int | None = None) -> int:
    """Doubles per libmvec call in use: 8 (AVX-512), 4 (AVX2), 0 (scalar libm, or no kernels).

    ``on`` as for :func:`vector_math`.
    """
    if _kernels is None:
        return 0
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


CACHE_LINE = 64  # bytes


def row_table(m) -> np.ndarray:
    """A copy of the 2-D table ``m`` (rows, columns) laid out for the event-driven sums:
    each row starts on a cache line and rows lie an odd number of lines apart.

    The sums read the rows of the neurons that fired, in no order a prefetcher follows.
    Rows a power of two of bytes apart (K = 512: 4 KiB) all fall in the same few sets of
    the caches, so a slice of W cannot stay in cache while a group of inputs reads it, and
    rows that start mid-line make every other 32-byte load straddle two lines.  The
    result is a view of the first ``columns`` of a padded array (the padding is zeros):
    the same numbers, rows ``strides[0]`` bytes apart, accepted wherever a C-contiguous
    table is.
    """
    m = np.asarray(m, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"row_table needs a 2-D array, got shape {m.shape}")
    rows, cols = m.shape
    per_line = CACHE_LINE // 8
    lines = max(1, -(-cols // per_line))
    lines += 1 - lines % 2  # odd
    ld = lines * per_line
    raw = np.zeros(rows * ld + per_line)
    start = (-raw.ctypes.data % CACHE_LINE) // 8
    table = raw[start:start + rows * ld].reshape(rows, ld)
    table[:, :cols] = m
    return table[:, :cols]


def readout(z, phi_t, out):
    """out ← z @ phi_t summed over the nonzero counts only (event-driven).

    z (N, K) counts, phi_t = Φᵀ (K, D), out (N, D): float64, C-contiguous (phi_t's
    rows may lie further apart, as :func:`row_table` lays them out).  Costs
    D multiply-adds per nonzero count, against N·K·D for the dense product, and
    sums in order of k, so it agrees with BLAS to rounding.
    """
    if _kernels is None:
        np.matmul(z, phi_t, out=out)
        return
    _kernels.readout(z, phi_t, out)


def step(u, xi, u_next, z, rate, drive, w_rows, xphi, gram, norms, xsq, phi_t, x, recon, bias,
         mse, zeros, mean_rate, dense, seed, index0, t, eta, clamp_u, clamp_du,
         max_sparse) -> int:
    """One inference step (design §1.1) of a row block of n inputs, fused.

    Float64 C-contiguous (``w_rows``, ``gram`` and ``phi_t`` may be :func:`row_table`
    views); n inputs, K latents, D pixels.  The rows are computed independently, in groups
    that share each pass over a slice of W's (and Φᵀ's) columns.  Per row: the uniforms ξ
    (``xi`` (n, K), or when None the shared streams of design §2.2 for samples
    index0 + row at step ``t``, computed in place), ``rate`` (n, K) ← e^u and ``z``
    (n, K) ← the counts of :func:`spikes` (bit for bit), ``zeros`` (n,) the share of
    zero counts and ``mean_rate`` (n,) the mean of e^u (summed in four fixed lanes).
    A row with at most ``max_sparse`` nonzero counts then takes the event-driven
    feedback ``drive`` (n, K) + Σ_j z_j ``w_rows``[j] (as :func:`readout` + drive) and
    ``u_next`` ← :func:`membrane`; ``mse`` (n,) ← ‖x − Φz‖²/D from the folded
    quantities ``xsq`` (n,) ‖x‖², ``xphi`` (n, K) Φᵀx, ``gram`` (K, K) ΦᵀΦ and ``norms``
    (K,) ‖φ_k‖ (O(nnz²) work; from the read-out when a rounding bound exceeds 2⁻³¹ of
    the value, so within 4.7e-10 relative); ``recon`` (n, D) ← Φz unless None.  Rows
    with more nonzero counts (all rows when ``w_rows`` is None) are listed in ``dense``
    (n,) int64 and their u_next, mse and recon left to the caller.  Returns how many.
    """
    return _kernels.step(u, xi, u_next, z, rate, drive, w_rows, xphi, gram, norms, xsq, phi_t,
                         x, recon, bias, mse, zeros, mean_rate, dense, int(seed), int(index0),
                         int(t), float(eta), float(clamp_u), float(clamp_du), int(max_sparse))


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
