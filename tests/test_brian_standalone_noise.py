"""Brian2 cpp_standalone computes the shared uniforms in its C++ program (design §2.2).

The program draws ξ[t, n, k] from the keyed Philox streams (``neurons/_philox.h``,
``neurons.brian.keyed_noise_function``) instead of reading a table of N·T·K uniforms
written by Python: the counts equal the reference's exactly, and neither Python nor
the generated project holds a noise table.  Each test compiles one small C++ project
(3–10 s on a 2-core machine).
"""
from pathlib import Path

import numpy as np
import pytest

from conftest import require
from networks import planted_network, simulate


@pytest.fixture(scope="module")
def problem():
    """Planted D=64, K=128 network and 3 inputs."""
    net, x, _ = planted_network(64, 128, 5, seed=0, n_inputs=3)
    return net, x


def test_keyed_noise_with_an_offset_equals_the_reference(problem):
    """N = 3 inputs at offset 5 with a seed near the key limit: the same counts as the
    reference, potentials within rounding; a different offset gives other counts."""
    require("brian2")
    net, x = problem
    steps, seed, offset = 40, 2**63 - 7, 5
    ref = simulate(net, x, steps, seed=seed, offset=offset)
    tr = simulate(net, x, steps, backend="brian2", target="cpp_standalone", seed=seed,
                  offset=offset)
    assert ref.spikes.sum() > 0
    np.testing.assert_array_equal(tr.spikes, ref.spikes)
    np.testing.assert_allclose(tr.u, ref.u, rtol=0, atol=1e-9)
    other = simulate(net, x, steps, seed=seed, offset=offset + 1)
    assert not np.array_equal(other.spikes, ref.spikes)  # the offset selects the streams


def test_no_noise_table_in_python_or_the_program(problem, monkeypatch):
    """With N·T·K = 2 × 400 × 128 uniforms (819,200 bytes; the largest other array is the
    K × K weights, 131,072 bytes): Python draws no uniform (no stream is built), and no
    array the generated C++ project loads is as large as half the table, so the
    program's memory for noise does not grow with T.  Counts equal the reference's."""
    require("brian2")
    import networks.brian as nb

    net, x = problem
    x, steps, k = x[:2], 400, net.n_latents
    table_bytes = len(x) * steps * k * 8

    def no_stream(*args, **kwargs):
        raise AssertionError("cpp_standalone drew shared uniforms in Python")

    monkeypatch.setattr(nb, "sample_stream", no_stream)
    arrays = {}
    compile_project = nb._compile

    def inspect_then_compile(b2, workdir):  # the project as written, before make
        static = Path(workdir) / "static_arrays"
        arrays.update({p.name: p.stat().st_size for p in static.iterdir() if p.is_file()})
        return compile_project(b2, workdir)

    monkeypatch.setattr(nb, "_compile", inspect_then_compile)
    tr = simulate(net, x, steps, backend="brian2", target="cpp_standalone", seed=4,
                  offset=11, record=[steps - 1])
    assert arrays, "no static arrays seen: the project layout changed"
    assert not [name for name in arrays if "ipvae_noise" in name]
    assert max(arrays.values()) < table_bytes // 2, arrays
    ref = simulate(net, x, steps, seed=4, offset=11, record=[steps - 1])
    np.testing.assert_array_equal(tr.spikes, ref.spikes)


def test_explicit_noise_and_independent_noise(problem):
    """Explicit ξ (T, N, K) still goes in as a table and gives the reference's counts;
    independent noise (Brian2's rand()) runs too, at the reference's mean rate."""
    require("brian2")
    net, x = problem
    steps = 30
    noise = np.random.default_rng(7).random((steps, len(x), net.n_latents))
    ref = simulate(net, x, steps, noise=noise)
    tr = simulate(net, x, steps, backend="brian2", target="cpp_standalone", noise=noise)
    np.testing.assert_array_equal(tr.spikes, ref.spikes)
    ind = simulate(net, x, steps, backend="brian2", target="cpp_standalone", seed=3,
                   independent_noise=True)
    assert not ind.info["shared_noise"]
    assert not np.array_equal(ind.spikes, ref.spikes)
    assert ind.spikes.mean() == pytest.approx(ref.spikes.mean(), rel=0.1)
