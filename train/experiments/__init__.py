"""The paper's experiments as commands (``ipvae experiment NAME --out DIR [--quick]``).

One module per experiment, each with ``NAME``, ``HELP``, ``FILTERS`` (the optional
selections it takes) and ``run(ctx, **filters) -> dict``; the shared parts (cached
training, inference curves, outputs) are in :mod:`train.experiments.common`.
"""
from __future__ import annotations

import importlib

EXPERIMENTS = {
    "horizon": "train.experiments.horizon",
    "ood": "train.experiments.ood",
    "rate-distortion": "train.experiments.rate_distortion",
    "features": "train.experiments.features",
    "backends": "train.experiments.backends",
}
"""Experiment name → module."""


def load(name: str):
    """The module of experiment ``name``; ValueError naming the available ones."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; available: {', '.join(EXPERIMENTS)}")
    return importlib.import_module(EXPERIMENTS[name])


def run(name: str, out, *, quick: bool = False, progress: bool = True, seed: int = 0,
        **filters) -> dict:
    """Run experiment ``name`` into folder ``out``; returns its numbers (also in NAME.json)."""
    from pathlib import Path

    from train.experiments.common import Context

    module = load(name)
    unknown = sorted(k for k, v in filters.items() if v is not None and k not in module.FILTERS)
    if unknown:
        raise ValueError(f"experiment {name!r} does not take "
                         f"{', '.join('--' + k.replace('_', '-') for k in unknown)}")
    ctx = Context(Path(out), quick=quick, progress=progress, seed=seed)
    ctx.out.mkdir(parents=True, exist_ok=True)
    return module.run(ctx, **{k: v for k, v in filters.items() if v is not None})
