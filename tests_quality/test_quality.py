"""Quality gates of issues 4 and 16 (``make quality``; not part of ``make test``).

Full check (issue 16): embedded MNIST, K = 512, T_train = 16, the default training config,
trained for the whole 15-minute budget on 2 threads (an epoch cap far above what 15
minutes allow, so the budget ends training; the schedule is fitted to it), then the
exported network run by the reference simulator on the 1,000 held-out digits to step 1000
with true Poisson counts:

- R² from spikes at t = 1000 ≥ R² at t = 160 ≥ R² at t = 16 + 0.03 (inference keeps
  improving past the training horizon);
- R² at t = 1000 ≥ 0.75;
- sparsity at t = 160 ≥ 0.90;
- no held-out digit with a latent pinned at the rate ceiling (runaway);
- linear probe on rates within 2 points of the probe on pixels.

The figures go to ``runs/quality/metrics.json`` (and the test output).  Set
``IPVAE_QUALITY_REUSE=1`` to check an existing ``runs/quality`` without
retraining.  The small check runs the same pipeline and criteria at a size that
takes a few minutes (K = 128, 100 epochs of training on 1,000 digits, 300 held-out
digits to step 200, probe fit on the 1,000 training digits), with floors scaled to that
size.  The matrix of settings (K, T_train, patches) is ``tests_quality/test_matrix.py``.
"""
import json
import os
from pathlib import Path

import pytest

import neurons  # noqa: F401
from train.trainer import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]

FULL_FLOORS = dict(r2_160=0.0, gain_16_160=0.03, drop_160_end=0.0, r2_end=0.75,
                   sparsity_160=0.90, probe_gap=0.02)
# The small check trains a fixed number of epochs (not a time budget), so its figures do
# not depend on the machine's speed or load (on one machine they repeat exactly).
# Calibrated here with the default config at K = 128, 100 epochs on 1,000 digits:
# R² at t = 16 → 160 → 199: 0.375 → 0.410 → 0.410, sparsity at 160: 0.817, probe on rates
# 0.827 vs 0.86 on pixels, no runaway (with β warm-up 0.3 instead of 0.1: R² 0.460 → 0.497).
# 30 epochs are too few at this size: the code collapses (R² < 0).  The R² floor leaves
# room for other machines' BLAS rounding, which changes the trajectory of training.
SMALL_FLOORS = dict(r2_160=0.35, gain_16_160=0.01, drop_160_end=0.01, sparsity_160=0.70,
                    probe_gap=0.06)


def figures(evaluation: dict) -> dict:
    """The gate's figures from ``train.evaluate.summary`` output."""
    r2, sp = evaluation["r2_spikes"], evaluation["sparsity"]
    last = str(evaluation["steps"] - 1)
    probe = evaluation.get("probe") or {}
    return dict(r2_16=r2["16"], r2_160=r2["160"], r2_end=r2[last], end_step=int(last),
                sparsity_16=sp["16"], sparsity_160=sp["160"], sparsity_end=sp[last],
                runaway_inputs=evaluation["runaway_any"], max_u=evaluation["max_u"],
                probe_rates=probe.get("rates", [None])[-1], probe_pixels=probe.get("pixels"))


def failures(f: dict, floors: dict) -> list:
    out = []
    if not f["r2_160"] >= floors["r2_160"]:
        out.append(f"R² at step 160 is {f['r2_160']:.3f} < {floors['r2_160']}")
    if not f["r2_160"] - f["r2_16"] >= floors["gain_16_160"]:
        out.append(f"R² gains {f['r2_160'] - f['r2_16']:.3f} from step 16 to 160 "
                   f"(< {floors['gain_16_160']})")
    if not f["r2_end"] >= f["r2_160"] - floors["drop_160_end"]:
        out.append(f"R² falls from {f['r2_160']:.3f} (t=160) to {f['r2_end']:.3f} "
                   f"(t={f['end_step']})")
    if "r2_end" in floors and not f["r2_end"] >= floors["r2_end"]:
        out.append(f"R² at step {f['end_step']} is {f['r2_end']:.3f} < {floors['r2_end']}")
    if f["runaway_inputs"]:
        out.append(f"{f['runaway_inputs']} held-out inputs ran a latent to the rate ceiling")
    if not f["sparsity_160"] >= floors["sparsity_160"]:
        out.append(f"sparsity at step 160 is {f['sparsity_160']:.3f} < {floors['sparsity_160']}")
    if f["probe_rates"] is None or not f["probe_rates"] >= f["probe_pixels"] - floors["probe_gap"]:
        out.append(f"probe on rates {f['probe_rates']} vs pixels {f['probe_pixels']} "
                   f"(allowed gap {floors['probe_gap']})")
    return out


def _record(out: Path, f: dict, floors: dict, fails: list):
    path = out / "metrics.json"
    m = json.loads(path.read_text())
    m["quality_gate"] = dict(figures=f, floors=floors, passed=not fails, failures=fails)
    path.write_text(json.dumps(m, indent=2, sort_keys=True))
    print(json.dumps(m["quality_gate"], indent=2))


def test_quality_small(tmp_path):
    from train.data import load_dataset

    cfg = TrainConfig(data="mnist", n_train=1000, latents=128, t_train=16, epochs=100,
                      threads=2, eval_steps=0, progress=False)
    test = load_dataset("mnist", "test").head(300)
    probe = load_dataset("mnist", "train").head(1000)
    res = train(cfg, tmp_path)
    assert res["metrics"]["finished"]
    # the probe is fit on 1,000 training digits (the full split takes minutes at this size)
    from networks import load_network
    from train.evaluate import evaluate, summary

    net = load_network(tmp_path / "model.npz")
    ev = summary(evaluate(net, test, steps=200, seed=0, probe_train=probe, progress=False))
    f = figures(ev)
    fails = failures(f, SMALL_FLOORS)
    _record(tmp_path, f, SMALL_FLOORS, fails)
    assert not fails, fails


@pytest.mark.skipif(os.environ.get("IPVAE_QUALITY_FULL", "1") == "0",
                    reason="IPVAE_QUALITY_FULL=0 skips the 15-minute training")
def test_quality_full():
    out = ROOT / "runs" / "quality"
    reuse = os.environ.get("IPVAE_QUALITY_REUSE") == "1" and (out / "metrics.json").is_file()
    if not reuse:
        # a fresh run (the folder also holds the matrix's results: keep them)
        (out / "checkpoint.pt").unlink(missing_ok=True)
        # the whole budget: the epoch cap is far above what 15 minutes allow
        cfg = TrainConfig(data="mnist", latents=512, t_train=16, epochs=10_000,
                          time_budget=15.0, threads=2, eval_steps=1000, progress=True)
        res = train(cfg, out)
        assert res["metrics"]["finished"]
        assert res["metrics"]["train_seconds"] <= 15 * 60 + 60
    m = json.loads((out / "metrics.json").read_text())
    f = figures(m["evaluation"])
    fails = failures(f, FULL_FLOORS)
    _record(out, f, FULL_FLOORS, fails)
    assert not fails, fails
