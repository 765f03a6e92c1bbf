"""``ood`` (the paper's Figs. 2b, 3, 4): a model trained on MNIST, evaluated on what it never saw.

The MNIST model of ``horizon`` (linear decoder, T_train = 16; tiny with --quick) runs
without retraining as its network file on the reference simulator, with true Poisson
counts, to t = T on: held-out MNIST digits rotated 0–180°; letters rendered from the
DejaVu fonts matplotlib ships (a stand-in for EMNIST letters, which would need a
download); scikit-learn's 8×8 digits upsampled to 28×28; grey photograph patches upsampled
to 28×28 (``train.experiments.ood_sets``).  MSE and R² from spikes against t, and the linear
probe on the rates e^{u_T}: fit on upright MNIST training digits and tested, not refitted,
on the rotated and the 8×8 digits; for the letters (no digit classes) fit on 80 % of the
letters and tested on the rest.

The amortized Poisson VAE (``train.baselines.amortized``, the same K, decoder and loss, an
encoder in place of the iterations), trained on the same MNIST digits, is run on the same
sets (one pass: its codes are counts drawn from the shared uniforms), its probe fit the
same way on its rates.  The table says on which sets the iP-VAE's MSE at t = T beats it.
Claim: the iP-VAE's MSE keeps falling with t on every out-of-distribution set.
"""
from __future__ import annotations

import numpy as np

from train.experiments import common, horizon, ood_sets

NAME = "ood"
HELP = "Figs. 2b/3/4: an MNIST model on rotated digits, letters, 8x8 digits, photo patches"
FILTERS = ()

FULL = dict(angles=[0, 30, 60, 90, 120, 150, 180], n=200, n_letters=520, n_digits=300,
            n_patches=200, steps=1000, probe_n=1000, amortized_epochs=40)
QUICK = dict(angles=[0, 90, 180], n=20, n_letters=52, n_digits=20, n_patches=10, steps=40,
             probe_n=100, amortized_epochs=2)


def model_config(ctx):
    if ctx.quick:
        return horizon.config(horizon.QUICK, "mnist", "linear", 4, ctx.seed)
    return horizon.config(horizon.FULL, "mnist", "linear", 16, ctx.seed)


def sets(size, seed):
    """[(name, Dataset, probe rule)] in the order of the figure."""
    out = [(f"rotated {a}°", common.dataset("mnist", "test", size["n"], seed=seed,
                                             rotate=float(a) if a else None), "mnist")
           for a in size["angles"]]
    out.append(("letters (DejaVu, EMNIST stand-in)", ood_sets.letters(size["n_letters"], seed),
                "split"))
    out.append(("sklearn 8x8 digits upsampled", ood_sets.small_digits(size["n_digits"], seed),
                "mnist"))
    out.append(("photo patches 28x28", ood_sets.photo_patches(size["n_patches"], seed), None))
    return out


def split_probe(features, y, seed):
    """Probe accuracy fit on the first 80 % of (class-interleaved) inputs, tested on the rest."""
    from train.evaluate import linear_probe

    import warnings

    cut = int(0.8 * len(y))
    with warnings.catch_warnings():  # few inputs per class (--quick): sklearn's type warning
        warnings.simplefilter("ignore", UserWarning)
        return linear_probe(features[:cut], y[:cut], features[cut:], y[cut:], seed=seed)


def run(ctx: common.Context) -> dict:
    from networks.plots import pyplot, save_figure
    from train.baselines.amortized import train_amortized
    from train.evaluate import linear_probe

    size = QUICK if ctx.quick else FULL
    steps, seed = size["steps"], ctx.seed
    tr = common.trained(ctx, model_config(ctx))
    net = tr.net
    mnist_train = common.dataset("mnist", "train", size["probe_n"], seed=seed)
    ctx.log(f"probe features: {len(mnist_train)} upright MNIST training digits to t={steps}")
    ptrain = common.network_curves(net, mnist_train.x, steps, seed=seed, progress=ctx.progress,
                                   desc="probe (train)", extra_record=[steps])
    rates_train = np.exp(ptrain["u"][steps])
    ctx.log(f"amortized Poisson VAE: K={net.n_latents}, {size['amortized_epochs']} epochs on "
            f"the MNIST training digits")
    am = train_amortized(common.dataset("mnist", "train", seed=seed), kind="poisson",
                         latents=net.n_latents, epochs=size["amortized_epochs"], seed=seed,
                         quick=ctx.quick, progress=ctx.progress)
    am_rates_train = am.codes(mnist_train.x, rates=True)

    results, rows, claims = [], [], []
    marks = sorted({t for t in (16, 100) if t < steps} | {steps})
    inputs = []
    for name, ds, rule in sets(size, seed):
        inputs.append((name, ds))
        ctx.log(f"{name}: {len(ds)} inputs to t={steps}")
        c = common.network_curves(net, ds.x, steps, seed=seed, progress=ctx.progress, desc=name,
                                  extra_record=[steps])
        mse_t = {t: common.at(c["mse_spikes"], t - 1) for t in marks}
        am_m = am.metrics(ds.x.astype(np.float64), seed=seed)
        probe = am_probe = None
        if rule == "mnist":
            probe = linear_probe(rates_train, mnist_train.y, np.exp(c["u"][steps]), ds.y,
                                 seed=seed)
            am_probe = linear_probe(am_rates_train, mnist_train.y,
                                    am.codes(ds.x, rates=True), ds.y, seed=seed)
        elif rule == "split":
            probe = split_probe(np.exp(c["u"][steps]), ds.y, seed)
            am_probe = split_probe(am.codes(ds.x, rates=True), ds.y, seed)
        falls = all(mse_t[a] > mse_t[b] for a, b in zip(marks, marks[1:]))
        beats = mse_t[steps] < am_m["mse"]
        entry = dict(set=name, n=len(ds), probe_rule=rule, ipvae=common.curves_json(c),
                     ipvae_mse_at=mse_t, ipvae_r2_end=common.at(c["r2_spikes"], steps - 1),
                     ipvae_probe=probe, amortized=am_m, amortized_probe=am_probe,
                     mse_keeps_falling=falls, ipvae_beats_amortized_mse=beats,
                     dataset=dict(ds.meta))
        results.append((name, c, am_m))
        claims.append(common.claim(f"{name}: iP-VAE MSE falls from t={marks[0]} through "
                                   f"{', '.join(map(str, marks[1:]))}", falls,
                                   **{f"mse_t{t}": v for t, v in mse_t.items()}))
        rows.append((name, len(ds), *[mse_t[t] for t in marks], am_m["mse"],
                     entry["ipvae_r2_end"], am_m["r2"], probe, am_probe,
                     "iP-VAE" if beats else "amortized"))
        ctx.log(f"{name}: MSE " + ", ".join(f"t={t} {v:.4g}" for t, v in mse_t.items())
                + f"; amortized {am_m['mse']:.4g}"
                + (f"; probe {probe:.3f} vs {am_probe:.3f}" if probe is not None else ""))
        results[-1] = (name, c, am_m, entry)

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    t = np.arange(1, steps + 1)
    for i, (name, c, am_m, _) in enumerate(results):
        col = plt.cm.viridis(i / max(1, len(results) - 1)) if name.startswith("rotated") \
            else f"C{i % 10}"
        ax = axes[0] if name.startswith("rotated") else axes[1]
        ax.plot(t, c["mse_spikes"], color=col, label=name)
        ax.axhline(am_m["mse"], color=col, ls="--", lw=0.9)
    for ax, title in zip(axes, ("rotated held-out MNIST", "other out-of-distribution sets")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("inference step t")
        ax.set_ylabel("MSE per pixel (spikes)")
        ax.set_title(f"{title}\n(dashed: amortized P-VAE, one pass)", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"an MNIST-trained iP-VAE ({tr.label}, K={net.n_latents}) without retraining, "
                 "reference simulator, true Poisson counts")
    fig.tight_layout()
    save_figure(fig, ctx.path("ood_mse.png"))

    rot = [e for *_, e in results if e["set"].startswith("rotated")]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    ang = size["angles"]
    for t_ in marks:
        a.plot(ang, [e["ipvae_mse_at"][t_] for e in rot], "o-", label=f"iP-VAE t={t_}")
    a.plot(ang, [e["amortized"]["mse"] for e in rot], "s--", label="amortized P-VAE")
    a.set_xlabel("rotation (degrees)")
    a.set_ylabel("MSE per pixel")
    a.legend(fontsize=8)
    b.plot(ang, [e["ipvae_probe"] for e in rot], "o-", label=f"iP-VAE rates t={steps}")
    b.plot(ang, [e["amortized_probe"] for e in rot], "s--", label="amortized P-VAE rates")
    b.set_xlabel("rotation (degrees)")
    b.set_ylabel("probe accuracy (fit on upright digits)")
    b.legend(fontsize=8)
    for ax in (a, b):
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    save_figure(fig, ctx.path("ood_rotation.png"))

    fig, axes = plt.subplots(len(results), 8, figsize=(8, len(results) * 1.05))
    for r, (name, ds) in enumerate(inputs):
        for i in range(8):
            ax = axes[r, i]
            ax.axis("off")
            if i < len(ds):
                ax.imshow(ds.x[i].reshape(28, 28), cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_title(name, fontsize=7, loc="left")
    fig.tight_layout()
    save_figure(fig, ctx.path("ood_inputs.png"), dpi=90)
    figures = ["ood_mse.png", "ood_rotation.png", "ood_inputs.png"]

    beats = [e["set"] for *_, e in results if e["ipvae_beats_amortized_mse"]]
    loses = [e["set"] for *_, e in results if not e["ipvae_beats_amortized_mse"]]
    numbers = dict(model=common.health(tr), steps=steps, marks=marks,
                   amortized=dict(kind="poisson", epochs=size["amortized_epochs"], beta=am.beta,
                                  history_epoch_loss=getattr(am, "history", {}).get("epoch_loss")),
                   sets=[e for *_, e in results], ipvae_beats_amortized_on=beats,
                   amortized_beats_ipvae_on=loses, claims=claims, figures=figures, sizes=size)
    md = [f"# ood (Figs. 2b, 3, 4){' — quick sizes' if ctx.quick else ''}", "",
          f"An MNIST-trained iP-VAE ({tr.label}, K={net.n_latents}), not retrained, on the "
          f"reference simulator to t={steps}; the amortized Poisson VAE (same K, decoder and "
          f"loss at β = {am.beta:g}, the ELBO; one encoder pass; {size['amortized_epochs']} "
          "epochs) trained on the same digits. Letters are rendered from "
          "matplotlib's DejaVu fonts, a stand-in for EMNIST letters. Probe: logistic "
          "regression on the rates, fit on upright MNIST training digits (rotated, 8x8) or on "
          "80% of the letters (letters), never refitted per rotation.", "",
          common.md_table(["set", "inputs", *[f"iP-VAE MSE t={t}" for t in marks],
                           "amortized MSE", f"iP-VAE R² t={steps}", "amortized R²",
                           "iP-VAE probe", "amortized probe", "lower MSE"], rows), "",
          f"The iP-VAE beats the amortized P-VAE's MSE on: {', '.join(beats) or 'none'}; "
          f"not on: {', '.join(loses) or 'none'}.", "", common.claims_md(claims), "",
          "Figures: " + ", ".join(figures), ""]
    common.write_outputs(ctx, NAME, numbers, "\n".join(md))
    return numbers
