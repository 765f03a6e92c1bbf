"""``rate-distortion`` (the paper's Table 1 / v2 figure): sparsity against R².

The iP-VAE trained at several β (linear decoder, embedded MNIST, K = 512, T_train = 16),
under each form of the KL (``exact``, the default, and ``posterior``, the authors' form,
which prices a rise of the rate harder), is run as its network file to t = T_eval with
true Poisson counts on held-out digits; each (KL form, β) gives one point (sparsity = the
fraction of zero counts at the last step, R² from spikes at the last step).  On the same
axes: scikit-learn sparse coding swept over its L1 penalty α (a dictionary learned per α
on the training digits, LASSO codes of the same held-out digits;
``train.baselines.sparse_coding.sweep``) and LCA on Lava (``train.baselines.lca.sweep``)
swept over its threshold λ on the dictionary sparse coding learned at the middle α.
Every point's Euclidean distance to the ideal (1, 1)
(``train.baselines.metrics.distance_to_ideal``); the table says how far the iP-VAE's
best point is from the best baseline point.
"""
from __future__ import annotations

import numpy as np

from train.experiments import common

NAME = "rate-distortion"
HELP = "Table 1: sparsity vs R² over a beta sweep, beside sparse coding's and LCA's sweeps"
FILTERS = ()

FULL = dict(betas=[4.0, 8.0, 16.0, 24.0], posterior_betas=[8.0, 16.0, 24.0, 32.0],
            latents=512, t_train=16, epochs=20, steps=1000, n_test=300, sc_train=2000,
            alphas=[0.1, 0.3, 1.0, 3.0], lca_n=20, lca_steps=300)
QUICK = dict(betas=[4.0, 8.0, 16.0, 24.0], posterior_betas=[16.0], latents=32, t_train=4,
             epochs=1, steps=40, n_test=30, sc_train=300, alphas=[0.3, 1.0, 3.0, 10.0], lca_n=3,
             lca_steps=40, n_train=300)
TOLERANCE = 0.05
"""The issue's bound: the iP-VAE's best distance to (1, 1) within this of the best baseline's."""


def config(size, beta, seed, kl_form="exact"):
    from train.config import TrainConfig

    return TrainConfig(data="mnist", latents=size["latents"], t_train=size["t_train"],
                       beta=beta, kl_form=kl_form, epochs=size["epochs"],
                       n_train=size.get("n_train"), seed=seed)


def label(r: dict) -> str:
    """A point's setting: β, and the KL form where it is not the default."""
    return f"β={r['beta']:g}" + (", posterior KL" if r["kl_form"] == "posterior" else "")


def run(ctx: common.Context) -> dict:
    from networks.plots import pyplot, save_figure
    from train.baselines import lca, sparse_coding
    from train.baselines.metrics import distance_to_ideal

    size = QUICK if ctx.quick else FULL
    test = common.dataset("mnist", "test", size["n_test"], seed=ctx.seed)
    x_test = test.x.astype(np.float64)
    steps = size["steps"]
    ip = []
    sweep = ([("exact", b) for b in size["betas"]]
             + [("posterior", b) for b in size["posterior_betas"]])
    for kl_form, beta in sweep:
        tr = common.trained(ctx, config(size, beta, ctx.seed, kl_form))
        c = common.network_curves(tr.net, x_test, steps, seed=ctx.seed, progress=ctx.progress,
                                  desc=f"{kl_form} KL, beta={beta:g}")
        sp, r2 = common.at(c["sparsity"], steps - 1), common.at(c["r2_spikes"], steps - 1)
        ip.append(dict(beta=beta, kl_form=kl_form, sparsity=sp, r2=r2,
                       distance=distance_to_ideal(sp, r2),
                       mse=common.at(c["mse_spikes"], steps - 1),
                       r2_at_T_train=common.at(c["r2_spikes"], size["t_train"] - 1),
                       sparsity_at_T_train=common.at(c["sparsity"], size["t_train"] - 1),
                       training=common.health(tr)))
        ctx.log(f"iP-VAE {kl_form} KL, beta={beta:g}: sparsity {sp:.3f}, R² {r2:.3f}, distance "
                f"{ip[-1]['distance']:.3f}")

    x_train = common.dataset("mnist", "train", size["sc_train"], seed=ctx.seed).x
    ctx.log(f"sparse coding sweep over alpha={size['alphas']} (K={size['latents']}, "
            f"{len(x_train)} training digits)")
    sc = sparse_coding.sweep(x_train.astype(np.float64), x_test, size["latents"], size["alphas"],
                             seed=ctx.seed, quick=ctx.quick, progress=ctx.progress,
                             keep_models=True)
    mid = sc[len(sc) // 2]
    dictionary = mid.pop("model").dictionary
    for row in sc:
        row.pop("model", None)
    ctx.log(f"LCA on Lava over lambda={size['alphas']} on the alpha={mid['alpha']:g} "
            f"dictionary ({size['lca_n']} digits, {size['lca_steps']} steps)")
    lc = lca.sweep(dictionary, x_test[:size["lca_n"]], size["alphas"], steps=size["lca_steps"],
                   quick=ctx.quick, progress=ctx.progress)

    best_ip = min(ip, key=lambda r: r["distance"])
    baselines = [("sparse coding", r["alpha"], r) for r in sc] + [("LCA", r["lam"], r) for r in lc]
    best_name, best_par, best_bl = min(baselines, key=lambda b: b[2]["distance"])
    gap = best_ip["distance"] - best_bl["distance"]
    claims = [common.claim(f"the iP-VAE's best distance to (1,1) is within {TOLERANCE} of the "
                           "best sparse-coding or LCA point's (or better)", gap <= TOLERANCE,
                           ipvae_best=best_ip["distance"], baseline_best=best_bl["distance"],
                           gap=gap, baseline=f"{best_name} {best_par:g}")]

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 6))
    for form, marker in (("exact", "o-"), ("posterior", "D-")):
        pts = [r for r in ip if r["kl_form"] == form]
        ax.plot([r["sparsity"] for r in pts], [r["r2"] for r in pts], marker,
                label=f"iP-VAE, {form} KL (β, t={steps})")
        for r in pts:  # exact KL labelled to the right, posterior to the left
            ax.annotate(f"β={r['beta']:g}", (r["sparsity"], r["r2"]), fontsize=7,
                        textcoords="offset points",
                        xytext=(5, 0) if form == "exact" else (-30, -3))
    ax.plot([r["sparsity"] for r in sc], [r["r2"] for r in sc], "s--", label="sparse coding (α)")
    for r in sc:
        ax.annotate(f"α={r['alpha']:g}", (r["sparsity"], r["r2"]), fontsize=8,
                    textcoords="offset points", xytext=(4, -10))
    ax.plot([r["sparsity"] for r in lc], [r["r2"] for r in lc], "^:", label="LCA on Lava (λ)")
    for r in lc:
        ax.annotate(f"λ={r['lam']:g}", (r["sparsity"], r["r2"]), fontsize=8,
                    textcoords="offset points", xytext=(-30, 4))
    ax.plot([1], [1], "k*", ms=14, label="ideal (1, 1)")
    ax.set_xlabel("sparsity (fraction of exact zeros in the code)")
    ax.set_ylabel("R² (held-out MNIST)")
    # zoomed to the points and the ideal (every point with R² above -1 is in view)
    r2s = [r["r2"] for r in ip + sc + lc if r["r2"] > -1.0]
    sps = [r["sparsity"] for r in ip + sc + lc]
    ax.set_ylim(min(r2s, default=0.0) - 0.03, 1.02)
    ax.set_xlim(min(sps, default=0.0) - 0.03, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(f"rate-distortion, K={size['latents']}: best iP-VAE distance "
                 f"{best_ip['distance']:.3f} vs best baseline {best_bl['distance']:.3f}")
    fig.tight_layout()
    save_figure(fig, ctx.path("rate_distortion.png"))

    rows = ([("iP-VAE", label(r), r["sparsity"], r["r2"], r["mse"], r["distance"])
             for r in ip]
            + [("sparse coding", f"α={r['alpha']:g}", r["sparsity"], r["r2"], r["mse"],
                r["distance"]) for r in sc]
            + [("LCA (Lava)", f"λ={r['lam']:g}", r["sparsity"], r["r2"], r["mse"], r["distance"])
               for r in lc])
    verdict = (f"The iP-VAE's best point ({label(best_ip)}, distance "
               f"{best_ip['distance']:.3f}) is {abs(gap):.3f} {'behind' if gap > 0 else 'ahead of'}"
               f" the best baseline point ({best_name} {best_par:g}, distance "
               f"{best_bl['distance']:.3f}): "
               + ("within" if gap <= TOLERANCE else "NOT within") + f" the issue's {TOLERANCE}. "
               f"Where the difference lies: sparsity {best_ip['sparsity']:.3f} against "
               f"{best_bl['sparsity']:.3f}, R² {best_ip['r2']:.3f} against {best_bl['r2']:.3f}.")
    numbers = dict(ipvae=ip, sparse_coding=sc, lca=[{k: v for k, v in r.items()} for r in lc],
                   lca_dictionary_alpha=mid["alpha"], best_ipvae=best_ip,
                   best_baseline=dict(method=best_name, parameter=best_par, **best_bl),
                   gap=gap, claims=claims, figures=["rate_distortion.png"], sizes=size,
                   n_test=len(x_test), verdict=verdict)
    md = [f"# rate-distortion{' — quick sizes' if ctx.quick else ''}", "",
          f"Held-out MNIST digits ({len(x_test)}; LCA on the first "
          f"{min(size['lca_n'], len(x_test))}"
          f"), K={size['latents']}. iP-VAE: T_train={size['t_train']}, {size['epochs']} epochs "
          f"per β under the exact KL (the default) and under the authors' posterior-weighted "
          f"KL, every other setting the trainer's default, counts and R² from spikes at "
          f"t={steps}. Sparse coding: a dictionary per α on "
          f"{len(x_train)} training digits (LASSO codes). LCA: Lava, {size['lca_steps']} steps, on "
          f"the α={mid['alpha']:g} dictionary. Distance: to (sparsity, R²) = (1, 1).", "",
          common.md_table(["method", "setting", "sparsity", "R²", "MSE", "distance to (1,1)"],
                          rows), "", verdict, "", common.claims_md(claims), ""]
    common.write_outputs(ctx, NAME, numbers, "\n".join(md))
    return numbers
