"""The compiled kernels equal the numpy mathematics bit for bit, and row blocks run in threads
give the same trace as one block."""
import numpy as np
import pytest
from conftest import require

from networks import planted_inputs, planted_network, reference, simulate
from neurons import kernels
from neurons.poisson import membrane_update, poisson_icdf


@pytest.fixture(autouse=True)
def compiled_kernels():
    """Every test here checks the compiled module; under CI=true it must have been built."""
    require("neurons._kernels")


def test_spikes_equal_the_numpy_inverse_cdf_bit_for_bit():
    rng = np.random.default_rng(0)
    u = np.concatenate([np.linspace(-9.0, 10.0, 60001), [-np.inf, 0.0, np.log(100.0),
                                                          np.nextafter(np.log(100.0), 99)]])
    xi = rng.random(u.shape)
    xi[:50] = np.nextafter(1.0, 0.0)    # the cap must stop the search
    xi[50:100] = 0.0
    rate, counts = np.empty_like(u), np.empty_like(u)
    kernels.spikes(u, xi, rate, counts)
    np.testing.assert_array_equal(rate, np.exp(u))
    np.testing.assert_array_equal(counts, poisson_icdf(xi, np.exp(u)))
    assert counts[-4] == 0  # rate 0


def test_membrane_equals_the_numpy_update_bit_for_bit():
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
    np.testing.assert_array_equal(out, expected)  # NaN where numpy gives NaN
    assert np.isnan(out[0, 0]) and np.isfinite(out[0, 1:]).all()


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


def test_row_blocks_in_threads_and_the_numpy_fallback_give_the_same_trace(monkeypatch):
    net, _, _ = planted_network(64, 128, 5, seed=0, n_inputs=1)
    x, _ = planted_inputs(net, 200, 5, seed=2)
    assert len(reference.row_blocks(200, 128, 3)) == 4
    one = reference.run(net, x, 25, seed=4, threads=1)
    three = reference.run(net, x, 25, seed=4, threads=3)
    # BLAS may round a product of a row block differently from the whole batch's
    # (other blocking), so potentials agree to rounding and counts exactly.
    np.testing.assert_array_equal(three.spikes, one.spikes)
    for name in ("u", "recon", "step_mse", "step_rate"):
        np.testing.assert_allclose(getattr(three, name), getattr(one, name), rtol=0, atol=1e-12,
                                   err_msg=name)
    monkeypatch.setattr(kernels, "_kernels", None)
    assert not kernels.compiled()
    fallback = reference.run(net, x, 25, seed=4, threads=1)
    np.testing.assert_array_equal(fallback.spikes, one.spikes)
    np.testing.assert_array_equal(fallback.u, one.u)  # same products, same kernels' arithmetic
