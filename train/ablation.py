"""Training ablations for issue 16 (which settings collapse), as a markdown table.

    python -m train.ablation [--epochs 20] [--settings 128x4 ...] [--only NAME ...]
                             [--out runs/training-ablation.md]

Each variant trains on embedded MNIST at K = 128 with T_train = 4 and 16 (one
training at a time: the machine is shared), then measures on 200 held-out
digits as deployed (exact counts, ``train.health``): R² from spikes at
t = T_train, the share of zero counts, the share of latents that fire, and
whether the run collapsed.  Rows are appended to ``--out`` as they finish;
docs/training-ablation.md holds the table measured for issue 16.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

VARIANTS = {
    "beta=24 unscaled (the defaults before)": dict(beta_t_ref=None),
    "sigma_init=data (unscaled)": dict(sigma_init="data", beta_t_ref=None),
    "sigma held 1 (sigma_warmup=1) (unscaled)": dict(sigma_warmup=1.0, beta_t_ref=None),
    "beta=8 (unscaled)": dict(beta=8.0, beta_t_ref=None),
    "beta=4 (unscaled)": dict(beta=4.0, beta_t_ref=None),
    "beta=8, sigma_init=data (unscaled)": dict(beta=8.0, sigma_init="data", beta_t_ref=None),
    "beta=4, sigma_init=data (unscaled)": dict(beta=4.0, sigma_init="data", beta_t_ref=None),
    "beta=2 (unscaled)": dict(beta=2.0, beta_t_ref=None),
    "beta=1 (unscaled)": dict(beta=1.0, beta_t_ref=None),
    "u0_init=-2 (unscaled)": dict(u0_init=-2.0, beta_t_ref=None),
    "u0_init=-2, beta=4 (unscaled)": dict(u0_init=-2.0, beta=4.0, beta_t_ref=None),
    "beta=8, beta_t_ref=16": dict(beta=8.0, beta_t_ref=16.0),
    "beta=24, beta_t_ref=16 (the new defaults)": {},
    "authors' clamps 10/10, warm-up 0.5%, clip 3000 (unscaled)": dict(clamp_u=10.0, clamp_du=10.0,
                                                           warmup=0.005, grad_clip=3000.0,
                                                           beta_t_ref=None),
}
SETTINGS = ((128, 4), (128, 16))


def run_one(overrides: dict, latents: int, t_train: int, epochs: int, seed: int = 0) -> dict:
    """Train one variant (no final evaluation) and return its last held-out health."""
    from train.config import TrainConfig
    from train.trainer import train

    cfg = TrainConfig(data="mnist", latents=latents, t_train=t_train, epochs=epochs,
                      eval_steps=0, progress=False, seed=seed, **overrides)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        res = train(cfg, out)
        seconds = time.perf_counter() - t0
    h = res["metrics"]["held_out"]
    return dict(h, seconds=seconds, train_r2=res["metrics"]["final_train_r2"])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--only", nargs="*", help="variant names to run (default all)")
    p.add_argument("--settings", nargs="*", default=[f"{k}x{t}" for k, t in SETTINGS],
                   help="KxT_TRAIN pairs (default 128x4 128x16)")
    p.add_argument("--out", default="runs/training-ablation.md",
                   help="markdown table to append rows to (docs/training-ablation.md quotes one)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists():
        out.write_text("| variant | K | T_train | held-out R² | zeros | latents firing | "
                       "collapsed | train R² | minutes |\n| --- | --- | --- | --- | --- | --- | "
                       "--- | --- | --- |\n")
    for name, overrides in VARIANTS.items():
        if args.only and name not in args.only:
            continue
        for k, t in (map(int, kt.split("x")) for kt in args.settings):
            r = run_one(overrides, k, t, args.epochs)
            row = (f"| {name} | {k} | {t} | {r['r2']:.3f} | {r['zeros']:.3f} | "
                   f"{r['active']:.2f} | {'yes' if r['collapsed'] else 'no'} | "
                   f"{r['train_r2']:.3f} | {r['seconds'] / 60:.1f} |")
            print(row, flush=True)
            with out.open("a") as f:
                f.write(row + "\n")


if __name__ == "__main__":
    main()
