"""PNG figures shared by the commands: the pyplot loader, atomic saving, spike rasters."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from networks.network import atomic_write


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` as PNG atomically and close it."""
    try:
        return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi))
    finally:
        pyplot().close(fig)


def plot_rasters(traces: dict, path, sample: int = 0, max_neurons: int = 128) -> Path:
    """Side-by-side rasters (inference step × neuron, colour = count) of one input.

    One panel per backend, then one difference panel per further backend
    (its counts minus the first backend's).  Neurons: those that fired in any
    backend (at least 16 rows, at most ``max_neurons``), most active in the
    first backend at the bottom, the same order in every panel.
    """
    plt = pyplot()
    from matplotlib import colors

    labels = list(traces)
    first = traces[labels[0]]
    totals = first.spikes[:, sample].sum(axis=0)
    fired = sum((traces[k].spikes[:, sample] > 0).sum(axis=0) for k in labels) > 0
    rows = min(max(int(fired.sum()), 16), max_neurons, len(totals))
    order = np.lexsort((-fired.astype(int), -totals))[:rows]
    rasters = {k: traces[k].spikes[:, sample][:, order] for k in labels}
    vmax = max(1, max(int(r.max(initial=0)) for r in rasters.values()))
    panels = [(k, rasters[k], False) for k in labels]
    panels += [(f"{k} − {labels[0]}", rasters[k] - rasters[labels[0]], True) for k in labels[1:]]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 4.2), squeeze=False)
    steps = first.steps
    extent = (steps[0] - 0.5, steps[-1] + 0.5, -0.5, len(order) - 0.5) if len(steps) else None
    for ax, (label, r, is_diff) in zip(axes[0], panels):
        d = max(1, int(np.abs(r).max(initial=0)))
        # square-root colour scale so single spikes show beside counts of ~100
        norm = (colors.TwoSlopeNorm(0, -d, d) if is_diff
                else colors.PowerNorm(0.5, vmin=0, vmax=vmax))
        im = ax.imshow(r.T, aspect="auto", interpolation="nearest", origin="lower",
                       extent=extent, cmap="RdBu_r" if is_diff else "magma", norm=norm)
        n_diff = int(np.count_nonzero(r)) if is_diff else None
        ax.set_title(label if not is_diff else f"{label} ({n_diff} differ)")
        ax.set_xlabel("inference step")
        ax.set_ylabel("neuron (rank by activity)")
        fig.colorbar(im, ax=ax, label="count difference" if is_diff else "spikes / step")
    fig.suptitle(f"spike counts, input {sample}")
    fig.tight_layout()
    return save_figure(fig, path)
