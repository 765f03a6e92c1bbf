"""Training ablations for issue 16 (which settings collapse, which defaults learn), as Markdown.

    python -m train.ablation [--epochs 20] [--settings 128x4 p512x16 ...] [--only NAME ...]
                             [--horizon 1000] [--eval-n 200] [--out runs/training-ablation.md]

Each variant (a set of ``TrainConfig`` overrides, named in ``VARIANTS``) trains
at each setting ``KxT`` (embedded MNIST, K latents, T_train) or ``pKxT``
(natural patches) for a fixed number of epochs (deterministic whatever the
machine's load; one training at a time), then is measured on held-out inputs
as deployed: the trainer's last collapse check (``train.health``, 200 inputs,
exact counts, t = T_train) and, with ``--horizon`` (default 1000), the exported
network run by the reference simulator to that step with true Poisson counts
on the first ``--eval-n`` held-out inputs (``train.evaluate``): R² from spikes
at t = T_train, 160 and the horizon, and the share of zero counts at T_train
and the horizon.  Rows are appended to ``--out`` as they finish;
docs/training-ablation.md holds the tables measured for issue 16.

Every variant states β explicitly, and runs on :data:`ROUNDS_1_2` (the defaults the
first two rounds had where the trainer's moved since), so its rows mean the same
whatever the trainer's defaults are.  The third round is ``python -m
tests_quality.matrix CELL --set KEY=VALUE`` (the matrix's cells under their budgets).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

ROUNDS_1_2 = dict(clamp_u=8.0, clamp_du=7.0, beta_t_power=2.0, temp_stop=0.01)
"""The defaults of the first two rounds that changed since (docs/training-ablation.md):
the clamp ceilings 8/7, β scaled by (T_train/16)² and the temperature's floor 0.01; a
variant's own setting wins."""
PATCHES = {"p": "patches", "z": "patches-zca"}
"""Setting prefixes of natural patches: ``p`` today's pipeline, ``z`` the ZCA patches the
first two rounds used (``p512x16`` then meant what ``z512x16`` means now)."""

VARIANTS = {
    # --- the first round (t = T_train only; docs/training-ablation.md, first table)
    "beta=24 unscaled (the defaults before)": dict(beta=24.0, beta_t_ref=None),
    "sigma_init=data (unscaled)": dict(beta=24.0, sigma_init="data", beta_t_ref=None),
    "sigma held 1 (sigma_warmup=1) (unscaled)": dict(beta=24.0, sigma_warmup=1.0,
                                                     beta_t_ref=None),
    "beta=8 (unscaled)": dict(beta=8.0, beta_t_ref=None),
    "beta=4 (unscaled)": dict(beta=4.0, beta_t_ref=None),
    "beta=8, sigma_init=data (unscaled)": dict(beta=8.0, sigma_init="data", beta_t_ref=None),
    "beta=4, sigma_init=data (unscaled)": dict(beta=4.0, sigma_init="data", beta_t_ref=None),
    "beta=2 (unscaled)": dict(beta=2.0, beta_t_ref=None),
    "beta=1 (unscaled)": dict(beta=1.0, beta_t_ref=None),
    "u0_init=-2 (unscaled)": dict(beta=24.0, u0_init=-2.0, beta_t_ref=None),
    "u0_init=-2, beta=4 (unscaled)": dict(u0_init=-2.0, beta=4.0, beta_t_ref=None),
    "beta=8, beta_t_ref=16": dict(beta=8.0, beta_t_ref=16.0),
    "beta=24, beta_t_ref=16 (the new defaults)": dict(beta=24.0, beta_t_ref=16.0),
    "authors' clamps 10/10, warm-up 0.5%, clip 3000 (unscaled)": dict(
        beta=24.0, clamp_u=10.0, clamp_du=10.0, warmup=0.005, grad_clip=3000.0,
        beta_t_ref=None),
    # --- the second round (to the horizon; second table): beta_t_ref = 16 throughout
    "beta=24": dict(beta=24.0, beta_t_ref=16.0),
    "beta=8": dict(beta=8.0, beta_t_ref=16.0),
    "beta=8, separate draws": dict(beta=8.0, beta_t_ref=16.0, separate_draws=True),
    "beta=8, loss x 256/D": dict(beta=8.0, beta_t_ref=16.0, loss_ref_dim=256.0),
    "beta=8, width by the 1e-3 quantile": dict(beta=8.0, beta_t_ref=16.0,
                                               width_rule="quantile"),
    "beta=16": dict(beta=16.0, beta_t_ref=16.0),
    "beta=8, u0_init=-2": dict(beta=8.0, beta_t_ref=16.0, u0_init=-2.0),
    "beta=2": dict(beta=2.0, beta_t_ref=16.0),
    "beta=24, beta warm-up 30%": dict(beta=24.0, beta_t_ref=16.0, beta_warmup=0.3),
    "beta=8, authors' clamps 10/10, warm-up 0.5%, clip 3000": dict(
        beta=8.0, beta_t_ref=16.0, clamp_u=10.0, clamp_du=10.0, warmup=0.005,
        grad_clip=3000.0),
}
SETTINGS = ("128x4", "128x16")
HEADER = ("| variant | data | K | T_train | epochs | R² t=T_train | R² t=160 | R² t=H | "
          "zeros t=T_train | zeros t=H | latents firing | collapsed | train R² | minutes |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- "
          "| --- |\n")


def parse_setting(text: str) -> tuple[str, int, int]:
    """'128x4' → ('mnist', 128, 4); 'p512x16' → ('patches', 512, 16); 'z512x16' →
    ('patches-zca', 512, 16)."""
    data = PATCHES.get(text[:1], "mnist")
    try:
        k, t = (int(v) for v in text.lstrip("".join(PATCHES)).split("x"))
    except ValueError:
        raise ValueError(f"a setting is KxT_TRAIN, or pKxT_TRAIN / zKxT_TRAIN (patches), "
                         f"got {text!r}") from None
    return data, k, t


def run_one(overrides: dict, latents: int, t_train: int, epochs: int, *, data="mnist",
            horizon: int = 1000, eval_n: int = 200, seed: int = 0, threads=None) -> dict:
    """Train one variant, then measure it (see the module docstring).

    Returns the trainer's last held-out health (``train.health``) plus ``seconds``,
    ``train_r2`` and, with horizon > 0, ``r2_at`` / ``zeros_at`` {t: value} for
    t ∈ {T_train, 160, horizon − 1} (steps of the reference simulator).
    """
    from networks import load_network
    from train.config import TrainConfig
    from train.data import load_dataset
    from train.evaluate import evaluate
    from train.trainer import train

    cfg = TrainConfig(data=data, latents=latents, t_train=t_train, epochs=epochs,
                      eval_steps=0, progress=False, seed=seed, threads=threads,
                      **{**ROUNDS_1_2, **overrides})
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        res = train(cfg, out)
        seconds = time.perf_counter() - t0
        h = dict(res["metrics"]["held_out"], seconds=seconds,
                 train_r2=res["metrics"]["final_train_r2"])
        if horizon:
            net = load_network(Path(out) / "model.npz")
            test = load_dataset(data, "test", seed=seed).head(eval_n)
            ev = evaluate(net, test, steps=horizon, seed=seed, progress=False)
            ts = sorted({t_train, 160, horizon - 1})
            h["r2_at"] = {t: float(ev["r2_spikes"][t]) for t in ts if t < horizon}
            h["zeros_at"] = {t: float(ev["sparsity"][t]) for t in ts if t < horizon}
            h["runaway"] = int(ev["runaway_any"])
    return h


def row(name: str, data: str, k: int, t: int, epochs: int, horizon: int, r: dict) -> str:
    """One Markdown table row of :data:`HEADER` ('–' where not measured)."""
    def at(key, step):
        v = r.get(key, {}).get(step)
        return "–" if v is None else f"{v:.3f}"

    r2_t = at("r2_at", t) if "r2_at" in r else f"{r['r2']:.3f}"
    zeros_t = at("zeros_at", t) if "zeros_at" in r else f"{r['zeros']:.3f}"
    return (f"| {name} | {data} | {k} | {t} | {epochs} | {r2_t} | {at('r2_at', 160)} | "
            f"{at('r2_at', horizon - 1)} | {zeros_t} | {at('zeros_at', horizon - 1)} | "
            f"{r['active']:.2f} | {'yes' if r['collapsed'] else 'no'} | {r['train_r2']:.3f} | "
            f"{r['seconds'] / 60:.1f} |")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--only", nargs="*", help="variant names to run (default all)")
    p.add_argument("--settings", nargs="*", default=list(SETTINGS),
                   help="KxT_TRAIN (MNIST), pKxT_TRAIN (patches) or zKxT_TRAIN (ZCA patches, "
                        "the first two rounds' p) (default 128x4 128x16)")
    p.add_argument("--horizon", type=int, default=1000,
                   help="evaluate to this step with the reference simulator (0: no)")
    p.add_argument("--eval-n", type=int, default=200, help="held-out inputs evaluated")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--out", default="runs/training-ablation.md",
                   help="markdown table to append rows to (docs/training-ablation.md quotes it)")
    args = p.parse_args(argv)
    unknown = [n for n in args.only or () if n not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")
    settings = [parse_setting(s) for s in args.settings]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists():
        out.write_text(HEADER)
    for name, overrides in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        for data, k, t in settings:
            r = run_one(overrides, k, t, args.epochs, data=data, horizon=args.horizon,
                        eval_n=args.eval_n, threads=args.threads)
            line = row(name, data, k, t, args.epochs, args.horizon, r)
            print(line, flush=True)
            with out.open("a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
