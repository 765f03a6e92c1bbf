"""The latent neuron's mathematics: sampler, KL, clamps (design §1-2).

Tests marked ``numerics`` run twice in CI, the second time with numpy's SIMD dispatch off
(``make test-numerics-nosimd``): they hold whichever exp numpy runs."""
import math

import numpy as np
import pytest
from scipy import stats
from scipy.special import gammaln

from neurons.poisson import (EXP_ULP_TOLERANCE, ICDF_CAP_EXTRA, ICDF_CAP_SIGMAS,
                             ICDF_START_SIGMAS, clamp, membrane_update, poisson_icdf, poisson_kl,
                             softclamp_upper)

RATES = np.geomspace(1e-3, math.exp(10), 41)


@pytest.mark.numerics
def test_icdf_equals_scipy_ppf_on_a_grid_away_from_cdf_steps():
    xi = np.linspace(0.0005, 0.9995, 400)
    r, q = np.meshgrid(RATES, xi)
    expected = stats.poisson.ppf(q, r)
    # Keep grid points more than 1e-9 from a CDF step, where rounding decides.
    lo = stats.poisson.cdf(expected - 1, r)
    hi = stats.poisson.cdf(expected, r)
    clear = (q - lo > 1e-9) & (hi - q > 1e-9)
    assert clear.mean() > 0.99
    got = poisson_icdf(q, r)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got[clear], expected[clear])


def _scalar_recipe(xi, r):
    """The docstring's scalar recipe, literally (recipe.h's), with numpy's exp and log and
    scipy's gammaln, so that it rounds as the vectorised code does on any CPU."""
    s = ICDF_START_SIGMAS
    m = math.floor(max(r - s * math.sqrt(r), 0.0))
    if r > s * s:
        p = float(np.exp((m * np.log(r) if m > 0 else 0.0) - r - gammaln(m + 1.0)))
    else:
        p = float(np.exp(-r))
    cdf, cap = p, r + ICDF_CAP_SIGMAS * math.sqrt(r) + ICDF_CAP_EXTRA
    while cdf < xi and m < cap:
        m += 1
        p *= r / m
        cdf += p
    return m


@pytest.mark.numerics
def test_vectorised_icdf_is_the_scalar_recipe_bit_for_bit():
    rng = np.random.default_rng(3)
    r = np.exp(rng.uniform(-7, 10, 3000))
    xi = rng.random(3000)
    got = poisson_icdf(xi, r)
    assert [_scalar_recipe(a, b) for a, b in zip(xi, r)] == got.tolist()


@pytest.mark.parametrize("rate", [1e-3, 0.7, 12.0, 744.0, 800.0, 5000.0, math.exp(10)])
def test_icdf_counts_pass_a_chi_square_goodness_of_fit(rate):
    rng = np.random.default_rng(int(rate * 1000) % 2**32)
    counts = poisson_icdf(rng.random(20000), rate)
    # Bins (e_{i-1}, e_i] of roughly equal Poisson probability, last one open.
    edges = np.unique(stats.poisson.ppf(np.linspace(0, 1, 21)[1:-1], rate))
    observed = np.bincount(np.searchsorted(edges, counts, side="left"),
                           minlength=len(edges) + 1)
    cdf = stats.poisson.cdf(edges, rate)
    probs = np.diff(np.concatenate([[0.0], cdf, [1.0]]))
    assert observed.sum() == 20000 and len(observed) >= 2
    result = stats.chisquare(observed, probs * observed.sum())
    assert result.pvalue > 1e-3


def test_icdf_edge_cases():
    assert poisson_icdf(0.5, 0.0) == 0
    assert poisson_icdf(0.999999, 0.0) == 0
    assert poisson_icdf(0.0, 3.0) == 0
    # ξ within rounding of 1 must still terminate, at a sane count.
    top = 1 - 2**-53
    assert 0 < poisson_icdf(top, 1e-3) < 10
    big = poisson_icdf(top, math.exp(10))
    assert math.exp(10) < big < math.exp(10) + 30 * math.sqrt(math.exp(10))
    # Broadcasting keeps shapes.
    assert poisson_icdf(np.full((3, 4), 0.5), np.ones(4)).shape == (3, 4)


def _direct_kl(rate_p, rate_q):
    m = np.arange(0, int(rate_p + rate_q + 60 * math.sqrt(rate_p + rate_q + 1)) + 60)
    lp, lq = stats.poisson.logpmf(m, rate_p), stats.poisson.logpmf(m, rate_q)
    return float(np.sum(np.exp(lp) * (lp - lq)))


@pytest.mark.parametrize("u_post,u_prior", [(-3.0, -2.0), (0.0, 1.5), (2.0, 0.5),
                                             (4.0, 4.2), (-6.0, 1.0), (1.0, 1.0)])
def test_kl_equals_the_directly_summed_poisson_kl(u_post, u_prior):
    direct = _direct_kl(math.exp(u_post), math.exp(u_prior))
    assert poisson_kl(u_post, u_prior) == pytest.approx(direct, rel=1e-8, abs=1e-12)
    assert poisson_kl(u_post, u_prior, form="posterior") == pytest.approx(
        math.exp(u_post - u_prior) * direct, rel=1e-8, abs=1e-12)
    with pytest.raises(ValueError, match="KL form"):
        poisson_kl(u_post, u_prior, form="nope")


@pytest.mark.numerics
def test_numpy_exp_meets_the_rate_contract():
    """Rates from numpy's exp (its SIMD loop or libm, whichever this CPU dispatches) lie
    within EXP_ULP_TOLERANCE ulp of the correctly rounded exp (mpmath)."""
    import mpmath

    mpmath.mp.prec = 113
    u = np.concatenate([np.linspace(-745.0, 709.0, 4001), np.linspace(-9.0, 10.0, 4001)])
    exact = np.array([float(mpmath.exp(mpmath.mpf(float(v)))) for v in u])
    got = np.exp(u)
    normal = exact >= np.finfo(np.float64).tiny  # subnormal results carry fewer bits
    ulps = np.abs(got.view(np.int64) - exact.view(np.int64))
    assert ulps[normal].max() <= EXP_ULP_TOLERANCE
    np.testing.assert_allclose(got[~normal], exact[~normal], rtol=0, atol=4 * 2.0**-1074)


@pytest.mark.numerics
def test_clamps_floor_ceiling_and_identity_below():
    x = np.array([-1e9, -20.0, -8.0, 0.0, 3.0, 9.9, 1e9])
    y = clamp(x, 10.0)
    assert np.all(np.isfinite(y))
    assert y[0] == y[1] == pytest.approx(-8.0, abs=1e-6)
    assert y[3] == pytest.approx(0.0, abs=1e-4)
    assert np.all(y <= 10.0) and y[-2] < 10.0 and y[-1] == pytest.approx(10.0)
    assert np.all(np.diff(y) >= 0)
    assert softclamp_upper(2.0, 7.0) == pytest.approx(2.0 - math.log1p(math.exp(-5.0)))


@pytest.mark.numerics
def test_membrane_update_follows_design_equation():
    u = np.array([-2.0, 0.5, 7.5])
    fb = np.array([1.0, -3.0, 1e6])
    b = np.array([0.05, 0.05, 0.05])
    got = membrane_update(u, fb, 0.5, b, 8.0, 7.0)
    du = clamp(0.5 * (fb - b), 7.0)
    np.testing.assert_array_equal(got, clamp(u + du, 8.0))
    assert got[2] < 8.0


def test_kl_on_torch_tensors_is_the_same_formula_and_differentiable():
    import torch
    u_post = torch.tensor([-3.0, 0.0, 2.0, 4.0], dtype=torch.float64, requires_grad=True)
    u_prior = torch.tensor([-2.0, 1.5, 0.5, 4.2], dtype=torch.float64)
    for form in ("exact", "posterior"):
        got = poisson_kl(u_post, u_prior, form)
        want = poisson_kl(u_post.detach().numpy(), u_prior.numpy(), form)
        np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-14)
    poisson_kl(u_post, u_prior).sum().backward()
    # d/du_post of e^{u_prior}(1 + e^δ(δ−1)) = e^{u_post}·δ
    np.testing.assert_allclose(u_post.grad.numpy(),
                               np.exp(u_post.detach().numpy()) * (u_post - u_prior).detach().numpy(),
                               rtol=1e-12)


@pytest.mark.numerics
@pytest.mark.parametrize("row_loop_above,scalar_below", [(0, 0), (10**9, 0), (10**9, 10**9)])
def test_every_vectorisation_path_gives_the_same_counts(monkeypatch, row_loop_above, scalar_below):
    """Row loop, cumprod blocks and the plain-float loop are the same recipe bit for bit."""
    import neurons.poisson as P

    rng = np.random.default_rng(11)
    r = np.exp(rng.uniform(-7, 10, 4000))
    xi = rng.random(4000)
    xi[:5] = 1 - 2**-53  # searches that end at the cap
    expected = P.poisson_icdf(xi, r)
    monkeypatch.setattr(P, "_ROW_LOOP_ABOVE", row_loop_above)
    monkeypatch.setattr(P, "_SCALAR_BELOW", scalar_below)
    np.testing.assert_array_equal(P.poisson_icdf(xi, r), expected)
    assert [_scalar_recipe(a, b) for a, b in zip(xi[:400], r[:400])] == expected[:400].tolist()
