"""Figures of an evaluation (``train.evaluate.evaluate`` result): curves and reconstructions."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from networks.plots import pyplot, save_figure


def plot_curves(result: dict, path, title: str | None = None) -> Path:
    """R², MSE, sparsity and mean rate against inference step (log x axis) → PNG ``path``.

    The x axis is the 1-based step t + 1, so the first step sits at 1 on the log axis.
    """
    plt = pyplot()
    t = np.arange(1, result["steps"] + 1)
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    panels = [
        (axes[0, 0], "R²", [("r2_spikes", "spikes Φz"), ("r2_rates", "rates Φe^u")]),
        (axes[0, 1], "MSE per pixel", [("mse_spikes", "spikes Φz"), ("mse_rates", "rates Φe^u")]),
        (axes[1, 0], "sparsity (fraction of zero counts)", [("sparsity", None)]),
        (axes[1, 1], "mean rate (spikes / step / neuron)", [("mean_rate", None)]),
    ]
    for ax, label, series in panels:
        for key, name in series:
            ax.plot(t, result[key], label=name)
        ax.set_xscale("log")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        if any(name for _, name in series):
            ax.legend()
    axes[0, 1].set_yscale("log")
    axes[1, 1].set_yscale("log")
    for ax in axes[1]:
        ax.set_xlabel("inference step")
    ds = result.get("dataset", {})
    fig.suptitle(title or f"{ds.get('name', '?')} ({ds.get('split', '?')}, "
                 f"{result['n_inputs']} inputs), reference backend, true Poisson counts")
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def plot_examples(result: dict, path, steps=(0, 16, 160, None)) -> Path:
    """Inputs and their spike read-outs Φz_t at a few recorded steps, and the rate read-out at T.

    ``steps``: which recorded steps to show (None = the last step); steps that
    were not recorded or lie past T are skipped.
    """
    plt = pyplot()
    ex = result["examples"]
    shape = tuple(ex["input_shape"])
    if len(shape) != 2:
        side = int(round(np.sqrt(ex["x"].shape[1])))
        shape = (side, side) if side * side == ex["x"].shape[1] else (1, ex["x"].shape[1])
    rec = [int(s) for s in result["record_steps"]]
    last = result["steps"] - 1
    show = []
    for s in steps:
        s = last if s is None else s
        if s in rec and s not in show:
            show.append(s)
    cols = [("input", ex["x"])]
    cols += [(f"spikes t={s}", ex["recon"][rec.index(s)]) for s in show]
    cols.append((f"rates t={result['steps']}", ex["rate_recon"][-1]))
    n = ex["x"].shape[0]
    lim = float(np.abs(ex["x"]).max()) or 1.0
    signed = float(ex["x"].min()) < 0
    fig, axes = plt.subplots(n, len(cols), figsize=(1.6 * len(cols), 1.6 * n), squeeze=False)
    for j, (name, imgs) in enumerate(cols):
        for i in range(n):
            ax = axes[i, j]
            kw = dict(vmin=-lim, vmax=lim) if signed else dict(vmin=0, vmax=lim)
            ax.imshow(imgs[i].reshape(shape), cmap="gray", **kw)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
