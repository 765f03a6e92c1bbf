"""Mathematics of the Poisson latent neuron (design §1), as pure numpy functions.

Every backend (the reference simulator, the Lava ProcessModels, Brian2's
generated code, the snntorch neuron at temperature 0) runs these same
functions or the scalar C code of ``neurons/recipe.h`` (whose constants this
module reads at import), so that the same membrane potentials and the same
uniforms give the same spike counts everywhere, to the contract of design §2.1
(see ``EXP_ULP_TOLERANCE`` and its neighbours below).

Units: ``u`` is a membrane potential in log-rate units (rate = exp(u) spikes
per inference step); counts are spikes per step; ``xi`` are uniforms in (0, 1).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
from scipy.special import gammaln

RECIPE_HEADER = Path(__file__).with_name("recipe.h")
"""The C header that is the one home of the recipe's constants and scalar code (design §2.1)."""

_DEFINE = re.compile(r"^#define\s+IPVAE_([A-Z0-9_]+)\s+\(?\s*([-+0-9.eE]+)\s*\)?", re.M)


def recipe_constants(path=RECIPE_HEADER) -> dict:
    """The ``#define IPVAE_<NAME> <float>`` constants of the recipe header, as {NAME: float}."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ImportError(f"the recipe header {path} cannot be read: {err}") from err
    return {name: float(value) for name, value in _DEFINE.findall(text)}


def _constant(name: str) -> float:
    try:
        return _RECIPE[name]
    except KeyError:
        raise ImportError(f"{RECIPE_HEADER} defines no IPVAE_{name}") from None


_RECIPE = recipe_constants()

U_FLOOR = _constant("U_FLOOR")
"""Hard floor applied to both du and u before the upper soft clamp (−8)."""

ICDF_START_SIGMAS = _constant("ICDF_START_SIGMAS")
"""The inverse CDF starts summing this many standard deviations below the rate (10).

The Poisson lower tail there is below exp(-50) ~ 2e-22, far under float64
rounding of the CDF, so ignoring it changes no count."""

ICDF_CAP_SIGMAS = _constant("ICDF_CAP_SIGMAS")
ICDF_CAP_EXTRA = _constant("ICDF_CAP_EXTRA")
"""The search stops at rate + 20 sqrt(rate) + 30 (upper-tail mass < 1e-40).

This bounds the loop when rounding leaves the summed CDF a hair under a
uniform that lies within 1e-16 of 1."""

# ---- the numerical contract between implementations (design §2.1) -------------------------
# exp differs across implementations (glibc's libm, libmvec, numpy's own AVX-512 code), so
# backends agree to these bounds, not bit for bit; tests compare each against exact values.

EXP_ULP_TOLERANCE = 4
"""Rates e^u lie within this many ulp of the correctly rounded exp(u).

Measured against mpmath: glibc's libm ≤ 1 ulp, libmvec's AVX2 and AVX-512 exp ≤ 3 ulp; numpy's
AVX-512 exp documents a maximal error of 2.52 ulp (≤ 3 from the correctly rounded value)."""

POTENTIAL_TOLERANCE = 2.0**-46
"""Potentials after ``membrane_update`` lie within this (≈ 1.4e-14, 8 ulp of a potential in
[8, 16)) of the exact clamp(u + clamp(fl(η(fb − b)), c_du), c_u); measured ≤ 1.5 ulp of 8."""


def count_flip_tolerance(rate):
    """δ(r) = 2^-52 · (16 + 8 r · max(1, ln r)): a bound on the rounding of the recipe's CDF.

    Two implementations of the recipe may return different counts k and k + 1 for one
    (ξ, u) only where |ξ − F(k; r)| ≤ δ(r), F the exact Poisson CDF at the exact rate
    (design §2.1).  Below r = 100 the summed CDF errs by ≤ 2 ulp (measured against
    mpmath) and a rate within ``EXP_ULP_TOLERANCE`` ulp moves it by ≤ 4 r·pmf ulp; above,
    the start's pmf is exp of an argument of size ≈ r ln r whose roundings (log, product,
    two differences, lgamma: scipy's and glibc's differ by ~1.5 ulp) add up to ~3.5 ulp of
    r ln r, measured up to 0.8 r ln r ulp.  ``rate``: array_like, ≥ 0.
    """
    r = np.asarray(rate, dtype=np.float64)
    return 2.0**-52 * (16.0 + 8.0 * r * np.maximum(1.0, np.log(np.maximum(r, 1.0))))

def softplus(x):
    """log(1 + e^x), overflow-free."""
    return np.logaddexp(0.0, x)


def softclamp_upper(x, c):
    """Smooth ceiling: c − softplus(c − x); ≈ x well below c, → c from below."""
    return c - softplus(c - x)


def clamp(x, c):
    """The authors' clamp: hard floor at −8, then the upper soft clamp at c."""
    return softclamp_upper(np.maximum(x, U_FLOOR), c)


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
    the loop short (≤ ~20 σ terms).  Vectorised in blocks of terms over the
    shrinking set of unfinished entries (see ``_continue_search``).
    """
    xi = np.asarray(xi, dtype=np.float64)
    r = np.asarray(rate, dtype=np.float64)
    if xi.shape != r.shape:
        xi, r = np.broadcast_arrays(xi, r)
    shape = xi.shape
    x = xi.reshape(-1)
    r = r.reshape(-1)
    # Below r = 100 the start is m = 0, where the general formula reduces
    # exactly to p = e^{-r}; only larger rates pay for log and lgamma.
    m = np.zeros(r.shape)
    p = np.exp(-r)
    big = r > ICDF_START_SIGMAS ** 2
    if big.any():
        big = np.flatnonzero(big)
        rb = r[big]
        mb = np.floor(np.maximum(rb - ICDF_START_SIGMAS * np.sqrt(rb), 0.0))
        m[big] = mb
        p[big] = np.exp(np.where(mb > 0, mb * np.log(rb), 0.0) - rb - gammaln(mb + 1.0))
    todo = np.flatnonzero(p < x)
    if todo.size:
        m[todo] = _continue_search(m[todo], p[todo], r[todo], x[todo])
    return m.astype(np.int64).reshape(shape)


_ROW_LOOP_ABOVE = 2000
_SCALAR_BELOW = 160


def _scalar_search(m, p, r, x):
    """The recipe's loop for one entry, on Python floats."""
    cap = r + ICDF_CAP_SIGMAS * math.sqrt(r) + ICDF_CAP_EXTRA
    cdf = p
    while cdf < x and m < cap:
        m += 1.0
        p *= r / m
        cdf += p
    return m


def _continue_search(m, p, r, x, first_width=8, max_width=4096):
    """Run the sequential search ``m += 1; p *= r/m; F += p`` until F ≥ x or m ≥ cap.

    m, p, r, x : (n,) start counts, pmf at m (= F, as the search starts at its
    first term), rates, uniforms.  Returns the final counts (n,).

    Advances all unfinished entries a block of terms at a time, laid out
    (width, n): by a vector op per term when many entries remain, else by
    ``cumprod``/``cumsum`` down axis 0.  Both accumulate sequentially, seeded
    with the current p and F, so the block reproduces the scalar loop bit for
    bit; only the number of Python-level rounds changes.  After a first short
    block (which finishes the low-rate majority), the width follows the
    remaining entries' rates (to ~r + 5√r, at most 4× their mean), so few
    rounds run and little of a round is wasted.
    """
    if m.size <= _SCALAR_BELOW:
        # A few searches (one input at low rates): plain Python floats do the
        # same IEEE operations (sqrt included) without numpy's per-call overhead.
        return np.array(list(map(_scalar_search, m.tolist(), p.tolist(), r.tolist(),
                                 x.tolist())))
    cap = r + ICDF_CAP_SIGMAS * np.sqrt(r) + ICDF_CAP_EXTRA
    out = np.empty_like(m)
    cdf = p
    idx = np.arange(m.size)
    width = first_width
    while idx.size:
        n = idx.size
        # Rows 1..width hold terms m+1 … m+width; row 0 seeds the accumulation.
        pp = np.empty((width + 1, n))
        ff = np.empty((width + 1, n))
        pp[0], ff[0] = p, cdf
        if n > _ROW_LOOP_ABOVE:
            mj = m.copy()
            for j in range(1, width + 1):
                mj += 1.0                                   # m + j, exact in float64
                np.divide(r, mj, out=pp[j])
                np.multiply(pp[j - 1], pp[j], out=pp[j])
                np.add(ff[j - 1], pp[j], out=ff[j])
        else:
            np.divide(r, m + np.arange(1.0, width + 1.0)[:, None], out=pp[1:])
            np.cumprod(pp, axis=0, out=pp)
            ff[1:] = pp[1:]
            np.cumsum(ff, axis=0, out=ff)
        stop = ff[1:] >= x
        # The cap can bind within this block only where m + width ≥ cap (rare).
        near = np.flatnonzero(m + width >= cap)
        if near.size:
            stop[:, near] |= (m[near] + np.arange(1.0, width + 1.0)[:, None]) >= cap[near]
        first = stop.argmax(axis=0)
        cols = np.arange(n)
        done = stop[first, cols]
        out[idx[done]] = m[done] + (first[done] + 1.0)
        m_last = m + float(width)
        going = ~done
        m, p, cdf = m_last[going], pp[-1, going], ff[-1, going]
        r, x, cap, idx = r[going], x[going], cap[going], idx[going]
        if idx.size:
            need = r + 5.0 * np.sqrt(r) + 10.0 - m
            width = int(min(need.max(), 4.0 * need.mean(), max_width))
            width = max(width, 2 * first_width)
    return out


def poisson_kl(u_post, u_prior, form: str = "exact"):
    """KL(Pois(e^{u_post}) ‖ Pois(e^{u_prior})) per neuron, in nats.

    With δ = u_post − u_prior:

    - ``"exact"``: e^{u_prior} · (1 + e^δ (δ − 1)), the true Poisson KL;
    - ``"posterior"``: e^δ times that (the authors' code: the posterior rate in
      front), which penalises rate increases harder.

    Takes numpy arrays (float64) or torch tensors (differentiable).
    """
    if form not in ("exact", "posterior"):
        raise ValueError(f"unknown KL form {form!r}; expected 'exact' or 'posterior'")
    if _is_tensor(u_post):  # the training model differentiates through this same formula
        exp = type(u_post).exp
    else:
        exp = np.exp
        u_post = np.asarray(u_post, dtype=np.float64)
        u_prior = np.asarray(u_prior, dtype=np.float64)
    delta = u_post - u_prior
    kl = exp(u_prior) * (1.0 + exp(delta) * (delta - 1.0))
    return kl if form == "exact" else exp(delta) * kl


def _is_tensor(x) -> bool:
    """True for a torch tensor, told apart without importing torch."""
    return type(x).__module__.startswith("torch")


def membrane_update(u, feedback, eta, bias, clamp_u, clamp_du):
    """One membrane step: u ← clamp_u(u + clamp_du(η · (feedback − b))).

    Parameters
    ----------
    u : (..., K) membrane potentials (log-rates) before the step.
    feedback : (..., K) the decoder-feedback current Φᵀ e_t, e_t = (x − Φ z_t)/σ².
    eta : scalar step size η; bias : (K,) leak b > 0; clamp_u, clamp_du : ceilings.

    Returns the (..., K) potentials after the step (a new array; the inputs are
    not modified).  Computed in place in one temporary, which is the same
    arithmetic as ``clamp(u + clamp(eta * (feedback - bias), clamp_du), clamp_u)``
    at a third of the memory traffic.
    """
    du = np.empty(np.broadcast_shapes(np.shape(u), np.shape(feedback), np.shape(bias)))
    np.subtract(feedback, bias, out=du)
    du *= eta
    _clamp_inplace(du, clamp_du)
    du += u
    return _clamp_inplace(du, clamp_u)


def _clamp_inplace(x, c):
    """``clamp(x, c)`` written into float64 array x."""
    np.maximum(x, U_FLOOR, out=x)
    np.subtract(c, x, out=x)
    np.logaddexp(0.0, x, out=x)
    np.subtract(c, x, out=x)
    return x


def prediction_error(x, recon, sigma2):
    """Decoder prediction error e = (x − x̂) / σ², shape (..., D)."""
    return (x - recon) / sigma2
