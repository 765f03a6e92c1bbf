"""Shared noise (design §2.2): counter-based, per sample, independent of batching."""
import numpy as np
import pytest

from networks.noise import sample_stream, shared_uniforms, uniform_blocks


def test_definition_one_philox_stream_per_sample_in_t_k_order():
    xi = shared_uniforms(seed=7, steps=5, n=3, k=4, offset=10)
    assert xi.shape == (5, 3, 4)
    for n in range(3):
        g = np.random.Generator(np.random.Philox(key=[7, 10 + n]))
        np.testing.assert_array_equal(xi[:, n, :], g.random((5, 4)))


def test_independent_of_batch_size_and_chunking():
    whole = shared_uniforms(3, 20, 6, 5)
    part = shared_uniforms(3, 20, 2, 5, offset=4)
    np.testing.assert_array_equal(whole[:, 4:], part)
    blocks = np.concatenate(list(uniform_blocks(3, 20, 6, 5, block=7)))
    np.testing.assert_array_equal(blocks, whole)


def test_seeds_differ_and_values_are_uniform():
    a, b = shared_uniforms(0, 200, 4, 50), shared_uniforms(1, 200, 4, 50)
    assert not np.array_equal(a, b)
    assert np.all((a >= 0) & (a < 1))
    assert abs(a.mean() - 0.5) < 0.01
    with pytest.raises(ValueError):
        sample_stream(-1, 0)
