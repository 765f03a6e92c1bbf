"""The latent neuron's per-step element-wise work, compiled and split across cores.

``neurons/_kernels.c`` transcribes ``poisson_icdf`` (fused with the rate e^u)
and ``membrane_update`` of :mod:`neurons.poisson` literally, with the same
float64 operations in the same order, so it returns the very same counts and
potentials (the tests check this bit for bit).  It is built by ``pip install``
(``setup.py``); where it could not be built, :func:`spikes` and
:func:`membrane` fall back to the numpy functions, which give the same
numbers, only slower.

The C loops release the GIL, so callers may run independent rows in threads.
"""
from __future__ import annotations

import numpy as np

from neurons.poisson import membrane_update, poisson_icdf

try:
    from neurons import _kernels
except ImportError:  # built without a C compiler: the numpy path gives the same numbers
    _kernels = None


def compiled() -> bool:
    """True when the compiled kernels are in use (False: the numpy fallback)."""
    return _kernels is not None


def spikes(u, xi, rate_out, counts_out):
    """rate_out ← e^u; counts_out ← poisson_icdf(xi, rate_out) as float64.

    u, xi : (N, K) float64 C-contiguous potentials and uniforms.
    rate_out, counts_out : (N, K) float64 C-contiguous arrays, written in place.
    """
    if _kernels is None:
        np.exp(u, out=rate_out)
        counts_out[...] = poisson_icdf(xi, rate_out)
        return
    _kernels.spikes(u, xi, rate_out, counts_out)


def membrane(u, feedback, eta, bias, clamp_u, clamp_du, out):
    """out ← membrane_update(u, feedback, eta, bias, clamp_u, clamp_du).

    u, feedback, out : (N, K) float64 C-contiguous; bias (K,); out written in place.
    """
    if _kernels is None:
        out[...] = membrane_update(u, feedback, eta, bias, clamp_u, clamp_du)
        return
    _kernels.membrane(u, feedback, np.ascontiguousarray(bias, dtype=np.float64), out,
                      float(eta), float(clamp_u), float(clamp_du))
