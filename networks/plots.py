"""PNG figures of runs: spike rasters and error-versus-step curves (matplotlib, Agg)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_rasters(traces: dict, path, sample: int = 0, max_neurons: int = 128,
                 difference: bool = True) -> Path:
    """Spike rasters (step × neuron, colour = count) of one input, one panel per trace.

    ``traces`` maps a label (e.g. backend name) to a Trace.  The most active
    ``max_neurons`` neurons of the first trace are shown, in the same order in
    every panel.  With two or more traces and ``difference``, a last panel
    shows the count difference between the first two.  A bottom row plots the
    per-step MSE of each trace.
    """
    plt = _pyplot()
    labels = list(traces)
    first = traces[labels[0]]
    order = np.argsort(-first.spikes[:, sample].sum(axis=0))[:max_neurons]
    rasters = [traces[k].spikes[:, sample][:, order] for k in labels]
    vmax = max(1, max(int(r.max()) for r in rasters))
    panels = list(zip(labels, rasters))
    if difference and len(rasters) >= 2:
        panels.append((f"{labels[1]} − {labels[0]}", rasters[1] - rasters[0]))
    fig, axes = plt.subplots(2, len(panels), figsize=(4 * len(panels), 7), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1]})
    for ax, (label, r) in zip(axes[0], panels):
        is_diff = "−" in label
        d = max(1, int(np.abs(r).max())) if is_diff else vmax
        im = ax.imshow(r.T, aspect="auto", interpolation="nearest", origin="lower",
                       cmap="RdBu_r" if is_diff else "magma",
                       vmin=-d if is_diff else 0, vmax=d)
        ax.set_title(label)
        ax.set_xlabel("inference step")
        ax.set_ylabel("neuron (by activity)")
        fig.colorbar(im, ax=ax, label="count difference" if is_diff else "spikes / step")
    ax = axes[1][0]
    for k in labels:
        ax.semilogy(traces[k].mse(), label=k)
    ax.set_xlabel("inference step")
    ax.set_ylabel("MSE / pixel")
    ax.legend()
    for ax in axes[1][1:]:
        ax.axis("off")
    fig.suptitle(f"spike counts, input {sample}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
