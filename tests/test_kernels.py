"""The compiled kernels against the contract of design §2.1, in both math modes (scalar libm and
libmvec): rates within EXP_ULP_TOLERANCE ulp of the correctly rounded exp, potentials within
POTENTIAL_TOLERANCE of the exact update, counts equal to the recipe except where ξ lies within
rounding of a CDF step (checked in extended precision).  Exact references come from mpmath,
never from numpy's exp (which differs across CPUs).  Then the event-driven read-out, the
counter-based noise, and row blocks in threads."""
import os
import subprocess
import sys

import mpmath
import numpy as np
import pytest
from conftest import require
from scipy.special import gammaln
from test_recipe import exact_cdf, exact_clamp

from networks import planted_inputs, planted_network, reference
from networks.noise import sample_stream
from neurons import kernels
from neurons.poisson import (EXP_ULP_TOLERANCE, ICDF_START_SIGMAS, POTENTIAL_TOLERANCE,
                             count_flip_tolerance, membrane_update, poisson_icdf)

mpmath.mp.prec = 113


@pytest.fixture(autouse=True)
def compiled_kernels():
    """Every test here checks the compiled module; under CI=true it must have been built."""
    require("neurons._kernels")
    yield
    kernels.vector_math(True)


MATH_MODES = {"scalar-libm": 0, "libmvec-avx2": 4, "libmvec-widest": 8}
"""The math modes: lanes per libmvec call asked for (where this machine lacks AVX-512,
"libmvec-widest" runs AVX2 again; without libmvec both run scalar libm)."""


@pytest.fixture(params=list(MATH_MODES.values()), ids=list(MATH_MODES))
def math_mode(request):
    """Run the test with scalar libm and with each libmvec width this machine has."""
    return kernels.vector_lanes(request.param)


def correctly_rounded_exp(u):
    """exp of every float64 in u, correctly rounded to float64 (mpmath at 113 bits)."""
    return np.array([float(mpmath.exp(mpmath.mpf(float(v)))) for v in np.ravel(u)]).reshape(
        np.shape(u))


def ulp_distance(a, b):
    """|a − b| in units in the last place, for finite float64 of one sign (or zero)."""
    return np.abs(np.asarray(a, np.float64).view(np.int64) - np.asarray(b, np.float64).view(np.int64))


def recipe_cdf(k, r):
    """The recipe's own summed CDF at count k ≥ its start, rate r (Python floats, numpy's exp)."""
    if r > ICDF_START_SIGMAS**2:  # the recipe's far start (neurons.poisson.poisson_icdf)
        m = float(np.floor(max(r - ICDF_START_SIGMAS * np.sqrt(r), 0.0)))
        p = float(np.exp((m * np.log(r) if m > 0 else 0.0) - r - gammaln(m + 1.0)))
    else:
        m, p = 0.0, float(np.exp(-r))
    cdf = p
    while m < k:
        m += 1.0
        p *= r / m
        cdf += p
    return cdf


def check_flips(got, want, xi, rate, what):
    """Where counts differ: by one, and ξ within count_flip_tolerance of the exact CDF step.
    Returns the number of flips."""
    flips = np.flatnonzero(got != want)
    for j in flips:
        k = int(min(got[j], want[j]))
        assert abs(got[j] - want[j]) == 1, (what, j, got[j], want[j])
        gap = abs(mpmath.mpf(float(xi[j])) - exact_cdf(k, rate[j]))
        assert gap <= count_flip_tolerance(rate[j]), (what, xi[j], rate[j], k, float(gap))
    return len(flips)


def _spike_inputs():
    rng = np.random.default_rng(0)
    u = np.concatenate([np.linspace(-9.0, 10.0, 20001), [-np.inf, 0.0, np.log(100.0),
                                                          np.nextafter(np.log(100.0), 99)]])
    xi = rng.random(u.shape)
    xi[:50] = np.nextafter(1.0, 0.0)    # the cap must stop the search
    xi[50:100] = 0.0
    return u, xi


@pytest.fixture(scope="module")
def exact_rates():
    u, _ = _spike_inputs()
    return correctly_rounded_exp(u)


@pytest.mark.numerics
def test_rates_are_within_the_ulp_contract_of_exact_exp(math_mode, exact_rates):
    u, xi = _spike_inputs()
    rate, counts = np.empty_like(u), np.empty_like(u)
    fired = kernels.spikes(u, xi, rate, counts)
    assert fired == np.count_nonzero(counts)
    assert ulp_distance(rate, exact_rates).max() <= EXP_ULP_TOLERANCE
    assert rate[-4] == 0.0 and counts[-4] == 0  # u = -inf: rate 0


@pytest.mark.numerics
def test_counts_are_the_recipe_at_exact_rates_up_to_rounding_at_a_step(math_mode, exact_rates):
    u, xi = _spike_inputs()
    rate, counts = np.empty_like(u), np.empty_like(u)
    kernels.spikes(u, xi, rate, counts)
    flips = check_flips(counts, poisson_icdf(xi, exact_rates), xi, exact_rates, "random ξ")
    assert flips <= 1  # a flip needs ξ within ~1e-15 of a step (measured: none in 20,005)


@pytest.mark.numerics
def test_counts_on_cdf_steps_flip_only_within_rounding(math_mode):
    """ξ placed exactly on the recipe's summed CDF at a step: the worst case for agreement.
    Flips there are allowed (and happen), each within count_flip_tolerance of the exact step."""
    rng = np.random.default_rng(5)
    u = np.concatenate([rng.uniform(-3.0, 4.6, 600), rng.uniform(4.6, 10.0, 150)])
    r_exact = correctly_rounded_exp(u)
    k = poisson_icdf(rng.random(u.size), r_exact)
    xi = np.array([recipe_cdf(max(kk - 1, 0), rr) for kk, rr in zip(k, r_exact)])
    xi = np.minimum(xi, np.nextafter(1.0, 0.0))
    rate, counts = np.empty_like(u), np.empty_like(u)
    kernels.spikes(u, xi, rate, counts)
    flips = check_flips(counts, poisson_icdf(xi, r_exact), xi, r_exact, "ξ on a step")
    assert flips < u.size / 2  # most still agree: ties resolve alike unless rounding differs


@pytest.mark.numerics
def test_the_kernels_own_simd_loops_give_their_scalar_code_bit_for_bit(math_mode, membrane_case):
    """The inverse CDF's scan and four-lane search, the membrane's passes and the
    event-driven sums, in AVX2 (and AVX-512 where the CPU has it) and in scalar code: the same
    counts, potentials and sums, NaN included, ξ on the CDF steps of the rates the kernel
    computed, far rates and the cap; the sums over 37 columns cover the 32-wide loops and
    their tails."""
    from neurons import _kernels

    if not _kernels.own_simd(None):
        pytest.skip("this CPU has no AVX2: only the scalar code runs here")
    u, xi = _spike_inputs()
    u, xi = np.concatenate([u, [np.nan, 0.5, 2.0]]), np.concatenate([xi, [0.5, np.nan, 0.9]])
    rate = np.empty_like(u)
    kernels.spikes(u, xi, rate, np.empty_like(u))
    near = np.flatnonzero((rate > 0.05) & (rate < 16.0))[::40]
    on_step = np.array([recipe_cdf(1 + j % 3, rate[j]) for j in near])
    u, xi = np.concatenate([u, u[near]]), np.concatenate([xi, np.minimum(on_step, 0.999)])
    uu, fb, eta, bias, cu, cdu, _ = membrane_case
    table = kernels.row_table(np.random.default_rng(3).standard_normal((uu.shape[1], 37)))
    levels = sorted({_kernels.own_simd(8), 4, 0}, reverse=True)  # 8 where AVX-512 runs
    got = []
    try:
        for lanes in levels:
            assert _kernels.own_simd(lanes) == lanes
            rate, counts, u_next = np.empty_like(u), np.empty_like(u), np.empty_like(uu)
            fired = kernels.spikes(u, xi, rate, counts)
            kernels.membrane(uu, fb, eta, bias, cu, cdu, u_next)
            read = np.empty((len(uu), 37))
            kernels.readout(np.round(np.exp(uu)), table, read)
            got.append((fired, rate, counts, u_next, read))
    finally:
        _kernels.own_simd(True)
    scalar = got[-1]
    for simd in got[:-1]:
        assert simd[0] == scalar[0]
        for a, b in zip(simd[1:], scalar[1:]):
            np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def membrane_case():
    """(u, fb, eta, bias, c_u, c_du, exact): inputs over every regime, and the exact update."""
    rng = np.random.default_rng(1)
    k = 31
    u = rng.uniform(-9, 9, (60, k))
    fb = rng.standard_normal((60, k)) * rng.choice([0.01, 1, 30, 1e6], (60, k))
    bias = rng.uniform(0.01, 1, k)
    eta, cu, cdu = 0.7, 8.0, 7.0
    exact = np.empty_like(u)
    for i, j in np.ndindex(u.shape):
        du = exact_clamp(float((fb[i, j] - bias[j]) * eta), cdu)
        exact[i, j] = float(exact_clamp(mpmath.mpf(u[i, j]) + du, cu))
    return u, fb, eta, bias, cu, cdu, exact


@pytest.mark.numerics
@pytest.mark.parametrize("mode", ["numpy", *MATH_MODES])
def test_potentials_are_within_the_contract_of_the_exact_update(mode, membrane_case):
    u, fb, eta, bias, cu, cdu, exact = membrane_case
    if mode == "numpy":
        out = membrane_update(u, fb, eta, bias, cu, cdu)
    else:
        kernels.vector_lanes(MATH_MODES[mode])
        out = np.empty_like(u)
        kernels.membrane(u, fb, eta, bias, cu, cdu, out)
    np.testing.assert_allclose(out, exact, rtol=0, atol=POTENTIAL_TOLERANCE)


def test_membrane_propagates_nan_and_keeps_infinities_finite(math_mode):
    u = np.zeros((1, 4))
    fb = np.array([[np.nan, np.inf, -np.inf, 0.0]])  # numpy warns on the NaN; C stays silent
    out = np.empty_like(u)
    kernels.membrane(u, fb, 0.7, np.full(4, 0.1), 8.0, 7.0, out)
    assert np.isnan(out[0, 0]) and np.isfinite(out[0, 1:]).all()


@pytest.mark.numerics
def test_numpy_takes_the_simd_path_asked_for():
    """NPY_DISABLE_CPU_FEATURES (make test-numerics-nosimd) turns numpy's dispatched loops off."""
    from numpy.core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    asked = os.environ.get("NPY_DISABLE_CPU_FEATURES", "").replace(",", " ").split()
    assert not any(__cpu_features__[f] for f in asked), asked
    present = [f for f in __cpu_dispatch__ if __cpu_features__.get(f)]
    child = ("import sys; from numpy.core._multiarray_umath import __cpu_features__ as f; "
             "sys.exit(any(f[k] for k in sys.argv[1:]))")
    env = dict(os.environ, NPY_DISABLE_CPU_FEATURES=" ".join(present))
    assert subprocess.run([sys.executable, "-c", child, *present], env=env).returncode == 0


def test_readout_sums_the_fired_columns_only():
    rng = np.random.default_rng(2)
    z = rng.poisson(0.05, (40, 33)).astype(float)
    z[3] = 0.0  # a silent input reads out zeros
    phi_t = rng.standard_normal((33, 21))
    out = np.full((40, 21), np.nan)
    kernels.readout(z, phi_t, out)
    np.testing.assert_allclose(out, z @ phi_t, rtol=0, atol=1e-13)
    assert np.all(out[3] == 0.0)
    with pytest.raises(ValueError, match=r"phi_t \(K, D\)"):
        kernels.readout(z, phi_t[:-1], out)


@pytest.mark.parametrize("shape", [(512, 512), (33, 21), (7, 784), (1, 1)])
def test_row_table_aligns_rows_an_odd_number_of_cache_lines_apart(shape):
    m = np.random.default_rng(5).standard_normal(shape)
    table = kernels.row_table(m)
    np.testing.assert_array_equal(table, m)
    assert table.ctypes.data % kernels.CACHE_LINE == 0
    lines, rest = divmod(table.strides[0], kernels.CACHE_LINE)
    assert rest == 0 and lines % 2 == 1 and table.strides[1] == 8
    with pytest.raises(ValueError, match="2-D"):
        kernels.row_table(m.ravel())


def test_sums_over_a_row_table_equal_the_contiguous_ones_bit_for_bit():
    """The step and the read-out read the same numbers from a padded table as from a
    C-contiguous one (only where the rows lie changes), and refuse a table whose rows are
    not contiguous."""
    net, _, _ = planted_network(61, 83, 5, seed=0, n_inputs=1)  # neither a multiple of 4 or 32
    x, _ = planted_inputs(net, 40, 5, seed=2)
    folded = reference.folded_weights(net)
    kern = reference.FloatKernels(net, 0, 0, None, 8, x=x, folded=folded)
    u = reference.run(net, x, 6, record=[5]).u[0]
    n, k, d = len(x), net.n_latents, net.input_dim
    results = []
    for layout in (np.ascontiguousarray, kernels.row_table):
        w, gram, phi_t = (layout(a) for a in (folded.w_rows, folded.gram, net.phi.T))
        out = [np.full((n, k), np.nan), np.empty((n, k)), np.empty((n, k)),
               np.full((n, d), np.nan), np.empty(n), np.empty(n), np.empty(n)]
        u_next, z, rate, recon, mse, zeros, mean = out
        dense = np.empty(n, dtype=np.int64)
        n_dense = kernels.step(u, None, u_next, z, rate, kern.drive, w, kern.xphi, gram,
                               folded.norms, kern.xsq, phi_t, x, recon, net.bias, mse, zeros,
                               mean, dense, 0, 0, 5, net.eta, net.clamp_u, net.clamp_du, k)
        assert n_dense == 0
        read = np.empty((n, d))
        kernels.readout(z, phi_t, read)
        results.append(out + [read])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    z = results[0][1]
    bound = 2 * k * np.finfo(float).eps * (np.abs(z) @ np.abs(net.phi.T))  # a k-term sum's rounding
    assert np.all(np.abs(results[0][3] - z @ net.phi.T) <= bound)
    assert np.count_nonzero(z) > 0
    with pytest.raises(ValueError, match="rows are each contiguous"):
        kernels.readout(results[0][1], np.asfortranarray(net.phi.T), np.empty((n, d)))
    shifted = np.empty((n + 1, k))
    shifted[:-1] = u
    for u_in, u_out in ((u, u), (shifted[:-1], shifted[1:])):  # the same array; one row apart
        with pytest.raises(ValueError, match="u_next must not overlap u"):
            kernels.step(u_in, None, u_out, z, rate, kern.drive, w, kern.xphi, gram,
                         folded.norms, kern.xsq, phi_t, x, None, net.bias, mse, zeros, mean,
                         dense, 0, 0, 5, net.eta, net.clamp_u, net.clamp_du, k)


def test_uniforms_are_numpys_philox_streams_bit_for_bit():
    for seed, first, step0, steps, n, k in [(0, 0, 0, 5, 3, 7), (12345, 2**62 + 5, 3, 4, 2, 513),
                                            (7, 99, 11, 2, 4, 1), (2**63 - 1, 5, 1, 3, 2, 6)]:
        out = np.empty((steps, n, k))
        kernels.uniforms(out, seed, first, step0)
        for i in range(n):
            g = sample_stream(seed, first + i)
            g.random(step0 * k)  # the positions before first_step
            np.testing.assert_array_equal(out[:, i], g.random((steps, k)))


def test_bad_buffers_raise_a_clear_error():
    from neurons import _kernels

    a = np.zeros(8)
    with pytest.raises(ValueError, match="float64"):
        _kernels.spikes(a, a, a, np.zeros(8, dtype=np.float32))
    with pytest.raises(ValueError, match="equal length"):
        _kernels.spikes(a, a, a, np.zeros(9))
    with pytest.raises(ValueError, match="bias length"):
        _kernels.membrane(a, a, np.zeros(3), np.zeros(8), 1.0, 8.0, 7.0)
    frozen = np.zeros(8)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        _kernels.spikes(a, a, a, frozen)
    with pytest.raises(ValueError, match="contiguous"):
        _kernels.spikes(a, a, a, np.zeros(16)[::2])
    with pytest.raises(ValueError, match=r"\(steps, N, K\)"):
        _kernels.uniforms(np.zeros((2, 3)), 0, 0, 0)
    with pytest.raises(TypeError, match="4 arguments"):
        _kernels.uniforms(np.zeros((2, 3, 1)), 0, 0)


def test_row_blocks_threads_readout_and_fallbacks_give_the_same_trace(monkeypatch):
    net, _, _ = planted_network(64, 128, 5, seed=0, n_inputs=1)
    x, _ = planted_inputs(net, 200, 5, seed=2)
    assert len(reference.row_blocks(200, 128, 3)) == 4
    one = reference.run(net, x, 25, seed=4, threads=1)
    assert 0 < np.count_nonzero(one.spikes) <= reference.SPARSE_READOUT * one.spikes.size

    def same(other, what):
        # BLAS may round a product of a row block differently from the whole batch's
        # (other blocking), so potentials agree to rounding and counts exactly.
        np.testing.assert_array_equal(other.spikes, one.spikes, err_msg=what)
        for name in ("u", "recon", "step_mse", "step_rate"):
            np.testing.assert_allclose(getattr(other, name), getattr(one, name), rtol=0,
                                       atol=1e-12, err_msg=f"{what}: {name}")

    same(reference.run(net, x, 25, seed=4, threads=3), "3 threads")
    monkeypatch.setattr(reference, "SPARSE_READOUT", -1.0)
    same(reference.run(net, x, 25, seed=4, threads=1), "dense read-out")
    monkeypatch.setattr(reference, "SPARSE_READOUT", 0.2)
    kernels.vector_math(False)
    same(reference.run(net, x, 25, seed=4, threads=1), "scalar libm")
    monkeypatch.setattr(kernels, "_kernels", None)
    assert not kernels.compiled() and not kernels.vector_math()
    same(reference.run(net, x, 25, seed=4, threads=1), "numpy fallback")
    with pytest.raises(RuntimeError, match="not built"):
        kernels.uniforms(np.zeros((1, 1, 1)), 0, 0, 0)


def test_without_the_build_the_noise_is_drawn_with_numpy_the_same(monkeypatch):
    from networks.noise import shared_uniforms

    fast = shared_uniforms(3, 9, 4, 7, offset=5)
    monkeypatch.setattr(kernels, "_kernels", None)
    np.testing.assert_array_equal(shared_uniforms(3, 9, 4, 7, offset=5), fast)
    for seed, offset in ((-1, 0), (2**63, 0), (0, 2**63)):
        with pytest.raises(ValueError, match=r"\[0, 2\*\*63\)"):
            shared_uniforms(seed, 2, 1, 3, offset=offset)
