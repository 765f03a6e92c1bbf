"""``ipvae experiment NAME --quick``: every experiment runs end to end through the CLI entry
point, writes its figures, JSON and table with finite numbers, and reuses cached models.

All experiments write into one folder (as ``make experiments`` does), so a model one of
them trained is reused by the next (the quick sizes share the tiny MNIST model).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from ipvae.cli import main
from train import experiments

torch.set_num_threads(1)

NAMES = list(experiments.EXPERIMENTS)
FIGURES = {
    "horizon": ["horizon_mnist.png", "horizon_patches.png"],
    "backends": ["backends_mse.png", "backends_rasters.png"],
    "features": ["features_dictionaries.png", "features_kurtosis.png", "features_probe.png"],
    "rate-distortion": ["rate_distortion.png"],
    "ood": ["ood_mse.png", "ood_rotation.png", "ood_inputs.png"],
}
PNG = b"\x89PNG\r\n\x1a\n"


def numbers_in(obj):
    """Every int/float leaf of a JSON object (booleans left out)."""
    if isinstance(obj, dict):
        for v in obj.values():
            yield from numbers_in(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from numbers_in(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Run every experiment once with --quick into one folder; (folder, {name: (status, out)})."""
    out = tmp_path_factory.mktemp("experiments")
    return out, {}


def run_quick(runs, name, capsys):
    out, done = runs
    if name not in done:
        status = main(["experiment", name, "--quick", "--quiet", "--out", str(out)])
        captured = capsys.readouterr()
        done[name] = (status, captured.out + captured.err)
    return out, done[name]


@pytest.mark.parametrize("name", NAMES)
def test_quick_experiment_writes_figures_json_and_table(runs, name, capsys):
    out, (status, text) = run_quick(runs, name, capsys)
    assert status == 0, text
    for fig in FIGURES[name]:
        data = (out / fig).read_bytes()
        assert data.startswith(PNG) and len(data) > 2000, fig
    js = json.loads((out / f"{name}.json").read_text())
    assert js["experiment"] == name and js["quick"] is True
    values = list(numbers_in(js))
    assert len(values) > 10 and all(math.isfinite(v) for v in values)
    assert js["claims"] and all(isinstance(c["holds"], bool) for c in js["claims"])
    md = (out / f"{name}.md").read_text()
    assert md.startswith(f"# {name}") and "| --- |" in md
    assert f"wrote {out / (name + '.json')}" in text


def test_horizon_numbers_match_its_curves_and_claims(runs, capsys):
    out, (status, _) = run_quick(runs, "horizon", capsys)
    assert status == 0
    js = json.loads((out / "horizon.json").read_text())
    decoders = {(m["data"], m["decoder"]) for m in js["models"]}
    assert {("mnist", "linear"), ("mnist", "mlp"), ("mnist", "conv")} <= decoders
    for m in js["models"]:
        r2 = np.asarray(m["curves"]["r2_spikes"])
        assert len(r2) == m["steps"] and len(m["du"]) == len(m["du_steps"]) > 0
        chk = m["checks"]["r2"]
        t_end = chk["t_end"]
        assert chk["r2_t4"] == r2[3] and chk["r2_t100"] == r2[99] and chk["r2_end"] == r2[t_end - 1]
        assert chk["holds"] == (r2[t_end - 1] > r2[99] > r2[3])
        sp = m["curves"]["sparsity"]
        assert all(0.0 <= v <= 1.0 for v in sp)
        assert m["checks"]["sparsity"]["holds"] == (sp[t_end - 1] > sp[15])
        assert min(m["curves"]["mean_rate"]) > 0
    nonlinear = [m for m in js["models"] if m["decoder"] != "linear"]
    assert all("torch model at temperature 0" in m["how"] for m in nonlinear)


def test_a_second_experiment_reuses_the_cached_model(runs, capsys):
    out, (status, _) = run_quick(runs, "horizon", capsys)
    assert status == 0
    out, (status, text) = run_quick(runs, "backends", capsys)
    assert status == 0
    assert "reusing the cached model" in text
    js = json.loads((out / "backends.json").read_text())
    lava = js["pairs"]["lava vs reference"]
    assert lava["identical_counts"] == 1.0 and lava["max_abs_mse_difference"] <= 1e-12
    assert js["pairs"]["lava-fixed vs fixed"]["identical_counts"] == 1.0
    assert js["fixed_over_float_mse"] > 0


def test_rate_distortion_distances_are_to_the_ideal_point(runs, capsys):
    out, (status, _) = run_quick(runs, "rate-distortion", capsys)
    assert status == 0
    js = json.loads((out / "rate-distortion.json").read_text())
    assert len(js["ipvae"]) >= 4
    points = js["ipvae"] + js["sparse_coding"] + js["lca"]
    for p in points:
        assert p["distance"] == pytest.approx(math.hypot(1 - p["sparsity"], 1 - p["r2"]))
    best = min(p["distance"] for p in js["sparse_coding"] + js["lca"])
    assert js["gap"] == pytest.approx(min(p["distance"] for p in js["ipvae"]) - best)


def test_list_names_every_experiment(capsys):
    assert main(["experiment", "--list"]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in NAMES)


def one_line_error(capsys, argv, status=2):
    assert main(argv) == status
    err = capsys.readouterr().err
    assert err.startswith("ipvae experiment: error: ") and err.count("\n") == 1, err
    return err


def test_bad_name_is_a_one_line_error(tmp_path, capsys):
    err = one_line_error(capsys, ["experiment", "nonsense", "--out", str(tmp_path)])
    assert "unknown experiment 'nonsense'" in err and "horizon" in err
    assert not list(tmp_path.iterdir())


def test_unwritable_out_is_a_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    err = one_line_error(capsys, ["experiment", "horizon", "--quick", "--out",
                                  str(blocker / "sub")])
    assert "is not a directory" in err
    err = one_line_error(capsys, ["experiment", "horizon", "--quick", "--out", str(blocker)])
    assert "is not a directory" in err


def test_missing_out_and_foreign_filter_are_errors(tmp_path, capsys):
    assert "--out" in one_line_error(capsys, ["experiment", "horizon", "--quick"])
    err = one_line_error(capsys, ["experiment", "ood", "--data", "mnist", "--out", str(tmp_path)])
    assert "does not take --data" in err
    err = one_line_error(capsys, ["experiment", "horizon", "--quick", "--t-train", "7",
                                  "--out", str(tmp_path)])
    assert "no horizon model matches" in err


def test_torch_curves_of_a_linear_model_equal_the_reference_simulator():
    """The torch loop used for the mlp/conv decoders runs design §1.1 with the shared noise:
    on a linear model it must give the reference simulator's curves."""
    from train.experiments.common import network_curves, torch_curves
    from train.model import IPVAEModel

    rng = np.random.default_rng(3)
    model = IPVAEModel(36, 24, input_shape=(6, 6), seed=1)
    with torch.no_grad():
        model.decoder.phi.normal_(0.0, 0.2, generator=torch.Generator().manual_seed(2))
        model.latent.u0.fill_(-1.0)
    x = rng.random((5, 36)) * (rng.random((5, 36)) < 0.4)
    ref = network_curves(model.to_network(), x, 40, seed=7, progress=False)
    tor = torch_curves(model, x, 40, seed=7, progress=False, batch=3)
    assert ref["sparsity"].min() < 1.0                # latents fire: the test means something
    for key in ("mse_spikes", "mse_rates", "r2_spikes", "sparsity", "mean_rate"):
        np.testing.assert_allclose(tor[key], ref[key], rtol=1e-9, atol=1e-12, err_msg=key)
    np.testing.assert_allclose(tor["du"][ref["du_steps"]], ref["du"], rtol=1e-9, atol=1e-12)
