"""Evaluation of an exported network: metrics against a direct computation, chunking, probe, CLI."""
import dataclasses
import json

import numpy as np
import pytest

from networks import load_network, planted_network, save_network, simulate, Trace
from train.data import Dataset, load_dataset
from train.evaluate import (CURVES, evaluate, linear_probe, log_steps, r2_curve, run_chunked,
                            summary, to_json)


def _dataset(x, y=None, name="toy"):
    return Dataset(np.asarray(x, dtype=np.float32), y, (x.shape[1],),
                   dict(name=name, split="test", rotate=None))


@pytest.fixture(scope="module")
def problem():
    net, x, _ = planted_network(64, 128, 5, seed=0, n_inputs=7)
    return net, _dataset(x)


def test_curves_equal_a_direct_computation_from_the_full_trace(problem):
    net, ds = problem
    steps = 40
    res = evaluate(net, ds, steps=steps, seed=3, batch=100, progress=False, n_examples=4)
    x = ds.x.astype(np.float64)
    tr = simulate(net, x, steps, seed=3, rate_metrics=True)  # every step recorded
    recon = tr.spikes @ net.phi.T  # (T, N, D)
    sse = ((x - recon) ** 2).sum(axis=2)
    sst = ((x - x.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    np.testing.assert_allclose(res["r2_spikes"], (1 - sse / sst).mean(axis=1), rtol=1e-10)
    np.testing.assert_allclose(res["mse_spikes"], (sse / x.shape[1]).mean(axis=1), rtol=1e-10)
    rates = np.exp(tr.u[:steps])  # e^{u_t}, t < T
    sse_r = ((x - rates @ net.phi.T) ** 2).sum(axis=2)
    np.testing.assert_allclose(res["r2_rates"], (1 - sse_r / sst).mean(axis=1), rtol=1e-10)
    np.testing.assert_allclose(res["mse_rates"], (sse_r / x.shape[1]).mean(axis=1), rtol=1e-10)
    np.testing.assert_allclose(res["sparsity"], (tr.spikes == 0).mean(axis=(1, 2)), rtol=1e-12)
    np.testing.assert_allclose(res["mean_rate"], rates.mean(axis=(1, 2)), rtol=1e-10)
    # The trace's own R² agrees too (same definition).
    np.testing.assert_allclose(res["r2_spikes"], tr.r2(), rtol=1e-10)
    # Only the log-spaced steps were recorded; max u there and at T.
    rec = res["record_steps"]
    assert list(rec) == list(log_steps(steps)) and len(rec) < steps
    u_rec = np.concatenate([tr.u[rec], tr.u[-1:]])
    np.testing.assert_allclose(res["max_u"], u_rec.max(axis=(1, 2)), rtol=1e-6)
    ex = res["examples"]
    np.testing.assert_allclose(ex["recon"], recon[rec][:, :4], rtol=1e-12)
    np.testing.assert_allclose(ex["rate_recon"][-1], np.exp(tr.u[-1][:4]) @ net.phi.T,
                               rtol=1e-5)
    # Inference on the planted problem works: R² rises to near 1.
    assert res["r2_rates"][-1] > 0.9 and res["r2_spikes"][-1] > res["r2_spikes"][0] + 0.5
    assert res["runaway_any"] == 0


def test_chunking_does_not_change_results_noise_is_keyed_by_index(problem):
    net, ds = problem
    kw = dict(steps=25, seed=1, progress=False, probe_step=[5, 25])
    labelled = Dataset(ds.x, np.arange(len(ds)) % 2, ds.input_shape, ds.meta)
    one = evaluate(net, labelled, batch=100, probe_train=labelled, **kw)
    three = evaluate(net, labelled, batch=3, probe_train=labelled, **kw)
    for name in (*CURVES, "max_u"):
        np.testing.assert_allclose(three[name], one[name], rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(three["runaway"], one["runaway"])
    np.testing.assert_allclose(three["examples"]["recon"], one["examples"]["recon"], rtol=1e-12)
    assert three["probe"] == one["probe"]
    # Input 4 of the data set gets the stream (seed, 4), wherever its chunk starts.
    run = run_chunked(net, ds.x.astype(np.float64), 25, seed=1, batch=3, record=[24],
                      progress=False)
    alone = simulate(net, ds.x[4:5].astype(np.float64), 25, seed=1, offset=4)
    np.testing.assert_array_equal(run["step_zeros"][:, 4], alone.step_zeros[:, 0])
    np.testing.assert_allclose(run["step_mse"][:, 4], alone.step_mse[:, 0], rtol=1e-12)
    other = simulate(net, ds.x[4:5].astype(np.float64), 25, seed=1, offset=0)
    assert not np.allclose(run["step_mse"][:, 4], other.step_mse[:, 0])
    assert run["u"].shape == (2, len(ds), net.n_latents)


def test_runaway_counts_inputs_pinned_at_the_rate_ceiling(problem):
    net, ds = problem
    # Planted codes ask for 50–150 spikes/step (u ≈ 4–5): a ceiling of 4 pins every input.
    low = dataclasses.replace(net, clamp_u=4.0)
    res = evaluate(low, ds, steps=30, progress=False)
    assert res["runaway_any"] == len(ds) and res["runaway_final"] == len(ds)
    assert res["max_u"].max() < 4.0
    assert res["runaway"][0] == 0  # u0 = −3 at step 0
    s = summary(res)
    assert s["runaway_inputs"] == list(range(len(ds)))
    ok = evaluate(net, ds, steps=30, progress=False)
    assert ok["runaway_any"] == 0 and ok["runaway_final"] == 0


def test_linear_probe_separates_a_separable_toy_problem():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 20)) * 5
    y = np.repeat(np.arange(3), 40)
    x = centres[y] + rng.standard_normal((120, 20))
    assert linear_probe(x[::2], y[::2], x[1::2], y[1::2]) == 1.0
    with pytest.raises(ValueError, match="at least 2 classes"):
        linear_probe(x, np.zeros(120, dtype=int), x, y)


def test_probe_on_rates_reads_the_class_from_inferred_codes():
    # Three classes, each made of codes on its own group of 40 latents.
    net, _, _ = planted_network(64, 120, 3, seed=1, n_inputs=1)
    rng = np.random.default_rng(5)

    def make(n):
        y = np.arange(n) % 3
        codes = np.zeros((n, 120))
        for i, c in enumerate(y):
            codes[i, rng.choice(40, 3, replace=False) + 40 * c] = rng.uniform(50, 150, 3)
        return _dataset(codes @ net.phi.T, y)

    train, test = make(60), make(30)
    res = evaluate(net, test, steps=30, probe_train=train, probe_step=[0, 30], progress=False)
    p = res["probe"]
    assert p["steps"] == [0, 30] and (p["n_train"], p["n_test"]) == (60, 30)
    assert p["rates"][0] == pytest.approx(1 / 3)  # at t = 0 every rate is e^{u0}: chance
    assert p["rates"][1] >= 0.9
    assert 0.0 <= p["pixels"] <= 1.0


def test_evaluation_errors(problem):
    net, ds = problem
    wrong = _dataset(np.zeros((3, 10)))
    with pytest.raises(ValueError, match="D = 10 .* expects D = 64"):
        evaluate(net, wrong, steps=5, progress=False)
    with pytest.raises(ValueError, match="needs labels"):
        evaluate(net, ds, steps=5, probe_train=ds, progress=False)
    labelled = Dataset(ds.x, np.arange(len(ds)) % 2, ds.input_shape, ds.meta)
    with pytest.raises(ValueError, match=r"probe steps must lie in \[0, 5\]"):
        evaluate(net, labelled, steps=5, probe_train=labelled, probe_step=6, progress=False)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        evaluate(net, ds, steps=0, progress=False)
    with pytest.raises(ValueError, match="zero variance"):
        r2_curve(np.ones((2, 4)), np.zeros((3, 2)))


def test_log_steps_keep_memory_small_and_include_the_checkpoints():
    s = log_steps(1000)
    assert {0, 16, 160, 999} <= set(s.tolist()) and len(s) <= 20
    assert s.min() >= 0 and s.max() == 999
    assert log_steps(1).tolist() == [0]


def test_results_serialise_to_json(problem):
    net, ds = problem
    res = evaluate(net, ds, steps=20, progress=False)
    js = json.loads(json.dumps(to_json(res)))
    assert set(js["r2_spikes"]) == {"0", "16", "19"}
    assert len(js["curves"]["r2_spikes"]) == 20
    assert js["runaway_checked_at"][-1] == 20 and js["dataset"]["name"] == "toy"


# ---------------------------------------------------------------- command line

@pytest.fixture
def digits_net(tmp_path):
    net, _, _ = planted_network(64, 96, 4, seed=2, n_inputs=1)
    net = dataclasses.replace(net, input_shape=(8, 8))
    path = tmp_path / "net.npz"
    save_network(net, path)
    return path


def test_cli_evaluate_writes_json_and_figures(tmp_path, digits_net, capsys):
    from ipvae.cli import main

    out = tmp_path / "eval"
    rc = main(["evaluate", str(digits_net), "--data", "digits", "--steps", "12", "--n", "20",
               "--probe-n", "60", "--probe-step", "4", "--out", str(out)])
    assert rc == 0
    js = json.loads((out / "evaluation.json").read_text())
    assert js["n_inputs"] == 20 and js["steps"] == 12 and len(js["curves"]["sparsity"]) == 12
    assert js["dataset"]["name"] == "digits" and js["dataset"]["split"] == "test"
    assert js["probe"]["steps"] == [4] and js["probe"]["n_train"] == 60
    assert js["network"] == str(digits_net)
    for png in ("curves.png", "examples.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert "wrote" in capsys.readouterr().out


def test_cli_evaluate_dimension_mismatch_is_one_line_error(tmp_path, digits_net, capsys):
    from ipvae.cli import main

    p = tmp_path / "d10.npy"
    np.save(p, np.random.default_rng(0).random((10, 10)))
    rc = main(["evaluate", str(digits_net), "--data", str(p), "--steps", "3",
               "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "D = 10" in capsys.readouterr().err


def test_cli_simulate_takes_data_set_inputs_with_offset(tmp_path, digits_net, capsys):
    from ipvae.cli import main

    out = tmp_path / "t.npz"
    rc = main(["simulate", str(digits_net), "--data", "digits", "--offset", "3", "--n", "2",
               "--steps", "6", "--seed", "4", "--out", str(out)])
    assert rc == 0
    tr = Trace.load(out)
    test = load_dataset("digits", "test")
    np.testing.assert_array_equal(tr.x, test.x[3:5].astype(np.float64))
    ref = simulate(load_network(digits_net), test.x[3:5], 6, seed=4, offset=3)
    np.testing.assert_array_equal(tr.spikes, ref.spikes)
    rc = main(["simulate", str(digits_net), "--data", "digits", "--rotate", "90", "--n", "1",
               "--steps", "2", "--out", str(out)])
    assert rc == 0
    np.testing.assert_allclose(Trace.load(out).x[0],
                               load_dataset("digits", "test", rotate=90).x[0], rtol=1e-7)


@pytest.mark.parametrize("args, message", [
    (["--data", "nosuchset"], "available: planted, mnist, digits, patches"),
    (["--data", "digits", "--offset", "9999"], "past the end"),
    (["--data", "planted", "--rotate", "10"], "--rotate and --data-dir apply to data sets"),
])
def test_cli_simulate_data_errors(tmp_path, digits_net, capsys, args, message):
    from ipvae.cli import main

    rc = main(["simulate", str(digits_net), *args, "--steps", "2", "--out",
               str(tmp_path / "t.npz")])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_cli_simulate_dimension_mismatch(tmp_path, capsys):
    from ipvae.cli import main

    net, _, _ = planted_network(32, 16, 2, seed=0, n_inputs=1)
    path = tmp_path / "n32.npz"
    save_network(net, path)
    rc = main(["simulate", str(path), "--data", "digits", "--steps", "2", "--out",
               str(tmp_path / "t.npz")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "D = 64" in err and "expects D = 32" in err
