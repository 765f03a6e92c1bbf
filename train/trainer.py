"""Training loop for the iP-VAE (design §1), single process or torch DDP.

``train(config, out)`` trains :class:`train.model.IPVAEModel` on a data set and
writes to the folder ``out``:

- ``checkpoint.pt`` after every epoch (atomic; only rank 0 writes; plain data,
  loaded weights-only: ``train.checkpoint``), from which ``resume=True``
  continues exactly where it stopped (a config that would change the run is an
  error naming the differing settings);
- ``model.npz``, the network file (linear decoder), whose ``meta`` holds the
  data set, its preprocessing, the config and the metrics;
- ``metrics.json``; ``dictionary.png``, ``loss.png``, ``inference.png``
  (R² and sparsity against inference step).

Optimisation follows the authors: Adamax (betas 0.9/0.999, eps 1e-8, weight
decay 3e-4, lr 2e-3 on MNIST), a linear warm-up then cosine decay to 1e-5,
gradient-norm clipping at 500, β warmed up linearly over the first 10% of
iterations, the sampler temperature annealed linearly over the first half (1 → 0.1
here, 1 → 0.01 in the authors' code: below), and the clamp ceilings ramped up from 2
over the first 10%.  β is given for T_train = 16 and scaled by T_train/16
(``beta_t_ref``, ``beta_t_power``; see :func:`effective_beta`): unscaled, T_train = 4
and 8 collapsed (docs/training-ablation.md).  After every epoch :mod:`train.health` checks on
held-out inputs that the model has not collapsed.  With ``time_budget`` the number
of epochs is refitted to the budget after every epoch (:func:`budget_epochs`).

Defaults where ipvae departs from the authors, each measured in
docs/training-ablation.md: β = 8 at T_train = 16 (β = 24 collapses K = 128 and
learns almost nothing on natural patches in the matrix's budgets); the scaling power 1
(power 2 left T_train = 4 at β 0.5, whose inference bursts past the horizon); clamp
ceilings c_u = 5, c_du = 3 (with the authors' 8/7 or 10/10 a high-rate latent can
start a growing oscillation hundreds of steps past the horizon and run to the
ceiling); the temperature's floor 0.1 (the authors anneal to 0.01, at which the
15-minute gate's training diverged when the ramp ended).  The exact Poisson KL is the
default: the authors' posterior-weighted KL (``kl_form="posterior"``) at β = 24 learned
far slower in the same time (training R² −0.12 vs 0.36 for the exact form after 5
epochs).  The authors' other choices
(separate draws for the loss and the feedback, the loss scaled by 256/D, the sampler
width by the Poisson quantile) are options, measured in docs/training-ablation.md.

Determinism: the batch order comes from ``DistributedSampler(seed, epoch)`` and
each sample's sampling noise from its own stream keyed by (seed, epoch, index
in the data set), so a run is the same whatever the number of processes
(``torchrun --nproc_per_node P``: each rank takes batch/P of every batch, DDP
averages the gradients) and a resumed run is the same as an uninterrupted one.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np

import neurons  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
import torch
from tqdm.auto import tqdm

from networks.progress import progress_bar

from networks.network import save_network, write_json
from networks.plots import pyplot, save_figure
from train.checkpoint import (CHECKPOINT, check_resume, load_checkpoint,  # noqa: F401
                              resume_config, save_checkpoint, saved_config)
from train.config import TrainConfig
from train.health import describe, held_out_health, held_out_inputs
from train.model import IPVAEModel
from train.noise import training_noise

HEALTH_N = 200
"""Held-out inputs collapse detection runs on after every epoch."""


# --- schedules (i: global iteration, n: total iterations) ----------------------------------
def ramp(i: int, n: int, fraction: float) -> float:
    """Linear 0 → 1 over the first ``fraction`` of n iterations, then 1."""
    span = fraction * n
    return 1.0 if span <= 0 else min(1.0, (i + 1) / span)


def lr_factor(i: int, n: int, cfg: TrainConfig) -> float:
    """Linear warm-up then cosine decay from 1 to lr_min/lr."""
    w = int(round(cfg.warmup * n))
    if i < w:
        return (i + 1) / w
    p = (i - w) / max(1, n - w)
    floor = cfg.lr_min / cfg.lr
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, p)))


def effective_beta(cfg: TrainConfig) -> float:
    """β, or with ``beta_t_ref`` set, β·(T_train/beta_t_ref)^beta_t_power.

    The loss averages KL_t over the T_train steps; with power 1 (the default) the KL
    term is β/beta_t_ref times the KL summed over the steps, the KL of the whole path,
    whatever T_train.  A potential climbing the same distance in T steps pays
    ≈ Σ_t e^u δ²/2 with δ ∝ 1/T, so the averaged KL of a small climb grows like 1/T²
    as T_train shrinks: power 2 keeps that balance, but leaves short unrolls so weak a
    β that their inference bursts past the horizon (docs/training-ablation.md).
    """
    if cfg.beta_t_ref is None:
        return cfg.beta
    return cfg.beta * (cfg.t_train / cfg.beta_t_ref) ** cfg.beta_t_power


def schedule(i: int, n: int, cfg: TrainConfig) -> dict:
    """β, temperature and clamp ceilings at iteration i of n."""
    a = min(1.0, i / max(1.0, cfg.temp_anneal * n))
    c = ramp(i, n, cfg.clamp_anneal)
    return dict(beta=effective_beta(cfg) * max(1e-4, ramp(i, n, cfg.beta_warmup)),
                temperature=cfg.temp_start + (cfg.temp_stop - cfg.temp_start) * a,
                clamp_u=cfg.clamp_start + (cfg.clamp_u - cfg.clamp_start) * c,
                clamp_du=cfg.clamp_start + (cfg.clamp_du - cfg.clamp_start) * c)


def budget_epochs(budget: float, seconds: float, epochs: int) -> int:
    """How many epochs in all fit a time budget of ``budget`` seconds, after ``epochs``
    epochs took ``seconds``: those done plus as many more as the remaining time holds at
    their mean pace (at least the ones done, at least 1).  Refitted after every epoch, so
    the schedule (which spans the planned epochs) ends with the budget however the pace
    changes; as the mean pace moves slowly, so does the schedule."""
    pace = seconds / max(1, epochs)
    return max(1, epochs, epochs + int((budget - seconds) / pace) if pace > 0 else epochs)


def sampler_width(max_u: float | None, clamp_u: float) -> int:
    """The relaxed sampler's width under ``width_rule="quantile"``: the Poisson 1 − 1e-3
    quantile (+1) of the largest rate e^{max_u} seen in the last iteration (the current
    ceiling e^{clamp_u} before the first), as the authors size their sampler.  The sampler
    walks each neuron's arrivals only up to time 1 + 20τ (``neurons.relaxed``), so a wide
    W costs only where a rate is high."""
    from neurons.relaxed import width_needed

    u = clamp_u if max_u is None else min(float(max_u), clamp_u)
    return width_needed(math.exp(u))


def init_sigma(model, sigma_init, x: torch.Tensor):
    """Set σ (every pixel) to ``sigma_init``, or with "data" to the std of the inputs x (N, D)."""
    from networks.network import LOG_SIGMA_LIMIT

    sigma = float(x.double().std(correction=0)) if sigma_init == "data" else float(sigma_init)
    log_sigma = max(-0.95 * LOG_SIGMA_LIMIT, min(0.95 * LOG_SIGMA_LIMIT, math.log(sigma)))
    with torch.no_grad():
        model.log_sigma_raw.fill_(LOG_SIGMA_LIMIT * math.atanh(log_sigma / LOG_SIGMA_LIMIT))


# --- distributed ----------------------------------------------------------------------------
def dist_info():
    """(rank, world size); under torchrun the gloo process group is set up (and torn down
    at exit) by :func:`networks.distributed.rank_world`, as for evaluation."""
    from networks.distributed import rank_world

    return rank_world()


def _load_data(cfg: TrainConfig):
    from train.data import load_dataset

    train = load_dataset(cfg.data, "train", seed=cfg.seed, rotate=cfg.rotate,
                         data_dir=cfg.data_dir)
    if cfg.n_train is not None:
        train = train.head(cfg.n_train)
    return train


def _held_out(cfg: TrainConfig, data, dataset, test_dataset):
    """(x (n, D), where from): the inputs collapse detection runs on each epoch: the test
    split's first ``HEALTH_N`` (``test_dataset`` if given), or, when the caller passed
    its own training ``dataset`` and no test set, that set's first inputs."""
    if test_dataset is None and dataset is None:
        from train.data import load_dataset

        test_dataset = load_dataset(cfg.data, "test", seed=cfg.seed, rotate=cfg.rotate,
                                    data_dir=cfg.data_dir)
    if test_dataset is not None:
        return held_out_inputs(test_dataset, HEALTH_N), "test split"
    return held_out_inputs(data, HEALTH_N), "training inputs (no test set given)"


def _health_postfix(history) -> dict:
    if not history["health"]:
        return {}
    h = history["health"][-1]
    return dict(held_R2=f"{h['r2']:.3f}", active=f"{h['active']:.2f}",
                **({"COLLAPSED": "yes"} if h["collapsed"] else {}))


# --- main loop ------------------------------------------------------------------------------
def train(cfg: TrainConfig, out, *, resume: bool = False, dataset=None, test_dataset=None,
          stop_after: int | None = None) -> dict:
    """Train (or resume) a run in folder ``out``; returns the metrics dict.

    dataset / test_dataset : ``train.data.Dataset`` objects to use instead of
    loading ``cfg.data`` (tests pass tiny ones).  stop_after : run at most this
    many epochs in this call (the schedule still spans ``cfg.epochs``), leaving
    a checkpoint to resume from.
    """
    cfg.check()
    out = Path(out)
    rank, world = dist_info()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    if cfg.batch % world:
        raise ValueError(f"batch {cfg.batch} must be divisible by the number of processes {world}")
    ckpt_path = out / CHECKPOINT
    state = None
    if resume:
        state = load_checkpoint(ckpt_path)
        cfg = check_resume(cfg, saved_config(state, ckpt_path), ckpt_path)
    elif ckpt_path.exists():
        raise RuntimeError(f"{ckpt_path} exists: pass resume=True (--resume) to continue that run, "
                           "or choose another --out")

    data = dataset if dataset is not None else _load_data(cfg)
    x_all = torch.as_tensor(np.asarray(data.x, dtype=np.float32))
    n, d = x_all.shape
    if n < cfg.batch:
        raise ValueError(f"data set has {n} inputs, fewer than one batch of {cfg.batch}")
    input_shape = tuple(getattr(data, "input_shape", (d,)))

    model = IPVAEModel(d, cfg.latents, input_shape=input_shape, decoder=cfg.decoder,
                       clamp_u=cfg.clamp_u, clamp_du=cfg.clamp_du, width=cfg.width, seed=cfg.seed,
                       u0_init=cfg.u0_init)
    if state is None:
        init_sigma(model, cfg.sigma_init, x_all)
    model.latent.u0.requires_grad_(cfg.fit_prior)
    opt = torch.optim.Adamax([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                             betas=tuple(cfg.adam_betas),
                             eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
    from torch.utils.data.distributed import DistributedSampler

    sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True,
                                 seed=cfg.seed, drop_last=True)
    local_batch = cfg.batch // world
    iters_per_epoch = math.ceil(len(sampler) / local_batch)
    history = dict(loss=[], epoch_loss=[], epoch_r2=[], epoch_zeros=[], epoch_max_u=[],
                   epoch_seconds=[], lr=[], health=[])
    start_epoch, total_epochs, train_seconds = 0, cfg.epochs, 0.0
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
            raise ValueError(f"{ckpt_path}: checkpoint does not fit its config "
                             f"({first[:200]})") from None
        start_epoch, total_epochs = state["epoch"], state["total_epochs"]
        history, train_seconds = state["history"], state["train_seconds"]
        history.setdefault("health", [])
    x_held, held_from = (_held_out(cfg, data, dataset, test_dataset) if rank == 0
                         else (None, None))
    net_model = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net_model = DistributedDataParallel(model)

    def total_iters():
        return total_epochs * iters_per_epoch

    loss_scale = 1.0 if cfg.loss_ref_dim is None else cfg.loss_ref_dim / d
    max_u = history["epoch_max_u"][-1] if history["epoch_max_u"] else None  # last iteration's
    epoch = start_epoch
    end_epoch = total_epochs if stop_after is None else min(total_epochs, start_epoch + stop_after)
    t_run = time.perf_counter()
    budget_stopped = False
    while epoch < end_epoch:
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        order = torch.as_tensor(list(sampler))
        sums = np.zeros(4)
        bar = progress_bar(range(iters_per_epoch), desc=f"epoch {epoch + 1}/{total_epochs}",
                           enabled=cfg.progress and rank == 0, leave=False)
        for b in bar:
            it = epoch * iters_per_epoch + b
            s = schedule(it, total_iters(), cfg)
            model.set_schedule(s["temperature"], s["clamp_u"], s["clamp_du"])
            lr = cfg.lr * lr_factor(it, total_iters(), cfg)
            for group in opt.param_groups:
                group["lr"] = lr
            idx = order[b * local_batch:(b + 1) * local_batch]
            if cfg.width_rule == "quantile":   # W follows the largest rate of the last iteration
                model.latent.width = sampler_width(max_u, s["clamp_u"])
            width = model.latent.width
            noise = training_noise(cfg.seed, epoch, idx, cfg.latents, width)
            loss_noise = (training_noise(cfg.seed, epoch, idx, cfg.latents, width, stream=1)
                          if cfg.separate_draws else None)
            res = net_model(x_all[idx], cfg.t_train, noise, beta=s["beta"], kl_form=cfg.kl_form,
                            r2_steps="last", loss_noise=loss_noise, loss_steps=cfg.loss_steps)
            opt.zero_grad(set_to_none=True)
            (res["loss"] * loss_scale if loss_scale != 1.0 else res["loss"]).backward()
            if it < cfg.sigma_warmup * total_iters():
                model.log_sigma_raw.grad = None                   # σ held
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            loss = float(res["loss"].detach())
            if not math.isfinite(loss):
                raise RuntimeError(f"loss became {loss} at epoch {epoch + 1}, iteration {b}; "
                                   "lower --lr or raise --beta")
            r2, zeros, umax = (float(res["r2"][-1].mean()), float(res["zeros"][-1].mean()),
                               float(res["max_u"].max()))
            if cfg.width_rule == "quantile" and world > 1:   # one width on every rank
                t_u = torch.tensor([umax])
                torch.distributed.all_reduce(t_u, op=torch.distributed.ReduceOp.MAX)
                umax = float(t_u)
            max_u = umax
            sums += (loss, r2, zeros, 1.0)
            history["loss"].append(loss)
            bar.set_postfix(loss=f"{loss:.1f}", R2=f"{r2:.3f}", sparsity=f"{zeros:.3f}",
                            T=f"{s['temperature']:.2f}", **_health_postfix(history))
        history["lr"].append(lr)
        history["epoch_loss"].append(float(sums[0] / sums[3]))
        history["epoch_r2"].append(float(sums[1] / sums[3]))
        history["epoch_zeros"].append(float(sums[2] / sums[3]))
        history["epoch_max_u"].append(umax)
        history["epoch_seconds"].append(time.perf_counter() - t0)
        train_seconds += time.perf_counter() - t0
        epoch += 1
        if rank == 0:
            history["health"].append(held_out_health(model, x_held, cfg.t_train, cfg.seed))
        if rank == 0 and cfg.progress:
            tqdm.write(f"epoch {epoch}/{total_epochs}: loss {history['epoch_loss'][-1]:.2f} "
                       f"R² {history['epoch_r2'][-1]:.3f} sparsity {history['epoch_zeros'][-1]:.3f} "
                       f"({history['epoch_seconds'][-1]:.1f} s); "
                       f"{describe(history['health'][-1])}")
        if cfg.time_budget is not None:
            if world > 1:  # all ranks must agree on when to stop
                t = torch.tensor([train_seconds])
                torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
                train_seconds_all = float(t)
            else:
                train_seconds_all = train_seconds
            fitted = budget_epochs(cfg.time_budget * 60.0, train_seconds_all, epoch)
            if fitted != total_epochs:
                total_epochs = min(cfg.epochs, fitted)
                end_epoch = total_epochs if stop_after is None else min(total_epochs,
                                                                        start_epoch + stop_after)
            if epoch >= total_epochs and total_epochs < cfg.epochs:
                budget_stopped = True
                if rank == 0:
                    tqdm.write(f"time budget of {cfg.time_budget} min reached after "
                               f"{epoch} epochs")
        if rank == 0:
            save_checkpoint(ckpt_path, dict(model=model.state_dict(), optimizer=opt.state_dict(),
                                            epoch=epoch, total_epochs=total_epochs,
                                            config=cfg.to_dict(), history=history,
                                            train_seconds=train_seconds))
    images = len(sampler) * world * (epoch - start_epoch)
    run_seconds = time.perf_counter() - t_run
    metrics = dict(epochs_done=epoch, epochs_planned=total_epochs, stopped_by_budget=budget_stopped,
                   train_seconds=train_seconds,
                   images_per_second=images / run_seconds if epoch > start_epoch else None,
                   final_train_loss=history["epoch_loss"][-1] if history["epoch_loss"] else None,
                   final_train_r2=history["epoch_r2"][-1] if history["epoch_r2"] else None,
                   final_train_sparsity=history["epoch_zeros"][-1] if history["epoch_zeros"] else None,
                   processes=world)
    if rank == 0 and history["health"]:
        last = history["health"][-1]
        metrics.update(held_out=dict(last, inputs=held_from), collapsed=last["collapsed"],
                       collapse_reasons=last["reasons"])
    model.set_schedule(0.0)
    finished = epoch >= total_epochs or budget_stopped
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        if finished:
            metrics.update(finish(model, cfg, out, data, history, test_dataset, metrics))
    if world > 1:
        torch.distributed.barrier()
    metrics["finished"] = finished
    return dict(metrics=metrics, model=model, history=history, config=cfg)


def finish(model, cfg, out, data, history, test_dataset, metrics) -> dict:
    """Export the network, evaluate it as deployed, write metrics.json and the PNGs."""
    extra = {}
    meta = dict(dataset=dict(getattr(data, "meta", {})), config=cfg.to_dict(), training=metrics)
    plot_loss(history, out / "loss.png")
    if cfg.decoder != "linear":
        torch.save(model.state_dict(), out / "model.pt")
        extra["note"] = f"{cfg.decoder} decoder: saved model.pt (not exportable to the network file)"
        write_json(out / "metrics.json", {**metrics, **extra, "config": cfg.to_dict()})
        return extra
    net = model.to_network(meta)
    save_network(net, out / "model.npz")  # before evaluating, so a failed evaluation loses nothing
    plot_dictionary(net, out / "dictionary.png")
    if cfg.eval_steps and cfg.eval_steps > 0:
        from train.data import load_dataset
        from train.evaluate import evaluate, summary, to_json

        test = test_dataset
        if test is None:
            test = load_dataset(cfg.data, "test", seed=cfg.seed, rotate=cfg.rotate,
                                data_dir=cfg.data_dir)
            if cfg.eval_n:
                test = test.head(cfg.eval_n)
        probe = data if getattr(data, "y", None) is not None and test.y is not None else None
        res = evaluate(net, test, steps=cfg.eval_steps, seed=cfg.seed, probe_train=probe,
                       progress=cfg.progress)
        extra["evaluation"] = summary(res)
        plot_inference(res["r2_spikes"], res["sparsity"], out / "inference.png",
                             r2_rates=res["r2_rates"])
        write_json(out / "evaluation.json", to_json(res))
    meta["metrics"] = {**metrics, **extra}
    net.meta = meta
    save_network(net, out / "model.npz")
    write_json(out / "metrics.json", {**metrics, **extra, "config": cfg.to_dict()})
    return extra


def plot_loss(history, path):
    """Training loss per iteration (and its per-epoch mean) to a PNG."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 3.5))
    loss = np.asarray(history["loss"])
    ax.plot(np.arange(1, len(loss) + 1), loss, lw=0.5, alpha=0.5, label="iteration")
    if history["epoch_loss"]:
        per = len(loss) // len(history["epoch_loss"])
        ax.plot(per * np.arange(1, len(history["epoch_loss"]) + 1), history["epoch_loss"],
                "o-", ms=3, label="epoch mean")
    lo, hi = np.percentile(loss, [0, 99]) if loss.size else (0, 1)
    ax.set_ylim(lo - 0.05 * abs(lo), hi + 0.05 * abs(hi))
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (NLL + β·KL, nats/input)")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def plot_dictionary(net, path, n=100):
    """The n dictionary elements (columns of Φ) with the largest norm, as image tiles."""
    plt = pyplot()

    shape = net.input_shape if len(net.input_shape) == 2 else None
    if shape is None:
        side = int(math.isqrt(net.input_dim))
        shape = (side, side) if side * side == net.input_dim else (1, net.input_dim)
    order = np.argsort(-np.linalg.norm(net.phi, axis=0))[:n]
    cols = int(math.ceil(math.sqrt(len(order))))
    rows = int(math.ceil(len(order) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.8, rows * 0.8), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, k in zip(axes.ravel(), order):
        w = net.phi[:, k].reshape(shape)
        m = np.abs(w).max() or 1.0
        ax.imshow(w, cmap="RdBu_r", vmin=-m, vmax=m)
    fig.suptitle("dictionary Φ (largest-norm elements)")
    save_figure(fig, path, dpi=90)


def plot_inference(r2, sparsity, path, r2_rates=None):
    """R² (spikes, and rates if given) and sparsity against inference step (log axis)."""
    plt = pyplot()

    t = np.arange(1, len(r2) + 1)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.semilogx(t, r2, label="spikes")
    if r2_rates is not None:
        a.semilogx(t, r2_rates, label="rates")
    a.set_xlabel("inference step t + 1")
    a.set_ylabel("R²")
    a.legend()
    b.semilogx(t, sparsity)
    b.set_xlabel("inference step t + 1")
    b.set_ylabel("sparsity (fraction of zero counts)")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
