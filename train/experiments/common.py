"""What every experiment shares: the run context, cached training, inference curves, outputs.

An experiment writes into one folder ``out``: its figures ``NAME_*.png``, its numbers
``NAME.json`` and its table ``NAME.md`` (all written atomically), and the models it
trains under ``out/models/`` (one folder per training configuration, named by a hash of
the configuration, so a rerun, or another experiment in the same folder, reuses them).

Curves against inference step t = 0 … T−1 (design §7), averaged over inputs:
``mse_spikes`` / ``mse_rates`` (MSE per pixel of the read-out of the counts z_t and of
the rates e^{u_t}), ``r2_spikes`` / ``r2_rates`` (per-input R², inputs of zero variance
left out), ``sparsity`` (fraction of zero counts), ``mean_rate`` (mean e^{u_t}, spikes
per step per neuron) and ``du`` (‖u_{t+1} − u_t‖₂ over the K latents, log-rate units).
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from networks.network import atomic_write, json_ready, write_json
from networks.progress import progress_bar

CURVES = ("mse_spikes", "mse_rates", "r2_spikes", "r2_rates", "sparsity", "mean_rate")
"""Per-step curves every inference run yields (plus ``du`` at ``du_steps``)."""


@dataclass
class Context:
    """One experiment run: output folder, size, progress, seed, and its own log lines."""

    out: Path
    quick: bool = False
    progress: bool = True
    seed: int = 0
    started: float = field(default_factory=time.perf_counter)

    def log(self, message: str) -> None:
        """Print a stage line (always; progress bars are separate)."""
        from tqdm.auto import tqdm

        tqdm.write(f"[{time.perf_counter() - self.started:7.1f} s] {message}")

    def path(self, name: str) -> Path:
        return Path(self.out) / name


# --------------------------------------------------------------------------- training


def config_key(cfg) -> str:
    """A short hash of the settings that change the trained parameters."""
    from train.config import RUN_INDEPENDENT

    d = {k: v for k, v in cfg.to_dict().items() if k not in RUN_INDEPENDENT}
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


@dataclass
class Trained:
    """A trained model: its folder, config, training metrics, and the network file (linear
    decoder) or the torch model (``mlp``/``conv``, which cannot be exported, design §1.1)."""

    folder: Path
    cfg: object
    metrics: dict
    net: object = None
    model: object = None
    reused: bool = False

    @property
    def label(self) -> str:
        return f"{self.cfg.decoder}, T_train={self.cfg.t_train}"


def trained(ctx: Context, cfg, dataset=None, test_dataset=None) -> Trained:
    """Train ``cfg`` through ``train.trainer.train`` into ``out/models/…``, or reuse it.

    A finished run in its folder is reused (said so in the output); an interrupted one is
    resumed from its checkpoint.  ``eval_steps`` is forced to 0 (the experiments evaluate).
    """
    import torch

    from train.checkpoint import CHECKPOINT
    from train.trainer import train

    cfg.eval_steps = 0
    cfg.progress = ctx.progress
    cfg.check()
    name = (f"{cfg.data}-{cfg.decoder}-T{cfg.t_train}-K{cfg.latents}-beta{cfg.beta:g}"
            f"-{config_key(cfg)}")
    folder = ctx.path("models") / name
    artefact_name = "model.npz" if cfg.decoder == "linear" else "model.pt"
    if not (folder / artefact_name).exists():
        folder = same_run(ctx.path("models"), cfg, artefact_name) or folder
    artefact = folder / artefact_name
    reused = artefact.exists() and (folder / "metrics.json").exists()
    if reused:
        ctx.log(f"reusing the cached model {folder} (delete the folder to retrain)")
    else:
        resume = (folder / CHECKPOINT).exists()
        ctx.log(f"{'resuming' if resume else 'training'} {cfg.decoder} decoder on {cfg.data}: "
                f"K={cfg.latents}, T_train={cfg.t_train}, beta={cfg.beta:g}, "
                f"{cfg.epochs} epochs -> {folder}")
        train(cfg, folder, resume=resume, dataset=dataset, test_dataset=test_dataset)
    metrics = json.loads((folder / "metrics.json").read_text())
    out = Trained(folder, cfg, metrics, reused=reused)
    if metrics.get("collapsed"):
        ctx.log(f"WARNING: {name} collapsed in training ({metrics.get('collapse_reasons')})")
    if cfg.decoder == "linear":
        from networks import load_network

        out.net = load_network(artefact)
    else:
        from train.model import IPVAEModel

        src = dataset if dataset is not None else _dataset(cfg.data, "train")
        shape = tuple(src.input_shape)
        model = IPVAEModel(int(np.prod(shape)), cfg.latents, input_shape=shape,
                           decoder=cfg.decoder, clamp_u=cfg.clamp_u, clamp_du=cfg.clamp_du,
                           width=cfg.width, seed=cfg.seed)
        model.load_state_dict(torch.load(artefact, map_location="cpu", weights_only=True))
        out.model = model
    return out


def same_run(models: Path, cfg, artefact: str):
    """A finished run folder under ``models`` trained with ``cfg``'s settings, else None.

    The hash in a folder's name changes when the trainer gains a setting; a run saved
    before still matches when every setting it recorded equals ``cfg``'s and every setting
    it lacks is at its default in ``cfg`` (so it would have trained the same)."""
    from train.config import RUN_INDEPENDENT, TrainConfig

    want = {k: v for k, v in cfg.to_dict().items() if k not in RUN_INDEPENDENT}
    default = TrainConfig().to_dict()
    for folder in sorted(models.glob(f"{cfg.data}-{cfg.decoder}-T{cfg.t_train}-*")):
        try:
            saved = json.loads((folder / "metrics.json").read_text())["config"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not (folder / artefact).exists():
            continue
        if all(saved[k] == v if k in saved else v == default[k] for k, v in want.items()):
            return folder
    return None


def health(t: Trained) -> dict:
    """The training run's last held-out check (collapse detection), JSON-ready."""
    m = t.metrics
    return dict(collapsed=bool(m.get("collapsed", False)),
                collapse_reasons=m.get("collapse_reasons", []),
                held_out_r2_at_T_train=(m.get("held_out") or {}).get("r2"),
                epochs=m.get("epochs_done"), train_seconds=m.get("train_seconds"),
                folder=str(t.folder), reused=t.reused)


_DATA_CACHE: dict = {}


def _dataset(name, split, **kw):
    from train.data import load_dataset

    key = (name, split, tuple(sorted(kw.items())))
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = load_dataset(name, split, **kw)
    return _DATA_CACHE[key]


def dataset(name, split, n=None, **kw):
    """``train.data.load_dataset`` (cached in this process), its first ``n`` inputs."""
    ds = _dataset(name, split, **kw)
    return ds.head(n) if n else ds


# --------------------------------------------------------------------------- inference


def log_grid(steps: int, marks=()) -> np.ndarray:
    """Steps in [0, steps): ~6 per decade, 0, the marks and T−1."""
    from train.evaluate import log_steps

    grid = np.union1d(log_steps(steps, per_decade=6), [m for m in marks if 0 <= m < steps])
    return grid.astype(int)


def network_curves(net, x, steps: int, *, seed: int = 0, offset: int = 0, batch: int = 100,
                   progress: bool = True, desc: str = "reference", extra_record=()) -> dict:
    """Inference curves of a network file on the reference simulator (true Poisson counts).

    x (N, D).  Returns the curves of :data:`CURVES`, each (T,), ``du`` (S,) the mean over
    inputs of ‖u_{t+1} − u_t‖₂ at ``du_steps`` (S,) (log-spaced: consecutive steps are
    recorded in pairs), and ``u`` {t: (N, K) potentials} at the ``extra_record`` steps
    (t = T is the final potential).
    """
    from train.evaluate import r2_curve, run_chunked

    x = np.asarray(x, dtype=np.float64)
    grid = log_grid(steps)
    extra = [int(s) for s in extra_record]
    record = np.union1d(np.union1d(grid, (grid + 1)[grid + 1 < steps]),
                        [s for s in extra if s < steps]).astype(int)
    run = run_chunked(net, x, steps, seed=seed, batch=batch, record=record, progress=progress,
                      desc=desc, offset=offset)
    rec = list(run["steps"])
    u = run["u"]  # (S + 1, N, K): recorded steps, then u_T

    def u_at(t):
        return u[-1] if t == steps else u[rec.index(t)]

    du_steps = [int(t) for t in grid if (t + 1 in rec) or (t + 1 == steps)]
    du = [float(np.linalg.norm(u_at(t + 1) - u_at(t), axis=1).mean()) for t in du_steps]
    out = dict(mse_spikes=run["step_mse"].mean(axis=1), mse_rates=run["step_rate_mse"].mean(axis=1),
               r2_spikes=r2_curve(x, run["step_mse"]), r2_rates=r2_curve(x, run["step_rate_mse"]),
               sparsity=run["step_zeros"].mean(axis=1), mean_rate=run["step_rate"].mean(axis=1),
               du_steps=np.asarray(du_steps), du=np.asarray(du), steps=steps,
               u={t: u_at(t) for t in extra}, how="network file on the reference simulator")
    return out


def torch_curves(model, x, steps: int, *, seed: int = 0, offset: int = 0, batch: int = 50,
                 progress: bool = True, desc: str = "torch model") -> dict:
    """Inference curves of a torch ``IPVAEModel`` at temperature 0 (true Poisson counts).

    For decoders that cannot be exported (``mlp``, ``conv``): the feedback is the
    decoder Jacobian's transpose times the weighted error, J(z_t)ᵀ(x − dec(z_t))/σ²,
    then the same membrane update and clamps as design §1.1.  The counts use the shared
    noise of design §2.2 (input n: stream (seed, offset + n)) and the shared inverse CDF.
    The rate read-out is dec(e^{u_t}).  x (N, D); returns what :func:`network_curves`
    returns, with ``du`` at every step.
    """
    import copy

    import torch

    from networks.noise import uniform_blocks
    from neurons.torch_step import poisson_counts
    from train.evaluate import r2_curve

    m = copy.deepcopy(model).double().eval()
    m.set_schedule(0.0)
    for p in m.parameters():
        p.requires_grad_(False)
    x = np.asarray(x, dtype=np.float64)
    n, k = x.shape[0], m.n_latents
    mse_s, mse_r = np.zeros((steps, n)), np.zeros((steps, n))
    zeros, rate_m, du = np.zeros((steps, n)), np.zeros((steps, n)), np.zeros((steps, n))
    inv_var = torch.exp(-2.0 * m.log_sigma)
    with progress_bar(total=n * steps, desc=desc, unit="input-step", enabled=progress) as bar:
        for lo in range(0, n, batch):
            xb = torch.as_tensor(x[lo:lo + batch])
            nb = xb.shape[0]
            u = m.latent.u0.expand(nb, k).clone()
            t = 0
            for block in uniform_blocks(seed, steps, nb, k, offset + lo):
                for xi in block:
                    rate = torch.exp(u)
                    z = poisson_counts(xi, rate).requires_grad_(True)
                    with torch.enable_grad():
                        recon = m.decoder(z)
                        err = (xb - recon) * inv_var
                        fb, = torch.autograd.grad(recon, z, grad_outputs=err)
                    with torch.no_grad():
                        d = xb - recon
                        mse_s[t, lo:lo + nb] = (d * d).mean(1).numpy()
                        dr = xb - m.decoder(rate)
                        mse_r[t, lo:lo + nb] = (dr * dr).mean(1).numpy()
                        zeros[t, lo:lo + nb] = (z == 0).double().mean(1).numpy()
                        rate_m[t, lo:lo + nb] = rate.mean(1).numpy()
                        u_next = m.latent.integrate(fb, u)
                        du[t, lo:lo + nb] = torch.linalg.norm(u_next - u, dim=1).numpy()
                        u = u_next
                    t += 1
                    bar.update(nb)
    return dict(mse_spikes=mse_s.mean(1), mse_rates=mse_r.mean(1), r2_spikes=r2_curve(x, mse_s),
                r2_rates=r2_curve(x, mse_r), sparsity=zeros.mean(1), mean_rate=rate_m.mean(1),
                du_steps=np.arange(steps), du=du.mean(1), steps=steps, u={},
                how="torch model at temperature 0 (true Poisson counts, Jacobian-transpose "
                    "feedback; not exportable to the spiking backends)")


def curves(t: Trained, x, steps, *, seed=0, progress=True, desc=None, **kw) -> dict:
    """:func:`network_curves` for a linear model, :func:`torch_curves` otherwise."""
    if t.net is not None:
        return network_curves(t.net, x, steps, seed=seed, progress=progress,
                              desc=desc or t.label, **kw)
    return torch_curves(t.model, x, steps, seed=seed, progress=progress, desc=desc or t.label)


def at(curve, t) -> float:
    """A curve's value at step t (clipped to its last step)."""
    curve = np.asarray(curve)
    return float(curve[min(int(t), len(curve) - 1)])


def curves_json(c: dict, marks=(0, 3, 4, 15, 16, 99, 100, 999)) -> dict:
    """The curves as JSON: full arrays plus the values at the marked steps."""
    steps = c["steps"]
    ts = sorted({t for t in marks if t < steps} | {steps - 1})
    return dict(how=c["how"], steps=steps,
                at={name: {str(t): at(c[name], t) for t in ts} for name in CURVES},
                curves={name: [float(v) for v in c[name]] for name in CURVES},
                du_steps=[int(s) for s in c["du_steps"]], du=[float(v) for v in c["du"]])


# --------------------------------------------------------------------------- outputs


def md_table(headers, rows) -> str:
    """A Markdown table; floats with 4 significant digits, None as '–'."""
    def cell(v):
        if v is None:
            return "–"
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, (float, np.floating)):
            return "nan" if not math.isfinite(v) else f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_outputs(ctx: Context, name: str, numbers: dict, markdown: str) -> list[Path]:
    """Write ``NAME.json`` and ``NAME.md`` into the output folder (atomically)."""
    numbers = dict(numbers, experiment=name, quick=ctx.quick, seed=ctx.seed,
                   seconds=round(time.perf_counter() - ctx.started, 1))
    js = write_json(ctx.path(f"{name}.json"), json_ready(numbers))
    md = atomic_write(ctx.path(f"{name}.md"), lambda f: f.write(markdown.encode()))
    return [js, md]


def claim(text: str, holds: bool, **numbers) -> dict:
    """One claim check: what is claimed, whether it holds, and the numbers that decide it."""
    return dict(claim=text, holds=bool(holds), **numbers)


def claims_md(claims) -> str:
    return md_table(["claim", "holds"], [(c["claim"], c["holds"]) for c in claims])
