"""The compiled kernels against the numpy mathematics: bit for bit with scalar libm, to rounding
(and the same counts) with vectorised exp/log1p; the event-driven read-out, the counter-based
noise, and row blocks in threads."""
import numpy as np
import pytest
from conftest import require

from networks import planted_inputs, planted_network, reference
from networks.noise import sample_stream
from neurons import kernels
from neurons.poisson import membrane_update, poisson_icdf


@pytest.fixture(autouse=True)
def compiled_kernels():
    """Every test here checks the compiled module; under CI=true it must have been built."""
    require("neurons._kernels")
    yield
    kernels.vector_math(True)


@pytest.fixture(params=[False, True], ids=["scalar-libm", "vector-math"])
def math_mode(request):
    """Run the test with scalar libm (exact) and with libmvec where this machine has it."""
    return kernels.vector_math(request.param)


def _spike_inputs():
    rng = np.random.default_rng(0)
    u = np.concatenate([np.linspace(-9.0, 10.0, 60001), [-np.inf, 0.0, np.log(100.0),
                                                          np.nextafter(np.log(100.0), 99)]])
    xi = rng.random(u.shape)
    xi[:50] = np.nextafter(1.0, 0.0)    # the cap must stop the search
    xi[50:100] = 0.0
    return u, xi


def test_spikes_equal_the_numpy_inverse_cdf(math_mode):
    u, xi = _spike_inputs()
    rate, counts = np.empty_like(u), np.empty_like(u)
    fired = kernels.spikes(u, xi, rate, counts)
    assert fired == np.count_nonzero(counts)
    if math_mode:  # libmvec's exp: within 2 ulp of libm, and here not one count flips
        np.testing.assert_allclose(rate, np.exp(u), rtol=4.5e-16, atol=0)
    else:
        np.testing.assert_array_equal(rate, np.exp(u))
    np.testing.assert_array_equal(counts, poisson_icdf(xi, np.exp(u)))
    assert counts[-4] == 0  # rate 0


def test_membrane_equals_the_numpy_update(math_mode):
    rng = np.random.default_rng(1)
    k = 97
    u = rng.uniform(-9, 9, (300, k))
    fb = rng.standard_normal((300, k)) * rng.choice([0.01, 1, 30, 1e6], (300, k))
    fb[0, :4] = [np.nan, np.inf, -np.inf, 0.0]  # numpy warns on the NaN; C stays silent
    bias = rng.uniform(0.01, 1, k)
    out = np.empty_like(u)
    kernels.membrane(u, fb, 0.7, bias, 8.0, 7.0, out)
    with np.errstate(invalid="ignore"):
        expected = membrane_update(u, fb, 0.7, bias, 8.0, 7.0)
    if math_mode:  # a few ulp of the clamp ceiling (8)
        np.testing.assert_allclose(out, expected, rtol=0, atol=8 * np.spacing(8.0))
    else:
        np.testing.assert_array_equal(out, expected)  # NaN where numpy gives NaN
    assert np.isnan(out[0, 0]) and np.isfinite(out[0, 1:]).all()


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
