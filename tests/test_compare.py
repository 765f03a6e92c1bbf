"""Raster comparison across backends: metrics, statistics, figures, report and the CLI."""
import json
from dataclasses import replace

import numpy as np
import pytest

from conftest import require
from networks import planted_network, save_network, simulate
from networks.compare import (AGREEMENT_THRESHOLD, compare_shared, compare_statistics,
                              plot_mse_curves, plot_rasters, run_comparison)


@pytest.fixture(scope="module")
def problem():
    net, x, _ = planted_network(64, 128, 5, seed=0)
    return net, x[:2]


def _flip(trace, n_flips, seed=0):
    """A copy of ``trace`` with ``n_flips`` counts changed by +1."""
    spikes = trace.spikes.copy()
    idx = np.random.default_rng(seed).choice(spikes.size, n_flips, replace=False)
    spikes.flat[idx] += 1
    return replace(trace, spikes=spikes)


def test_shared_metrics_identical_and_flipped(problem):
    net, x = problem
    ref = simulate(net, x, 40, seed=1)
    same = compare_shared({"a": ref, "b": simulate(net, x, 40, seed=1)})
    pair = same["pairs"]["a|b"]
    assert same["passed"] and pair["identical_share"] == 1.0 and pair["max_abs_du"] == 0.0
    assert pair["n_counts"] == ref.spikes.size and pair["rate_correlation"] == pytest.approx(1)
    # 3 flips in 10,240 counts: 99.97% identical, below the 99.99% threshold
    flipped = compare_shared({"a": ref, "b": _flip(ref, 3)})
    pair = flipped["pairs"]["a|b"]
    assert pair["n_different"] == 3
    assert pair["identical_share"] == pytest.approx(1 - 3 / ref.spikes.size)
    assert pair["identical_share"] < AGREEMENT_THRESHOLD and not flipped["passed"]
    # one flip: 99.99% identical, passes
    assert compare_shared({"a": ref, "b": _flip(ref, 1)})["passed"]
    # a different seed: mostly different counts
    other = compare_shared({"a": ref, "b": simulate(net, x, 40, seed=2)})
    assert other["pairs"]["a|b"]["identical_share"] < 0.99 and not other["passed"]


def test_shared_rejects_mismatched_runs(problem):
    net, x = problem
    a = simulate(net, x, 10, seed=0)
    with pytest.raises(ValueError, match="at least two"):
        compare_shared({"a": a})
    with pytest.raises(ValueError, match="unlike the first"):
        compare_shared({"a": a, "b": simulate(net, x, 12, seed=0)})
    with pytest.raises(ValueError, match="different inputs"):
        compare_shared({"a": a, "b": simulate(net, x[::-1], 10, seed=0)})


def test_statistics_same_network_passes_perturbed_fails(problem):
    """The independent-noise test itself: two noise streams of the same network pass,
    η doubled fails (reference only, so it runs without brian2)."""
    net, x = problem
    trials = 20
    xs = np.repeat(x, trials, axis=0)  # 2 inputs × 20 trials, sample = input·20 + trial
    a = simulate(net, xs, 40, seed=0)
    b = simulate(net, xs, 40, seed=1)
    res = compare_statistics({"a": a, "b": b}, trials=trials)
    pair = res["pairs"]["a|b"]
    assert res["passed"], pair
    assert pair["rate_correlation"] >= 0.95 and pair["n_tests"] > 0
    assert 0.5 < pair["mean_fano"][0] < 2 and "Welch" in res["test"]
    fast = replace(net, log_eta=net.log_eta + np.log(2.0))
    c = simulate(fast, xs, 40, seed=1)
    res = compare_statistics({"a": a, "c": c}, trials=trials)
    assert not res["passed"]
    assert res["pairs"]["a|c"]["n_rate_different"] + res["pairs"]["a|c"]["n_steps_different"] > 0
    with pytest.raises(ValueError, match="trials"):
        compare_statistics({"a": a, "b": b}, trials=7)


def test_figures(problem, tmp_path):
    net, x = problem
    traces = {"a": simulate(net, x, 16, seed=0), "b": simulate(net, x, 16, seed=1)}
    for path in (plot_rasters(traces, tmp_path / "r.png"),
                 plot_mse_curves(traces, tmp_path / "m.png"),
                 plot_mse_curves(traces, tmp_path / "c.png", trials=2)):
        assert path.stat().st_size > 5000
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_comparison_reference_brian2(problem, tmp_path):
    require("brian2")
    net, x = problem
    report = run_comparison(net, x, 32, ["reference", "brian2"], tmp_path,
                            options={"brian2": {"target": "numpy"}})
    assert report["passed"]
    pair = report["pairs"]["reference|brian2"]
    assert pair["identical_share"] == 1.0 and pair["max_abs_du"] < 1e-9
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["pairs"]["reference|brian2"]["n_counts"] == x.shape[0] * 32 * net.n_latents
    assert saved["backends"]["brian2"]["info"]["target"] == "numpy"
    assert (tmp_path / "rasters.png").is_file() and (tmp_path / "mse.png").is_file()


def test_cli_compare_shared_and_failure(problem, tmp_path, monkeypatch, capsys):
    require("brian2")
    from ipvae.cli import main
    import networks.compare as nc

    net, _ = problem
    path = save_network(net, tmp_path / "net.npz")
    args = ["compare", str(path), "--backends", "reference,brian2", "--target", "numpy",
            "--data", "planted", "--n", "2", "--steps", "24", "--seed", "0"]
    assert main(args + ["--out", str(tmp_path / "ok")]) == 0
    assert "PASS" in capsys.readouterr().out
    assert json.loads((tmp_path / "ok" / "report.json").read_text())["passed"]

    real = nc.simulate

    def corrupt(net, x, steps, backend="reference", **kw):  # brian2 flips 5 counts
        tr = real(net, x, steps, backend=backend, **kw)
        return _flip(tr, 5) if backend == "brian2" else tr

    monkeypatch.setattr(nc, "simulate", corrupt)
    assert main(args + ["--out", str(tmp_path / "bad")]) == 1
    assert "FAIL" in capsys.readouterr().out
    assert not json.loads((tmp_path / "bad" / "report.json").read_text())["passed"]


def test_cli_compare_independent_noise(problem, tmp_path, capsys):
    require("brian2")
    from ipvae.cli import main

    net, _ = problem
    path = save_network(net, tmp_path / "net.npz")
    code = main(["compare", str(path), "--backends", "reference,brian2", "--target", "numpy",
                 "--n", "1", "--steps", "32", "--independent-noise", "--trials", "12",
                 "--out", str(tmp_path / "ind")])
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "ind" / "report.json").read_text())
    assert report["mode"] == "independent" and report["trials"] == 12
    assert "Welch" in report["test"] and "test:" in out
    assert code == 0 and report["passed"], report["pairs"]


def test_cli_errors(problem, tmp_path, capsys):
    from ipvae.cli import main

    net, _ = problem
    path = save_network(net, tmp_path / "net.npz")
    base = ["compare", str(path), "--out", str(tmp_path / "o")]
    assert main(base + ["--backends", "reference,nest"]) == 2
    assert "unknown backend" in capsys.readouterr().err
    assert main(base + ["--backends", "reference"]) == 2
    assert "at least two" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "o")]) == 2


def test_three_way_reference_lava_brian2(problem, tmp_path):
    """The issue's three-way cross-check: identical rasters from reference, Lava and Brian2."""
    require("brian2")
    require("lava")
    net, x = problem
    report = run_comparison(net, x[:1], 16, ["reference", "lava", "brian2"], tmp_path,
                            options={"brian2": {"target": "numpy"}})
    assert set(report["pairs"]) == {"reference|lava", "reference|brian2", "lava|brian2"}
    for pair in report["pairs"].values():
        assert pair["identical_share"] >= AGREEMENT_THRESHOLD
    assert report["passed"]


def test_constant_trials_are_no_evidence_of_a_difference():
    """Two trials each, constant within each backend at different values (a rarely firing
    neuron): the Welch test is undefined there, so it is not counted (was p = 0, a false FAIL)."""
    from networks.compare import _welch_p

    a = np.array([[0.0, 1.0, 0.5], [0.0, 2.0, 0.5]])
    b = np.array([[1 / 64, 1.5, 0.5], [1 / 64, 2.5, 0.5]])
    p = _welch_p(a, b)
    assert np.isnan(p[0]) and np.isnan(p[2])
    assert 0 < p[1] < 1
