"""The reference simulator and the one ``simulate`` interface."""
import numpy as np
import pytest

from networks import Trace, planted_network, simulate


def test_planted_inference_reduces_error_tenfold_and_finds_the_active_units(planted):
    net, x, codes = planted
    trace = simulate(net, x, 201, seed=0, record=[0, 200])
    mse = trace.mse()
    assert mse[200] <= mse[0] / 10
    rates = np.exp(trace.u[1])  # u at step 200
    active = codes > 0
    share = (rates * active).sum(axis=1) / rates.sum(axis=1)
    assert share.min() > 0.8
    # Each active unit's rate is of the order of its planted code.
    ratio = rates[active] / codes[active]
    assert 0.3 < np.median(ratio) < 2.0


def test_same_seed_same_trace_different_seed_differs(planted):
    net, x, _ = planted
    a, b, c = (simulate(net, x, 30, seed=s) for s in (1, 1, 2))
    np.testing.assert_array_equal(a.spikes, b.spikes)
    np.testing.assert_array_equal(a.u, b.u)
    assert not np.array_equal(a.spikes, c.spikes)


def test_raster_does_not_depend_on_the_noise_block_size(planted):
    """The reference draws noise a block of steps at a time; the block size changes nothing
    (batch versus lone runs is in the contract suite)."""
    net, x, _ = planted
    from networks import reference

    whole = simulate(net, x, 40, seed=3)
    blocky = reference.run(net, x, 40, seed=3, block=7)
    np.testing.assert_array_equal(blocky.spikes, whole.spikes)


@pytest.mark.parametrize("explicit_noise", [False, True])
def test_tiles_of_rows_change_nothing(planted, monkeypatch, explicit_noise):
    """The fused path runs a block in tiles of TILE_ROWS rows, ``block`` steps at a time;
    tiles that do not divide the batch, chunks that do not divide T and recorded steps on
    both sides of a chunk's edge give the whole block's numbers bit for bit (shared or
    explicit noise)."""
    from networks import reference
    from networks.noise import shared_uniforms

    net, x, _ = planted
    x = np.concatenate([x, 0.5 * x, 2.0 * x])[:7]  # 7 inputs: tiles of 3 leave one of 1
    steps = 23
    noise = shared_uniforms(5, steps, len(x), net.n_latents) if explicit_noise else None
    record = [0, 4, 5, 6, 13, steps - 1]
    monkeypatch.setattr(reference, "TILE_ROWS", 1000)
    whole = reference.run(net, x, steps, seed=5, noise=noise, record=record, threads=1)
    monkeypatch.setattr(reference, "TILE_ROWS", 3)
    for threads in (1, 2):
        tiled = reference.run(net, x, steps, seed=5, noise=noise, record=record, block=5,
                              threads=threads)
        for name in ("spikes", "u", "recon", "step_mse", "step_zeros", "step_rate"):
            np.testing.assert_array_equal(getattr(tiled, name), getattr(whole, name), name)
    assert whole.spikes.sum() > 0


@pytest.mark.parametrize("scale", [0.0, 1e6, -1e6])
def test_no_nan_or_inf_for_huge_or_zero_inputs(planted, scale):
    net, x, _ = planted
    xs = np.zeros_like(x) if scale == 0 else x / np.abs(x).max() * scale
    trace = simulate(net, xs, 50, rate_metrics=True)
    for name in ("spikes", "u", "recon", "step_mse", "step_rate", "step_rate_mse"):
        assert np.all(np.isfinite(getattr(trace, name))), name
    assert trace.u.max() <= net.clamp_u and trace.u.min() >= -8.0 - 1e-6


def test_record_keeps_only_requested_steps_and_all_metrics(planted, tmp_path):
    net, x, _ = planted
    full = simulate(net, x, 30, seed=4, rate_metrics=True)
    part = simulate(net, x, 30, seed=4, record=[3, 29], rate_metrics=True)
    assert part.spikes.shape == (2, len(x), net.n_latents)
    assert part.u.shape == (3, len(x), net.n_latents)
    np.testing.assert_array_equal(part.spikes, full.spikes[[3, 29]])
    np.testing.assert_array_equal(part.u, full.u[[3, 29, 30]])
    np.testing.assert_array_equal(part.step_mse, full.step_mse)
    np.testing.assert_array_equal(part.r2(from_rates=True), full.r2(from_rates=True))
    assert len(full.steps) == 30 and list(part.steps) == [3, 29]
    empty = simulate(net, x, 30, record=[])
    assert empty.spikes.shape[0] == 0 and empty.mse().shape == (30,)
    with pytest.raises(ValueError, match="record"):
        simulate(net, x, 30, record=[30])
    # Trace files round-trip.
    back = Trace.load(part.save(tmp_path / "t.npz"))
    for name in ("spikes", "u", "recon", "step_mse", "steps", "x"):
        np.testing.assert_array_equal(getattr(back, name), getattr(part, name))
    assert back.info["backend"] == "reference"


def test_trace_metrics_match_their_definitions(planted):
    net, x, _ = planted
    trace = simulate(net, x, 20, seed=1, rate_metrics=True)
    t = 13
    err = ((x - trace.spikes[t] @ net.phi.T) ** 2).sum(axis=1)
    sst = ((x - x.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    assert trace.r2()[t] == pytest.approx(np.mean(1 - err / sst))
    rate_err = ((x - np.exp(trace.u[t]) @ net.phi.T) ** 2).sum(axis=1)
    assert trace.r2(from_rates=True)[t] == pytest.approx(np.mean(1 - rate_err / sst))
    assert trace.sparsity()[t] == pytest.approx(np.mean(trace.spikes[t] == 0))
    with pytest.raises(ValueError, match="rate metrics"):
        simulate(net, x, 3).r2(from_rates=True)


def test_interface_errors(planted):
    """Errors shared by every backend are in the contract suite; these are simulate's own."""
    net, x, _ = planted
    with pytest.raises(ValueError, match="unknown backend 'nest'.*reference.*lava.*brian2"):
        simulate(net, x, 5, backend="nest")
    # (N, *input_shape) inputs are accepted.
    net.input_shape = (8, 8)
    assert simulate(net, x.reshape(8, 8, 8), 2).x.shape == (8, 64)


def test_planted_network_is_deterministic_and_validates():
    a = planted_network(20, 30, 3, seed=4)
    b = planted_network(20, 30, 3, seed=4)
    np.testing.assert_array_equal(a[0].phi, b[0].phi)
    np.testing.assert_array_equal(a[1], b[1])
    assert ((a[2] > 0).sum(axis=1) == 3).all()
    np.testing.assert_allclose(np.linalg.norm(a[0].phi, axis=0), 0.1)
    with pytest.raises(ValueError):
        planted_network(20, 30, 31)


def test_event_driven_and_dense_feedback_agree_across_the_switch(monkeypatch):
    """The folded, event-driven feedback (drive + fired rows of W) and the dense prediction
    error give the same counts, and potentials within the contract's tolerance (design §2.1),
    also when the share of nonzero counts crosses the switch during the run."""
    from networks import reference

    net, x, _ = planted_network(64, 128, 5, seed=0)
    monkeypatch.setattr(reference, "SPARSE_RECURRENT", -1.0)  # dense every step
    dense = simulate(net, x, 60, seed=7)
    assert dense.info["feedback_steps"] == {"event-driven": 0, "dense": 60 * len(x)}  # row-steps
    share = (dense.spikes > 0).mean(axis=(1, 2))  # nonzero share per step
    assert share.min() < share.max()
    monkeypatch.setattr(reference, "SPARSE_RECURRENT", float(np.median(share)))
    mixed = simulate(net, x, 60, seed=7)
    used = mixed.info["feedback_steps"]
    assert used["event-driven"] > 0 and used["dense"] > 0, used
    np.testing.assert_array_equal(mixed.spikes, dense.spikes)
    np.testing.assert_allclose(mixed.u, dense.u, rtol=0, atol=1e-9)
    # W too large for RECURRENT_MAX_BYTES: the dense path, the same numbers
    monkeypatch.setattr(reference, "SPARSE_RECURRENT", 1.0)
    monkeypatch.setattr(reference, "RECURRENT_MAX_BYTES", 0)
    big = simulate(net, x, 60, seed=7)
    assert big.info["feedback_steps"]["event-driven"] == 0
    np.testing.assert_array_equal(big.spikes, dense.spikes)


def test_reference_options_are_checked():
    net, x, _ = planted_network(16, 8, 2, seed=0)
    with pytest.raises(ValueError, match="block"):
        simulate(net, x, 4, block=0)
    with pytest.raises(ValueError, match="threads"):
        simulate(net, x, 4, threads=0)


@pytest.mark.parametrize("record", [None, [3, 4, 5, 6], [0, 2, 7, 8, 11], [9], []])
def test_a_block_of_steps_records_what_as_many_single_steps_record(record):
    from networks.trace import TraceRecorder

    net, x, _ = planted_network(12, 7, 3, seed=1, n_inputs=2)
    rng = np.random.default_rng(0)
    steps = 12
    u = rng.normal(-1.0, 1.0, (steps, 2, 7))
    z = rng.poisson(np.exp(u)).astype(np.float64)
    recon = z @ net.phi.T
    one, block = (TraceRecorder(net, x, steps, record) for _ in range(2))
    for t in range(steps):
        one.add(t, u[t], z[t], recon[t])
    block.add_block(0, u[:5], z[:5])       # read-out computed inside
    block.add_block(5, u[5:], z[5:], recon=recon[5:])
    a, b = one.finish(u[-1]), block.finish(u[-1])
    for name in ("spikes", "u", "recon", "step_mse", "step_zeros", "step_rate"):
        np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=1e-12, atol=1e-12,
                                   err_msg=name)
