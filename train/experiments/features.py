"""``features`` (the paper's Fig. 5): the learned dictionary, and the probe against t.

1. The dictionary Φ learned on natural patches (``horizon``'s patches model, linear
   decoder, T_train = 16), its K atoms ordered by kurtosis (``scipy.stats.kurtosis``,
   Fisher, of each atom's pixel values: high for localised, edge-like atoms, ≈ 0 for
   noise-like ones), beside the dictionary scikit-learn's sparse coding learns on the same
   training patches with the same K (``train.baselines.sparse_coding.fit``).
2. The linear probe (``train.evaluate.linear_probe``: logistic regression on the rates
   e^{u_t}) against inference step t on held-out MNIST digits, with the MNIST model of
   ``horizon`` (linear, T_train = 16), beside the probe on raw pixels.
"""
from __future__ import annotations

import math

import numpy as np

from train.experiments import common, horizon

NAME = "features"
HELP = "Fig. 5: patch dictionary ordered by kurtosis beside sparse coding's; probe vs t on MNIST"
FILTERS = ()

FULL = dict(sc_alpha=0.5, sc_train=5000, n_tiles=100, probe_n=1000, n_test=500, steps=1000,
            probe_steps=[0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000])
QUICK = dict(sc_alpha=0.5, sc_train=300, n_tiles=16, probe_n=100, n_test=40, steps=40,
             probe_steps=[0, 2, 8, 16, 40])


def models(ctx):
    if ctx.quick:
        return (horizon.config(horizon.QUICK, "patches", "linear", 4, ctx.seed),
                horizon.config(horizon.QUICK, "mnist", "linear", 4, ctx.seed))
    return (horizon.config(horizon.FULL, "patches", "linear", 16, ctx.seed),
            horizon.config(horizon.FULL, "mnist", "linear", 16, ctx.seed))


def kurtosis_order(atoms) -> tuple[np.ndarray, np.ndarray]:
    """(order, kurtosis): atoms (K, D) sorted by the excess kurtosis of their pixel values,
    highest first; atoms that are exactly zero get kurtosis −3 (scipy's value for constants
    would be NaN)."""
    from scipy.stats import kurtosis

    atoms = np.asarray(atoms, dtype=np.float64)
    flat = atoms.std(axis=1) == 0
    k = np.where(flat, -3.0, kurtosis(np.where(flat[:, None], 1.0, atoms), axis=1, fisher=True))
    k = np.nan_to_num(k, nan=-3.0)
    return np.argsort(-k, kind="stable"), k


def tiles(ax_grid, atoms, shape):
    for ax in ax_grid.ravel():
        ax.axis("off")
    for ax, a in zip(ax_grid.ravel(), atoms):
        m = np.abs(a).max() or 1.0
        ax.imshow(a.reshape(shape), cmap="RdBu_r", vmin=-m, vmax=m)


def run(ctx: common.Context) -> dict:
    from networks.plots import pyplot, save_figure
    from train.baselines import sparse_coding
    from train.evaluate import evaluate

    size = QUICK if ctx.quick else FULL
    cfg_patches, cfg_mnist = models(ctx)
    tp = common.trained(ctx, cfg_patches)
    shape = tuple(tp.net.input_shape)
    phi = tp.net.phi.T                                   # (K, D) atoms as rows
    train_p = common.dataset("patches", "train", size["sc_train"], seed=ctx.seed)
    ctx.log(f"sparse coding: K={phi.shape[0]} atoms on {len(train_p)} training patches, "
            f"alpha={size['sc_alpha']}")
    sc = sparse_coding.fit(train_p.x.astype(np.float64), phi.shape[0], size["sc_alpha"],
                           seed=ctx.seed, quick=ctx.quick, progress=ctx.progress)
    o_ip, k_ip = kurtosis_order(phi)
    o_sc, k_sc = kurtosis_order(sc.dictionary)

    plt = pyplot()
    n = min(size["n_tiles"], phi.shape[0])
    side = int(math.ceil(math.sqrt(n)))
    fig = plt.figure(figsize=(2 * side * 0.75 + 1, side * 0.75 + 1.2))
    sub = fig.subfigures(1, 2)
    for sf, atoms, title in ((sub[0], phi[o_ip[:n]], f"iP-VAE Φ ({tp.label})"),
                             (sub[1], sc.dictionary[o_sc[:n]],
                              f"sparse coding (sklearn, α={size['sc_alpha']:g})")):
        grid = sf.subplots(side, side, squeeze=False)
        tiles(grid, atoms, shape)
        sf.suptitle(f"{title}: top {n} of {phi.shape[0]} by kurtosis",
                    fontsize=9)
    save_figure(fig, ctx.path("features_dictionaries.png"), dpi=90)

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(np.sort(k_ip)[::-1], label="iP-VAE Φ")
    ax.plot(np.sort(k_sc)[::-1], label="sparse coding")
    ax.set_xlabel("atom rank")
    ax.set_ylabel("excess kurtosis of the atom's pixels")
    ax.set_yscale("symlog")
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    save_figure(fig, ctx.path("features_kurtosis.png"))

    tm = common.trained(ctx, cfg_mnist)
    test = common.dataset("mnist", "test", size["n_test"], seed=ctx.seed)
    probe_train = common.dataset("mnist", "train", size["probe_n"], seed=ctx.seed)
    steps = size["steps"]
    ctx.log(f"linear probe against t: {len(probe_train)} training and {len(test)} held-out "
            f"digits to t={steps}")
    res = evaluate(tm.net, test, steps=steps, seed=ctx.seed, probe_train=probe_train,
                   probe_step=[s for s in size["probe_steps"] if s <= steps],
                   progress=ctx.progress)
    p = res["probe"]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(np.asarray(p["steps"]) + 1, p["rates"], "o-", label=f"rates e^u ({tm.label})")
    ax.axhline(p["pixels"], color="k", ls="--", label="raw pixels")
    ax.set_xscale("log")
    ax.set_xlabel("inference step t + 1 (the probe reads e^{u_t})")
    ax.set_ylabel("held-out accuracy")
    ax.set_title(f"linear probe on MNIST ({p['n_train']} train / {p['n_test']} test digits)")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, ctx.path("features_probe.png"))
    figures = ["features_dictionaries.png", "features_kurtosis.png", "features_probe.png"]

    kur = dict(iPVAE=dict(median=float(np.median(k_ip)), mean=float(k_ip.mean()),
                          top10=[float(v) for v in np.sort(k_ip)[::-1][:10]]),
               sparse_coding=dict(median=float(np.median(k_sc)), mean=float(k_sc.mean()),
                                  top10=[float(v) for v in np.sort(k_sc)[::-1][:10]]))
    best = int(np.argmax(p["rates"]))
    claims = [common.claim("the probe on the rates at the last step beats chance (10%)",
                           p["rates"][-1] > 0.1, accuracy=p["rates"][-1]),
              common.claim("the probe improves from t=0 (prior) to the last step",
                           p["rates"][-1] > p["rates"][0], first=p["rates"][0],
                           last=p["rates"][-1])]
    numbers = dict(patches_model=common.health(tp), mnist_model=common.health(tm),
                   kurtosis=kur, kurtosis_ipvae=[float(v) for v in k_ip],
                   kurtosis_sparse_coding=[float(v) for v in k_sc],
                   sparse_coding=dict(alpha=size["sc_alpha"], n_train=len(train_p),
                                      fit_seconds=sc.fit_seconds),
                   probe=dict(steps=p["steps"], accuracy=p["rates"], pixels=p["pixels"],
                              n_train=p["n_train"], n_test=p["n_test"]),
                   claims=claims, figures=figures, sizes=size)
    rows = [(s, a) for s, a in zip(p["steps"], p["rates"])]
    md = [f"# features (Fig. 5){' — quick sizes' if ctx.quick else ''}", "",
          f"Dictionaries on natural patches (K={phi.shape[0]}), atoms ordered by the excess "
          "kurtosis of their pixels (scipy.stats.kurtosis):", "",
          common.md_table(["dictionary", "median kurtosis", "mean kurtosis", "largest"],
                          [("iP-VAE Φ", kur["iPVAE"]["median"], kur["iPVAE"]["mean"],
                            kur["iPVAE"]["top10"][0]),
                           (f"sparse coding (α={size['sc_alpha']:g})",
                            kur["sparse_coding"]["median"], kur["sparse_coding"]["mean"],
                            kur["sparse_coding"]["top10"][0])]), "",
          f"Linear probe on MNIST rates e^{{u_t}} ({tm.label}; {p['n_train']} training, "
          f"{p['n_test']} held-out digits; raw pixels {p['pixels']:.3f}; "
          f"best t={p['steps'][best]}):",
          "", common.md_table(["t", "accuracy"], rows), "", common.claims_md(claims), "",
          "Figures: " + ", ".join(figures), ""]
    common.write_outputs(ctx, NAME, numbers, "\n".join(md))
    return numbers
