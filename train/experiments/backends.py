"""``backends``: one trained network through every backend, MSE curves overlaid.

The MNIST model of ``horizon`` (linear decoder, T_train = 16; a tiny one with --quick) runs
on held-out digits through the reference simulator, Lava (floating point, folded), Brian2
(cython), the fixed-point emulator and Lava ``fixed_pt``.  The float backends share the
noise of design §2.2, so they must emit the reference's raster and MSE curve exactly; the
fixed-point pair draws its own integer noise (design §2.4) and must agree with itself bit
for bit, and is judged against float by its MSE (steps T/2 … T−1, ratio to the reference's).
"""
from __future__ import annotations

import time

import numpy as np

from train.experiments import common, horizon

NAME = "backends"
HELP = "one trained network through reference, Lava float/fixed, Brian2, fixed-point emulator"
FILTERS = ()

FULL = dict(n=8, steps=300)
QUICK = dict(n=2, steps=30)
BACKENDS = [("reference", "reference", {}), ("lava", "lava (float)", {}),
            ("brian2", "brian2 (cython)", dict(target="cython")),
            ("fixed", "fixed-point emulator", {}), ("lava-fixed", "lava fixed_pt", {})]
FLOAT_BOUND = (0.99, 1.02)
"""The fixed-point issue's measured band of fixed/float MSE ratios at 8 weight bits
(README, docs/fixed-point.md), reported beside the ratio (not tuned to)."""


def model_config(ctx):
    if ctx.quick:
        return horizon.config(horizon.QUICK, "mnist", "linear", 4, ctx.seed)
    return horizon.config(horizon.FULL, "mnist", "linear", 16, ctx.seed)


def run(ctx: common.Context) -> dict:
    from networks import simulate
    from networks.plots import plot_rasters, pyplot, save_figure

    size = QUICK if ctx.quick else FULL
    tr = common.trained(ctx, model_config(ctx))
    test = common.dataset("mnist", "test", size["n"], seed=ctx.seed)
    x, steps = test.x.astype(np.float64), size["steps"]
    traces, seconds = {}, {}
    for backend, label, opts in BACKENDS:
        ctx.log(f"{label}: {len(x)} held-out digits, {steps} steps")
        t0 = time.perf_counter()
        traces[backend] = simulate(tr.net, x, steps, backend=backend, seed=ctx.seed,
                                   progress=ctx.progress, **opts)
        seconds[backend] = time.perf_counter() - t0
    ref = traces["reference"]
    mse = {b: tr_.mse() for b, tr_ in traces.items()}
    late = slice(steps // 2, steps)

    def agreement(a, b):
        ta, tb = traces[a], traces[b]
        return dict(identical_counts=float((ta.spikes == tb.spikes).mean()),
                    max_abs_du=float(np.abs(ta.u - tb.u).max()),
                    max_abs_mse_difference=float(np.abs(mse[a] - mse[b]).max()),
                    mse_curve_equal=bool(np.array_equal(mse[a], mse[b])))

    pairs = {f"{b} vs reference": agreement(b, "reference") for b in ("lava", "brian2")}
    pairs["lava-fixed vs fixed"] = agreement("lava-fixed", "fixed")
    ratio = float(mse["fixed"][late].mean() / mse["reference"][late].mean())
    claims = [
        common.claim("Lava float reproduces the reference's raster and MSE curve exactly "
                     "(shared noise)", pairs["lava vs reference"]["identical_counts"] == 1.0
                     and pairs["lava vs reference"]["max_abs_mse_difference"] <= 1e-12,
                     **pairs["lava vs reference"]),
        common.claim("Brian2 reproduces the reference's raster (shared noise)",
                     pairs["brian2 vs reference"]["identical_counts"] == 1.0,
                     **pairs["brian2 vs reference"]),
        common.claim("Lava fixed_pt equals the fixed-point emulator bit for bit",
                     pairs["lava-fixed vs fixed"]["identical_counts"] == 1.0
                     and pairs["lava-fixed vs fixed"]["max_abs_du"] == 0.0,
                     **pairs["lava-fixed vs fixed"]),
        common.claim(f"fixed-point MSE (steps {steps // 2}-{steps - 1}) within "
                     f"x{FLOAT_BOUND[0]}-{FLOAT_BOUND[1]} of float", FLOAT_BOUND[0] <= ratio
                     <= FLOAT_BOUND[1], ratio=ratio)]
    if not ctx.quick:
        claims.append(common.claim("the deployed network learned (reference R² from spikes at "
                                   "the last step > 0)", float(ref.r2()[-1]) > 0,
                                   r2_last=float(ref.r2()[-1])))

    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    t = np.arange(1, steps + 1)
    for i, (backend, label, _) in enumerate(BACKENDS):
        a.plot(t, mse[backend], label=label, lw=2.5 if i == 0 else 1.2,
               ls="-" if i < 3 else "--", color=f"C{i}")
        if backend != "reference":
            base = "fixed" if backend == "lava-fixed" else "reference"
            b.plot(t, np.abs(mse[backend] - mse[base]) + 1e-18,
                   label=f"{label} − {base}", ls="-" if i < 3 else "--", color=f"C{i}")
    for ax in (a, b):
        ax.set_xscale("log")
        ax.set_xlabel("inference step t")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    a.set_yscale("log")
    b.set_yscale("log")
    a.set_ylabel("MSE per pixel (spike read-out)")
    b.set_ylabel("|MSE difference| (+1e-18)")
    fig.suptitle(f"one network ({tr.label}, K={tr.net.n_latents}) on {len(x)} held-out digits: "
                 f"float backends share the noise; fixed point draws its own (ratio {ratio:.3f})")
    fig.tight_layout()
    save_figure(fig, ctx.path("backends_mse.png"))
    plot_rasters({"reference": ref, "lava": traces["lava"], "brian2": traces["brian2"]},
                 ctx.path("backends_rasters.png"))
    figures = ["backends_mse.png", "backends_rasters.png"]

    rows = [(label, round(seconds[b], 2), float(mse[b][-1]), float(mse[b][late].mean()),
             pairs.get(f"{b} vs reference", {}).get("identical_counts"),
             pairs.get(f"{b} vs reference", {}).get("max_abs_mse_difference"))
            for b, label, _ in BACKENDS]
    numbers = dict(network=str(tr.folder), training=common.health(tr), n_inputs=len(x),
                   steps=steps, seconds=seconds, pairs=pairs,
                   fixed_over_float_mse=ratio, fixed_bound=list(FLOAT_BOUND),
                   mse={b: [float(v) for v in m] for b, m in mse.items()},
                   claims=claims, figures=figures)
    md = [f"# backends{' — quick sizes' if ctx.quick else ''}", "",
          f"Network {tr.label}, K={tr.net.n_latents}; {len(x)} held-out MNIST digits, {steps} "
          "steps; float backends share the noise of design §2.2, fixed point uses its own "
          "integer generator.", "",
          common.md_table(["backend", "wall s", "MSE last step", f"MSE steps {steps // 2}+",
                           "identical counts vs reference", "max |ΔMSE| vs reference"], rows), "",
          f"Lava float equals the reference exactly: "
          f"{'yes' if claims[0]['holds'] else 'NO'} (identical counts "
          f"{pairs['lava vs reference']['identical_counts']:.4%}, max |ΔMSE| "
          f"{pairs['lava vs reference']['max_abs_mse_difference']:.3g}).",
          "Lava fixed_pt equals the emulator bit for bit: "
          f"{'yes' if claims[2]['holds'] else 'NO'}.",
          f"Fixed point's MSE / float's (steps {steps // 2}–{steps - 1}): {ratio:.4f} "
          f"(the fixed-point issue's band: {FLOAT_BOUND[0]}–{FLOAT_BOUND[1]}).", "",
          common.claims_md(claims), ""]
    common.write_outputs(ctx, NAME, numbers, "\n".join(md))
    return numbers
