"""Mathematics of the Poisson latent neuron (DESIGN.md §1), as pure numpy functions.

Every backend (the reference simulator, the Lava ProcessModels, Brian2's
generated code, the snntorch neuron at temperature 0) runs these same
functions or a literal transcription of them, so that the same membrane
potentials and the same uniforms give the same spike counts everywhere.

Units: ``u`` is a membrane potential in log-rate units (rate = exp(u) spikes
per inference step); counts are spikes per step; ``xi`` are uniforms in (0, 1).
"""
from __future__ import annotations

import numpy as np
from scipy.special import gammaln

U_FLOOR = -8.0
"""Hard floor applied to both du and u before the upper soft clamp."""

ICDF_START_SIGMAS = 10.0
"""The inverse CDF starts summing this many standard deviations below the rate.

The Poisson lower tail there is below exp(-50) ~ 2e-22, far under float64
rounding of the CDF, so ignoring it changes no count."""

ICDF_CAP_SIGMAS = 20.0
ICDF_CAP_EXTRA = 30.0
"""The search stops at rate + 20 sqrt(rate) + 30 (upper-tail mass < 1e-40).

This bounds the loop when rounding leaves the summed CDF a hair under a
uniform that lies within 1e-16 of 1."""


def softplus(x):
    """log(1 + e^x), overflow-free."""
    return np.logaddexp(0.0, x)


def softclamp_upper(x, c):
    """Smooth ceiling: c − softplus(c − x); ≈ x well below c, → c from below."""
    return c - softplus(c - x)


def clamp(x, c):
    """The authors' clamp: hard floor at −8, then the upper soft clamp at c."""
    return softclamp_upper(np.maximum(x, U_FLOOR), c)


def rate(u):
    """Firing rate exp(u) in spikes per step; u is a log-rate."""
    return np.exp(u)


def poisson_icdf(xi, rate):
    """Poisson inverse CDF: the least m ≥ 0 with P(Z ≤ m; rate) ≥ xi.

    Parameters
    ----------
    xi : array_like, uniforms in [0, 1); broadcast against ``rate``.
    rate : array_like, rates ≥ 0 (spikes per step), exact up to e^10 ≈ 22,026.

    Returns
    -------
    ndarray of int64 counts, the broadcast shape.

    The algorithm (one float64 recipe, transcribed literally in every
    backend)::

        m = floor(max(r − 10·sqrt(r), 0))                 # start below the bulk
        p = exp((m > 0 ? m·log r : 0) − r − lgamma(m + 1))  # pmf at m
        F = p
        while F < xi and m < r + 20·sqrt(r) + 30:
            m += 1;  p *= r / m;  F += p
        return m

    Starting at 0 with p = e^{−r} (the textbook search) underflows past
    r ≈ 745; starting 10 σ below the rate keeps every term representable and
    the loop short (≤ ~20 σ terms).  Vectorised by shrinking the set of
    unfinished entries each iteration, so the cost is ~ the number of spikes.
    """
    xi = np.asarray(xi, dtype=np.float64)
    r = np.asarray(rate, dtype=np.float64)
    xi, r = np.broadcast_arrays(xi, r)
    shape = xi.shape
    x = xi.ravel()
    r = r.ravel()
    m = np.floor(np.maximum(r - ICDF_START_SIGMAS * np.sqrt(r), 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        m_log_r = np.where(m > 0, m * np.log(r), 0.0)
    p = np.exp(m_log_r - r - gammaln(m + 1.0))
    cdf = p.copy()
    cap = r + ICDF_CAP_SIGMAS * np.sqrt(r) + ICDF_CAP_EXTRA
    todo = np.flatnonzero(cdf < x)
    while todo.size:
        mt = m[todo] + 1.0
        rt = r[todo]
        pt = p[todo] * (rt / mt)
        ft = cdf[todo] + pt
        m[todo], p[todo], cdf[todo] = mt, pt, ft
        todo = todo[(ft < x[todo]) & (mt < cap[todo])]
    return m.astype(np.int64).reshape(shape)


def poisson_kl(u_post, u_prior, form: str = "exact"):
    """KL(Pois(e^{u_post}) ‖ Pois(e^{u_prior})) per neuron, in nats.

    With δ = u_post − u_prior:

    - ``"exact"``: e^{u_prior} · (1 + e^δ (δ − 1)), the true Poisson KL;
    - ``"posterior"``: e^δ times that (the authors' code: the posterior rate in
      front), which penalises rate increases harder.
    """
    u_post = np.asarray(u_post, dtype=np.float64)
    u_prior = np.asarray(u_prior, dtype=np.float64)
    delta = u_post - u_prior
    kl = np.exp(u_prior) * (1.0 + np.exp(delta) * (delta - 1.0))
    if form == "exact":
        return kl
    if form == "posterior":
        return np.exp(delta) * kl
    raise ValueError(f"unknown KL form {form!r}; expected 'exact' or 'posterior'")


def membrane_update(u, feedback, eta, bias, clamp_u, clamp_du):
    """One membrane step: u ← clamp_u(u + clamp_du(η · (feedback − b))).

    Parameters
    ----------
    u : (..., K) membrane potentials (log-rates) before the step.
    feedback : (..., K) the decoder-feedback current Φᵀ e_t, e_t = (x − Φ z_t)/σ².
    eta : scalar step size η; bias : (K,) leak b > 0; clamp_u, clamp_du : ceilings.

    Returns the (..., K) potentials after the step.
    """
    du = eta * (feedback - bias)
    return clamp(u + clamp(du, clamp_du), clamp_u)


def prediction_error(x, recon, sigma2):
    """Decoder prediction error e = (x − x̂) / σ², shape (..., D)."""
    return (x - recon) / sigma2
