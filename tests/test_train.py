"""Training: gradients, export to the network file, distributed = single process, resume."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import neurons  # noqa: F401  (OMP_WAIT_POLICY before torch)
import torch

from networks import simulate
from networks.noise import shared_uniforms
from networks.planted import planted_network
from train.checkpoint import load_checkpoint
from train.data import Dataset
from train.model import IPVAEModel
from train.noise import training_noise
from train.trainer import TrainConfig, lr_factor, schedule, train

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


def tiny_dataset(n=60, d=36, seed=0):
    """Sparse non-negative mixtures of a few random 6x6 patterns."""
    rng = np.random.default_rng(seed)
    atoms = rng.random((8, d)) * (rng.random((8, d)) < 0.4)
    codes = rng.poisson(0.6, (n, 8))
    x = (codes @ atoms).astype(np.float32)
    return Dataset(x, codes.argmax(1), (6, 6), dict(name="tiny", preprocessing="none"))


def tiny_config(**kw):
    base = dict(latents=16, t_train=4, batch=20, epochs=4, beta=1.0, eval_steps=0,
                progress=False, threads=1, width=6)
    base.update(kw)
    return TrainConfig(**base)


def test_one_training_step_lowers_the_loss_on_a_fixed_batch():
    ds = tiny_dataset()
    x = torch.as_tensor(ds.x[:20])
    model = IPVAEModel(36, 16, input_shape=(6, 6), seed=0)
    model.set_schedule(temperature=0.5, clamp_u=4.0, clamp_du=4.0)
    noise = training_noise(0, 0, range(20), 16, model.latent.width)
    opt = torch.optim.Adamax(model.parameters(), lr=1e-2)
    loss0 = model(x, 8, noise, beta=1.0)["loss"]
    opt.zero_grad()
    loss0.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"no gradient reaches {name}"
    opt.step()
    loss1 = model(x, 8, noise, beta=1.0)["loss"]
    assert float(loss1.detach()) < float(loss0.detach())


def test_training_noise_is_keyed_by_sample_index():
    a = training_noise(3, 1, [5, 9, 2], 8, 6).step(4)
    b = training_noise(3, 1, [2, 5], 8, 6).step(4)
    # sample 5 is row 0 in a, row 1 in b: flat indices 0..7 and 8..15
    ea = a.exponentials(torch.arange(0, 8), 0, 6)
    eb = b.exponentials(torch.arange(8, 16), 0, 6)
    assert torch.equal(ea, eb) and (ea > 0).all()
    assert torch.equal(a.normals(torch.arange(16, 24)), b.normals(torch.arange(0, 8)))
    # another epoch or another step: other draws
    assert not torch.equal(ea, training_noise(3, 2, [5], 8, 6).step(4).exponentials(
        torch.arange(8), 0, 6))
    assert not torch.equal(ea, training_noise(3, 1, [5], 8, 6).step(5).exponentials(
        torch.arange(8), 0, 6))
    # the draws are standard exponentials
    e = training_noise(0, 0, range(500), 64, 4).step(0).exponentials(None, 0, 4)
    assert abs(float(e.mean()) - 1) < 0.02 and abs(float(e.var()) - 1) < 0.05


def test_exported_network_reproduces_the_torch_models_r2_curve():
    net, x, _ = planted_network(64, 32, 4, seed=1, n_inputs=40)
    steps, seed = 60, 7
    model = IPVAEModel.from_network(net)  # float64
    back = model.to_network()
    for name in ("phi", "log_sigma", "log_bias", "u0"):
        np.testing.assert_allclose(getattr(back, name), getattr(net, name), rtol=1e-12, atol=1e-14)
    model.set_schedule(0.0)  # true Poisson counts
    xi = torch.as_tensor(shared_uniforms(seed, steps + 1, len(x), 32))
    with torch.no_grad():
        out = model(torch.as_tensor(x), steps, xi, keep_trajectory=True)
    trace = simulate(net, x, steps, seed=seed)
    torch_r2 = out["r2"][:steps].mean(1).numpy()
    ref_r2 = trace.r2()
    # same uniforms, same recurrence: the rasters agree (a rounding flip may be allowed) ...
    same = (out["z"][:steps].numpy() == trace.spikes).mean()
    assert same > 0.999
    # ... and the R² curves agree within sampling noise (across-input standard error)
    se = (1 - trace.step_mse / x.var(axis=1)).std(axis=1) / np.sqrt(len(x))
    assert np.all(np.abs(torch_r2 - ref_r2) <= 3 * se + 1e-9)
    assert ref_r2[-1] > ref_r2[0] + 0.1  # inference actually does something here


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_nonlinear_decoders_use_jacobian_feedback_and_refuse_export(kind):
    torch.manual_seed(0)
    model = IPVAEModel(36, 8, input_shape=(6, 6), decoder=kind, hidden=16, dtype=torch.float64)
    z = torch.rand(3, 8, dtype=torch.float64, requires_grad=True)
    recon = model.decoder(z)
    err = torch.randn(3, 36, dtype=torch.float64)
    fb = model.decoder.feedback(z, recon, err)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(model.decoder, z[i:i + 1].detach())
        np.testing.assert_allclose(fb[i].detach().numpy(),
                                   (err[i] @ jac.reshape(36, 8)).numpy(), rtol=1e-10, atol=1e-12)
    model.set_schedule(0.5, 3.0, 3.0)
    x = torch.rand(4, 36, dtype=torch.float64)
    noise = training_noise(0, 0, range(4), 8, model.latent.width)
    out = model(x, 3, noise)
    out["loss"].backward()
    assert all(p.grad is not None for p in model.decoder.parameters())
    with pytest.raises(ValueError, match="only linear decoders"):
        model.to_network()


def test_schedules():
    cfg = TrainConfig(epochs=10)
    n = 1000
    assert lr_factor(0, n, cfg) < 0.05 and lr_factor(49, n, cfg) == pytest.approx(1.0)
    assert lr_factor(n - 1, n, cfg) == pytest.approx(cfg.lr_min / cfg.lr, rel=0.05)
    s0, s_mid, s_end = schedule(0, n, cfg), schedule(500, n, cfg), schedule(n - 1, n, cfg)
    assert s0["temperature"] == 1.0 and s_mid["temperature"] == pytest.approx(cfg.temp_stop)
    assert s0["clamp_u"] < 2.1 and s_end["clamp_u"] == cfg.clamp_u
    assert s0["beta"] < 0.1 * cfg.beta and s_end["beta"] == cfg.beta


def _state(path):
    return load_checkpoint(Path(path) / "checkpoint.pt")  # weights-only loading


def test_resume_continues_exactly(tmp_path):
    ds = tiny_dataset()
    full = train(tiny_config(), tmp_path / "full", dataset=ds)
    part = train(tiny_config(), tmp_path / "part", dataset=ds, stop_after=2)
    assert not part["metrics"]["finished"] and _state(tmp_path / "part")["epoch"] == 2
    with pytest.raises(RuntimeError, match="resume"):
        train(tiny_config(), tmp_path / "part", dataset=ds)
    done = train(tiny_config(), tmp_path / "part", dataset=ds, resume=True)
    assert done["metrics"]["finished"]
    a, b = _state(tmp_path / "full"), _state(tmp_path / "part")
    assert a["epoch"] == b["epoch"] == 4
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(a["history"]["loss"], b["history"]["loss"], rtol=1e-6)
    assert (tmp_path / "part" / "model.npz").is_file()
    assert (tmp_path / "part" / "loss.png").is_file()
    assert (tmp_path / "part" / "dictionary.png").is_file()


class _Exploit:
    """Pickles as a call that would create a file when unpickled."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_checkpoints_load_as_data_only(tmp_path):
    target = tmp_path / "pwned"
    bad = tmp_path / "evil" / "checkpoint.pt"
    bad.parent.mkdir()
    torch.save({"model": {}, "config": _Exploit(target)}, bad)
    with pytest.raises(ValueError) as info:
        load_checkpoint(bad)
    assert not target.exists()  # the pickled call did not run
    msg = str(info.value)
    assert "\n" not in msg and str(bad) in msg and "not a readable checkpoint" in msg
    # the same through train(resume=True) and the command line: a one-line error, exit 2
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        train(tiny_config(), bad.parent, dataset=tiny_dataset(), resume=True)
    from ipvae.cli import main

    assert main(["train", "--out", str(bad.parent), "--resume", "--no-progress"]) == 2
    assert not target.exists()


@pytest.mark.parametrize("content,error", [
    (torch.zeros(3), "holds a Tensor"),
    ({"weights": torch.zeros(3)}, "missing model, optimizer, epoch"),
    ({"model": {}, "optimizer": {}, "epoch": "2", "total_epochs": 4, "config": {},
      "history": {}, "train_seconds": 1.0}, "'epoch' is a str"),
    ({"model": {}, "optimizer": {}, "epoch": 2, "total_epochs": 4, "config": {"colour": 1},
      "history": {}, "train_seconds": 1.0}, "unknown settings"),
    ({"model": {"phi": torch.zeros(2)}, "optimizer": {}, "epoch": 2, "total_epochs": 4,
      "config": tiny_config().to_dict(), "history": {}, "train_seconds": 1.0},
     "does not fit its config"),
])
def test_a_torch_file_that_is_not_a_checkpoint_is_named(tmp_path, content, error):
    path = tmp_path / "run" / "checkpoint.pt"
    path.parent.mkdir()
    torch.save(content, path)
    with pytest.raises(ValueError) as info:
        train(tiny_config(), path.parent, dataset=tiny_dataset(), resume=True)
    msg = str(info.value)
    assert error in msg and str(path) in msg and "\n" not in msg


def test_resume_with_other_settings_is_an_error(tmp_path):
    from ipvae.cli import main

    ds = tiny_dataset()
    train(tiny_config(), tmp_path / "run", dataset=ds, stop_after=1)
    with pytest.raises(ValueError, match=r"beta 2\.0 \(saved 1\.0\); epochs 6 \(saved 4\)"):
        train(tiny_config(epochs=6, beta=2.0), tmp_path / "run", dataset=ds, resume=True)
    # settings that do not change the run may differ
    train(tiny_config(eval_steps=3, progress=False, threads=2), tmp_path / "run", dataset=ds,
          resume=True, stop_after=1)
    assert _state(tmp_path / "run")["epoch"] == 2
    # the command line: a differing --epochs or --data is named; unset settings are the run's
    np.save(tmp_path / "x.npy", ds.x)
    args = ["train", "--data", str(tmp_path / "x.npy"), "--latents", "16", "--t-train", "4",
            "--batch", "20", "--epochs", "3", "--eval-steps", "0", "--threads", "1", "--beta", "1",
            "--width", "6", "--no-progress", "--out", str(tmp_path / "cli")]
    assert main(args + ["--stop-after", "1"]) == 0
    assert main(["train", "--out", str(tmp_path / "cli"), "--resume", "--epochs", "5",
                 "--no-progress"]) == 2
    assert main(["train", "--out", str(tmp_path / "cli"), "--resume", "--data", "digits",
                 "--no-progress"]) == 2
    assert _state(tmp_path / "cli")["epoch"] == 1
    assert main(["train", "--out", str(tmp_path / "cli"), "--resume", "--stop-after", "1",
                 "--no-progress"]) == 0
    assert _state(tmp_path / "cli")["epoch"] == 2


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_with_the_combined_batch(tmp_path):
    rng = np.random.default_rng(4)
    data = tmp_path / "tiny.npy"
    np.save(data, (rng.random((60, 16)) * (rng.random((60, 16)) < 0.5)).astype(np.float32))
    args = ["-m", "ipvae", "train", "--data", str(data), "--latents", "8", "--t-train", "4",
            "--batch", "8", "--epochs", "1", "--eval-steps", "0", "--threads", "1",
            "--beta", "1", "--no-progress", "--allow-collapse"]
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    one = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
                          "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                          "--master_port", str(_free_port()), *args,
                          "--out", str(tmp_path / "two")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = _state(tmp_path / "one"), _state(tmp_path / "two")
    assert a["epoch"] == b["epoch"] == 1
    assert len(a["history"]["loss"]) == 6  # 48 training inputs / batch 8
    moved = 0.0
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-5, atol=1e-6)
    init = IPVAEModel(16, 8, seed=0).state_dict()
    moved = max(float((a["model"][k] - init[k]).abs().max()) for k in init)
    assert moved > 1e-4  # training changed the parameters


def test_cli_errors(tmp_path):
    from ipvae.cli import main

    assert main(["train", "--out", str(tmp_path / "none"), "--resume", "--no-progress"]) == 2
    assert main(["train", "--data", str(tmp_path / "missing.npy"), "--out", str(tmp_path / "x"),
                 "--no-progress"]) == 2
    assert main(["train", "--decoder", "linear", "--beta", "-1", "--out", str(tmp_path / "y"),
                 "--no-progress"]) == 2


@pytest.mark.parametrize("kl_form", ["exact", "posterior"])
@pytest.mark.parametrize("temperature,dense",
                         [(0.7, False), (0.7, True), (0.05, False), (0.0, False)])
def test_hand_written_bptt_equals_autograd(kl_form, temperature, dense):
    """The fused linear model (folded form, one autograd node, hand-written BPTT) gives the
    step-by-step autograd composition's loss, curves and every parameter gradient."""
    _fused_equals_composed(kl_form, temperature, dense, "mean")


@pytest.mark.parametrize("loss_steps", ["linear", "last"])
def test_step_weighted_loss_fused_equals_composed(loss_steps):
    """The steps' NLL weights (``--loss-steps``) enter the hand-written BPTT as they enter
    autograd, and the loss is Σ_t (a_t·NLL_t + β·KL_t) / (T·N) with the weights a_t."""
    from train.model import step_weights

    a, _ = _fused_equals_composed("exact", 0.7, False, loss_steps)
    w = step_weights(loss_steps, 6, torch.float64)
    assert float(w.mean()) == pytest.approx(1.0)
    assert (w[-1] == w.max()) and (loss_steps != "last" or float(w[:-1].abs().sum()) == 0.0)
    expected = float((a["nll"] * w).mean() + 3.0 * a["kl"].mean())
    assert float(a["loss"].detach()) == pytest.approx(expected, rel=1e-10)


def _fused_equals_composed(kl_form, temperature, dense, loss_steps):
    ds = tiny_dataset(n=12)
    x = torch.as_tensor(ds.x, dtype=torch.float64)
    model = IPVAEModel(36, 16, input_shape=(6, 6), seed=3, clamp_u=4.0, clamp_du=3.0,
                       dtype=torch.float64, width=5)
    with torch.no_grad():  # an active regime: Φ large enough that latents fire and compete
        model.decoder.phi.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(1))
        model.log_sigma_raw.uniform_(-0.5, 0.5, generator=torch.Generator().manual_seed(2))
    model.set_schedule(temperature)
    if dense:  # explicit exponentials and tail normals (steps+1, N, K, W), (steps+1, N, K)
        gen = torch.Generator().manual_seed(5)
        noise = (torch.empty(7, 12, 16, 5, dtype=torch.float64).exponential_(generator=gen),
                 torch.randn(7, 12, 16, dtype=torch.float64, generator=gen))
    elif temperature > 0:
        noise = training_noise(0, 1, range(12), 16, 5)
    else:
        noise = torch.as_tensor(shared_uniforms(0, 7, 12, 16))
    results = []
    for fused in (True, False):
        model.zero_grad()
        out = model(x, 6, noise, beta=3.0, kl_form=kl_form, fused=fused, loss_steps=loss_steps)
        out["loss"].backward()
        grads = {k: p.grad.clone() for k, p in model.named_parameters()}
        results.append((out, grads))
    (a, ga), (b, gb) = results
    assert 0.05 < float(a["zeros"].mean()) < 0.95  # neither silent nor saturated
    torch.testing.assert_close(a["loss"], b["loss"], rtol=1e-10, atol=1e-10)
    for key in ("nll", "kl", "r2", "zeros", "max_u"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-9, atol=1e-9)
    for k in gb:
        assert gb[k].abs().max() > 0, k
        torch.testing.assert_close(ga[k], gb[k], rtol=1e-8, atol=1e-10 * float(gb[k].abs().max()))
    last = model(x, 6, noise, beta=3.0, kl_form=kl_form, r2_steps="last")["r2"]
    torch.testing.assert_close(last, a["r2"][-1:], rtol=1e-9, atol=1e-9)
    return a, ga


def test_collapse_detection_tells_a_working_model_from_a_collapsed_one():
    from train.health import held_out_health

    net, x, _ = planted_network(64, 32, 4, seed=1, n_inputs=40)
    model = IPVAEModel.from_network(net, dtype=torch.float32)
    model.set_schedule(0.3)
    h = held_out_health(model, torch.as_tensor(x, dtype=torch.float32), 60, seed=0)
    assert not h["collapsed"] and h["r2"] > 0.5 and h["active"] > 0, h
    assert model.latent.temperature == pytest.approx(0.3)  # the schedule is restored
    with torch.no_grad():  # silence the latents (rate e^-8) and the decoder
        model.latent.u0.fill_(-8.0)
        model.latent.log_bias.fill_(5.0)
        model.decoder.phi.zero_()
    h = held_out_health(model, torch.as_tensor(x[:4], dtype=torch.float32), 1, seed=0)
    assert h["collapsed"] and h["active"] == 0 and h["r2"] <= 0
    assert "no latent fires" in h["reasons"] and any("R²" in r for r in h["reasons"])
    with torch.no_grad():  # σ at its floor on every pixel, flat reconstruction
        model.log_sigma_raw.fill_(-40.0)
    h = held_out_health(model, torch.as_tensor(x, dtype=torch.float32), 5, seed=0)
    assert h["sigma_floor"] == 1.0 and any("floor" in r for r in h["reasons"])


def test_a_collapsed_training_is_reported_and_fails_the_command(tmp_path, capsys):
    import json

    from ipvae.cli import main

    ds = tiny_dataset()
    np.save(tmp_path / "x.npy", ds.x)
    # a learning rate of 1e-12: nothing is learned, Φ stays ~1e-4, the reconstruction is 0
    args = ["train", "--data", str(tmp_path / "x.npy"), "--latents", "16", "--t-train", "4",
            "--batch", "20", "--epochs", "2", "--eval-steps", "0", "--threads", "1",
            "--beta", "1", "--width", "6", "--lr", "1e-12", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 1
    out, err = capsys.readouterr()
    assert "COLLAPSED: held-out R²" in out and "--allow-collapse" in err
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["collapsed"] is True and metrics["held_out"]["r2"] <= 0
    assert metrics["held_out"]["inputs"] == "test split"
    assert (tmp_path / "a" / "model.npz").is_file()  # the run is still written
    assert main(args + ["--out", str(tmp_path / "b"), "--allow-collapse"]) == 0
    # every epoch is measured and kept in the checkpoint's history (plain data)
    health = _state(tmp_path / "b")["history"]["health"]
    assert len(health) == 2 and all(h["collapsed"] for h in health)


def test_sigma_initialisation_and_warm_up(tmp_path):
    ds = tiny_dataset()
    std = float(np.asarray(ds.x, dtype=np.float64).std())
    # σ starts at the data's scale and is held for the whole run (warm-up fraction 1)
    held = train(tiny_config(epochs=2, sigma_init="data", sigma_warmup=1.0), tmp_path / "a",
                 dataset=ds)["model"]
    np.testing.assert_allclose(np.exp(held.log_sigma.detach().numpy()), std, rtol=1e-5)
    # a number sets σ; without a warm-up σ then learns
    free = train(tiny_config(epochs=2, sigma_init=0.5), tmp_path / "b", dataset=ds)["model"]
    sig = np.exp(free.log_sigma.detach().numpy())
    assert np.abs(sig - 0.5).max() > 1e-3 and np.all(np.abs(sig - 0.5) < 0.2)
    for bad in (dict(sigma_init="median"), dict(sigma_init=0.0), dict(sigma_warmup=1.5)):
        with pytest.raises(ValueError, match="sigma_"):
            tiny_config(**bad).check()


def test_beta_scaled_with_a_power_of_t_train():
    from train.trainer import effective_beta

    assert effective_beta(TrainConfig(beta=8.0, t_train=4, beta_t_ref=None)) == 8.0
    # reference 16 and power 1 by default: β/16 times the KL summed over the steps
    assert effective_beta(TrainConfig(beta=8.0, t_train=4)) == 2.0
    assert effective_beta(TrainConfig(beta=8.0, t_train=16, beta_t_ref=16.0)) == 8.0
    cfg = TrainConfig(beta=8.0, t_train=8, beta_t_ref=16.0, beta_t_power=2.0, epochs=10)
    assert schedule(999, 1000, cfg)["beta"] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="beta_t_ref"):
        TrainConfig(beta_t_ref=0.0).check()
    # the power of the scaling is a setting: 2 gives 8·(1/4)² = 0.5 at T_train = 4
    assert effective_beta(TrainConfig(beta=8.0, t_train=4, beta_t_power=2.0)) == 0.5
    assert effective_beta(TrainConfig(beta=8.0, t_train=4, beta_t_power=0.0)) == 8.0


def test_a_time_budget_is_refitted_to_the_pace_of_every_epoch():
    from train.trainer import budget_epochs

    assert budget_epochs(60.0, 10.0, 1) == 6        # 10 s an epoch: 6 fit in a minute
    assert budget_epochs(60.0, 30.0, 1) == 2
    assert budget_epochs(60.0, 50.0, 2) == 2        # the pace slowed: no room for a third
    assert budget_epochs(60.0, 20.0, 4) == 12       # sped up: the plan grows with it
    assert budget_epochs(60.0, 90.0, 1) == 1        # over budget: the epochs done, no fewer
    assert budget_epochs(60.0, 0.0, 1) == 1


def test_a_short_unroll_learns_with_the_scaled_beta_and_collapses_without(tmp_path):
    """Issue 16 in small: 8x8 digits, K = 32, T_train = 4, the default β, from the authors'
    silent prior (u0 in U(−6, −4); the default prior fires, and rescues the unscaled run).
    With β scaled to T_train (the default: β/16 times the KL summed over the 4 steps) the
    run learns and is not flagged; with β unscaled the code dies (R² below zero: most
    latents silent) and the detector says so."""
    from train.data import load_dataset

    train_set, test_set = load_dataset("digits", "train").head(500), load_dataset("digits", "test")
    results = {}
    for ref in (16.0, None):
        cfg = tiny_config(latents=32, t_train=4, batch=50, epochs=10, beta=TrainConfig.beta,
                          lr=1e-2, beta_t_ref=ref, u0_init=-5.0)
        m = train(cfg, tmp_path / str(ref), dataset=train_set,
                  test_dataset=test_set.head(100))["metrics"]
        results[ref] = m
    healthy, dead = results[16.0], results[None]
    assert not healthy["collapsed"] and healthy["held_out"]["r2"] > 0.15, healthy["held_out"]
    assert dead["collapsed"] and dead["held_out"]["r2"] < 0 and dead["held_out"]["zeros"] > 0.8


def test_a_healthy_tiny_command_run_is_not_flagged(tmp_path, capsys):
    """The counterpart of the forced collapse: a tiny run that learns exits 0 and no epoch
    of it is flagged."""
    import json

    from ipvae.cli import main

    args = ["train", "--data", "digits", "--n-train", "500", "--latents", "32",
            "--t-train", "4", "--batch", "50", "--epochs", "6", "--lr", "1e-2",
            "--eval-steps", "0", "--threads", "1", "--quiet", "--out", str(tmp_path / "ok")]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "COLLAPSED" not in out + err
    metrics = json.loads((tmp_path / "ok" / "metrics.json").read_text())
    assert metrics["collapsed"] is False and metrics["held_out"]["r2"] > 0.1, metrics["held_out"]
    assert not _state(tmp_path / "ok")["history"]["health"][-1]["collapsed"]


def test_separate_draws_score_their_own_sample():
    """With the loss's draws keyed apart from the fed-back ones, the loss differs; given the
    very same draws, the separate-draws path reproduces the shared (fused) one."""
    ds = tiny_dataset()
    x = torch.as_tensor(ds.x[:20])
    model = IPVAEModel(36, 16, input_shape=(6, 6), seed=0, width=6)
    model.set_schedule(temperature=0.5, clamp_u=4.0, clamp_du=4.0)
    with torch.no_grad():                   # firing from the start, a visible decoder:
        model.latent.u0.fill_(0.0)          # the draws matter
        model.decoder.phi.copy_(torch.rand(36, 16, generator=torch.Generator().manual_seed(1))
                                * 0.3)

    def run(loss_stream):
        fb = training_noise(0, 0, range(20), 16, 6)
        ls = None if loss_stream is None else training_noise(0, 0, range(20), 16, 6,
                                                             stream=loss_stream)
        out = model(x, 5, fb, beta=1.0, loss_noise=ls)
        model.zero_grad()
        out["loss"].backward()
        return float(out["loss"].detach()), model.decoder.phi.grad.clone()

    shared, g_shared = run(None)
    same, g_same = run(0)
    other, g_other = run(1)
    assert same == pytest.approx(shared, rel=1e-5)
    torch.testing.assert_close(g_same, g_shared, rtol=1e-4, atol=1e-6)
    assert abs(other - shared) > 1e-3 * abs(shared)
    assert torch.isfinite(g_other).all() and float(g_other.abs().sum()) > 0


def test_width_rule_follows_the_largest_rate(tmp_path):
    from neurons.relaxed import width_needed
    from scipy.stats import poisson
    from train.trainer import sampler_width

    for u in (-3.0, 0.0, 2.0, 5.0):
        w = sampler_width(u, 8.0)
        assert poisson.sf(w - 1, np.exp(u)) < 1e-3 <= poisson.sf(w - 2, np.exp(u)) or w == 1
    assert sampler_width(None, 2.0) == width_needed(np.exp(2.0))   # the ceiling at the start
    assert sampler_width(9.0, 3.0) == sampler_width(3.0, 3.0)      # never above the ceiling
    # a run under the rule ends with the width its last rates need, and resumes exactly
    cfg = dict(width_rule="quantile", epochs=3)
    ds = tiny_dataset()
    full = train(tiny_config(**cfg), tmp_path / "full", dataset=ds)
    umax = full["history"]["epoch_max_u"][-1]
    train(tiny_config(**cfg), tmp_path / "part", dataset=ds, stop_after=1)
    train(tiny_config(**cfg), tmp_path / "part", dataset=ds, resume=True)
    np.testing.assert_allclose(_state(tmp_path / "full")["history"]["loss"],
                               _state(tmp_path / "part")["history"]["loss"], rtol=1e-6)
    assert full["model"].latent.width > 1                      # set by the rule, not 6
    with pytest.raises(ValueError, match="width_rule"):
        tiny_config(width_rule="max").check()


def test_loss_scale_is_a_global_factor(tmp_path):
    """loss × loss_ref_dim / D: Adamax is invariant to a global scale of the loss when
    neither its ε, weight decay nor clipping act, so the runs agree; with weight decay the
    decay's relative size changes and they differ."""
    ds = tiny_dataset()
    base = dict(weight_decay=0.0, grad_clip=1e9, epochs=2, adam_eps=1e-30)
    a = train(tiny_config(**base), tmp_path / "a", dataset=ds)["model"]
    b = train(tiny_config(loss_ref_dim=36 * 4.0, **base), tmp_path / "b", dataset=ds)["model"]
    torch.testing.assert_close(a.decoder.phi, b.decoder.phi, rtol=1e-3, atol=1e-5)
    base["weight_decay"] = 0.3
    c = train(tiny_config(**base), tmp_path / "c", dataset=ds)["model"]
    d = train(tiny_config(loss_ref_dim=36 / 100.0, **base), tmp_path / "d", dataset=ds)["model"]
    assert float((c.decoder.phi - d.decoder.phi).detach().abs().max()) > 1e-4
    with pytest.raises(ValueError, match="loss_ref_dim"):
        tiny_config(loss_ref_dim=0.0).check()


def test_ablation_rows_rerun_with_the_defaults_of_their_round():
    """train.ablation's variants pin the settings that changed since their rounds (clamps
    8/7, β scaled by (T_train/16)², temperature floor 0.01), so a regenerated first- or
    second-round row means what the table says; 'z' names the ZCA patches those rounds
    used."""
    from train import ablation

    assert ablation.parse_setting("128x4") == ("mnist", 128, 4)
    assert ablation.parse_setting("p512x16") == ("patches", 512, 16)
    assert ablation.parse_setting("z512x16") == ("patches-zca", 512, 16)
    with pytest.raises(ValueError, match="KxT_TRAIN"):
        ablation.parse_setting("q512")
    for name, overrides in ablation.VARIANTS.items():
        cfg = TrainConfig(**{**ablation.ROUNDS_1_2, **overrides})
        assert cfg.beta_t_power == 2.0 and cfg.temp_stop == 0.01, name
        if "clamp_u" not in overrides:
            assert (cfg.clamp_u, cfg.clamp_du) == (8.0, 7.0), name


def test_no_fit_prior_holds_u0_and_trains_the_rest(tmp_path):
    """--no-fit-prior (the authors' fit_prior=False): u0 ends exactly where it was drawn,
    while Φ and the other parameters still train; the default learns u0."""
    from networks import load_network

    ds = tiny_dataset()
    drawn = IPVAEModel(36, 16, input_shape=(6, 6), seed=0, width=6,
                       u0_init=tiny_config().u0_init).latent.u0.detach().numpy()
    for fit, folder in ((False, "held"), (True, "fit")):
        train(tiny_config(fit_prior=fit), tmp_path / folder, dataset=ds)
    held, fit = load_network(tmp_path / "held" / "model.npz"), load_network(tmp_path / "fit" / "model.npz")
    np.testing.assert_array_equal(held.u0, drawn.astype(np.float64))
    assert np.abs(fit.u0 - drawn).max() > 1e-4
    assert np.abs(held.phi).max() > 1e-3       # Φ starts at N(0, 1e-4²) and has learned
