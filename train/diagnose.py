"""Why a trained network misses a quality floor: three measurements (issue 16).

``python -m train.diagnose MODEL.npz --data SET [--n N] [--steps T]`` prints them as
Markdown tables; ``docs/training-ablation.md`` quotes them.

**Loop gain** (:func:`loop_gain`).  Linearised around a fixed point, one latent's
update u ← u − η e^u (‖φ_k‖²_σ) δu multiplies a deviation by 1 − G_k with the loop gain

    G_k(u) = η · e^u · Σ_d φ_dk² / σ_d²,

so its inference oscillates with a growing period 2 once G_k > 2, i.e. above the rate
r*_k = 2 / (η Σ_d φ_dk²/σ_d²) (potential u*_k = log r*_k).  The table gives how many
latents are unstable at a few potentials, and which share of Σ_d φ_dk²/σ_d² comes from
pixels that barely vary in the data (std < ``quiet_std``): if the unstable latents drew
their gain from pixels whose σ fell to its floor, bounding σ from below would cure the
runaway; if not, it would not.

**R² by contrast** (:func:`r2_by_contrast`).  The matrix's R² is the mean over inputs of
1 − Σ(x − x̂)²/Σ(x − x̄)² (design §7), so an input with little contrast weighs as much as a
textured one, and a few stray spikes on a flat patch give it a large negative R².  The
table splits the held-out inputs into quartiles of their contrast ‖x − x̄‖ and gives each
quartile's mean R², beside the pooled R² 1 − ΣΣ(x − x̂)²/ΣΣ(x − x̄)², at a few steps.
"""
from __future__ import annotations

import argparse

import numpy as np

DEFAULT_STEPS = (16, 160, 999)


def loop_gain(net, x: np.ndarray, *, potentials=(1.0, 2.0, 3.0, 4.0),
              quiet_std: float = 0.05, sigma_floors=(0.05, 0.1, 0.15)) -> dict:
    """Per-latent loop gain of ``net`` (design §1.1 linearised), with data ``x`` (N, D).

    Returns a dict: ``weight`` (K,) Σ_d φ_dk²/σ_d² (per spike per step, in units of u per
    unit error); ``u_star`` (K,) the potential above which latent k's linearised update is
    unstable; ``quiet_share`` (K,) the share of ``weight`` from pixels whose std over x is
    below ``quiet_std``; ``unstable`` {u: number of latents with G_k(u) > 2};
    ``floored`` {floor: {u: the same count had every σ_d been at least ``floor``}};
    ``quiet_pixels`` the number of such pixels; ``eta``; ``clamp_u``.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != net.input_dim:
        raise ValueError(f"x must be (N, {net.input_dim}), got {x.shape}")
    inv_var = np.exp(-2.0 * np.asarray(net.log_sigma, dtype=np.float64))
    w = np.asarray(net.phi, dtype=np.float64) ** 2 * inv_var[:, None]        # (D, K)
    weight = w.sum(axis=0)
    quiet = x.std(axis=0) < quiet_std
    eta = float(np.exp(net.log_eta))
    with np.errstate(divide="ignore"):
        u_star = np.log(2.0 / (eta * weight))

    def unstable(weights):
        return {float(u): int((eta * np.exp(u) * weights > 2.0).sum()) for u in potentials}

    phi2 = np.asarray(net.phi, dtype=np.float64) ** 2
    floored = {float(f): unstable((phi2 * np.minimum(inv_var, f ** -2.0)[:, None]).sum(axis=0))
               for f in sigma_floors}
    return dict(weight=weight, u_star=u_star,
                quiet_share=w[quiet].sum(axis=0) / np.maximum(weight, np.finfo(float).tiny),
                unstable=unstable(weight), floored=floored,
                quiet_pixels=int(quiet.sum()), eta=eta, clamp_u=float(net.clamp_u))


def _simulate_varied(net, x: np.ndarray, steps: int, record, seed: int, progress: bool):
    """Run the reference simulator on the inputs of x (N, D) with non-zero variance.

    Returns (x (M, D) those inputs, total (M,) Σ_d (x_d − x̄)² of each, the Trace keeping
    the read-out at ``record``'s steps below ``steps``).  Inputs with zero variance are left
    out, as in ``train.evaluate``: their R² is undefined.
    """
    from networks.simulate import simulate

    x = np.asarray(x, dtype=np.float64)
    record = sorted({int(t) for t in record if 0 <= int(t) < steps})
    if not record:
        raise ValueError(f"no recorded step lies in [0, {steps})")
    total = ((x - x.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    keep = total > 0
    x, total = x[keep], total[keep]
    return x, total, simulate(net, x, steps, seed=seed, record=record, progress=progress)


def r2_by_contrast(net, x: np.ndarray, steps: int, *, record=DEFAULT_STEPS, seed: int = 0,
                   progress: bool = False) -> dict:
    """R² of the spike read-out Φz_t by contrast quartile of the inputs x (N, D).

    Runs the reference simulator (true counts, shared noise of ``seed``) for ``steps``
    steps, keeping the read-out at ``record`` (steps < ``steps``).  Returns a dict:
    ``edges`` the contrast quartiles' edges (3,), and per recorded step t a dict with
    ``mean`` (the matrix's R²), ``median``, ``pooled``, ``quartiles`` (4,) mean R² per
    contrast quartile (lowest first) and ``spikes`` mean counts per step and input.
    Inputs with zero variance are left out, as in ``train.evaluate``.
    """
    return _by_contrast(*_simulate_varied(net, x, steps, record, seed, progress))


def _by_contrast(x, total, trace, only=None) -> dict:
    """:func:`r2_by_contrast` from a run (``_simulate_varied``'s), at its steps in ``only``."""
    contrast = np.sqrt(total)
    edges = np.quantile(contrast, [0.25, 0.5, 0.75])
    which = np.searchsorted(edges, contrast, side="right")                   # 0 … 3
    out = dict(edges=edges, n=len(x))
    for i, t in enumerate(trace.steps):
        if only is not None and t not in only:
            continue
        res = ((x - trace.recon[i]) ** 2).sum(axis=1)
        r2 = 1.0 - res / total
        out[int(t)] = dict(mean=float(r2.mean()), median=float(np.median(r2)),
                           pooled=float(1.0 - res.sum() / total.sum()),
                           quartiles=[float(r2[which == q].mean()) for q in range(4)],
                           spikes=float(trace.spikes[i].sum(axis=1).mean()))
    return out


def loop_spectrum(net, rate: np.ndarray, *, active_rate: float = 0.2) -> dict:
    """The linearised loop's modes at the rates ``rate`` (N, K) of N inputs.

    For each input, over its latents with rate > ``active_rate``: ``mu_max`` (N,) the
    largest eigenvalue of η diag(√r) ΦᵀΣ⁻¹Φ diag(√r) (stable below 2), ``tenfold`` (N,)
    the steps its slowest mode takes to shrink tenfold, ``active`` (N,) how many latents
    count.  Inputs with no latent above ``active_rate`` get NaN.
    """
    rate = np.atleast_2d(np.asarray(rate, dtype=np.float64))
    phi = np.asarray(net.phi, dtype=np.float64)
    inv_var = np.exp(-2.0 * np.asarray(net.log_sigma, dtype=np.float64))
    eta = float(np.exp(net.log_eta))
    n = rate.shape[0]
    out = dict(mu_max=np.full(n, np.nan), tenfold=np.full(n, np.nan), active=np.zeros(n, int))
    for i, r in enumerate(rate):
        act = r > active_rate
        out["active"][i] = int(act.sum())
        if not act.any():
            continue
        s = np.sqrt(r[act])
        mu = np.linalg.eigvalsh(eta * s[:, None] * ((phi[:, act].T * inv_var) @ phi[:, act])
                                * s[None, :])
        out["mu_max"][i] = mu.max()
        shrink = abs(1.0 - mu.min())
        out["tenfold"][i] = np.log(10.0) / -np.log(shrink) if 0 < shrink < 1 else np.inf
    return out


def relaxation(net, x: np.ndarray, steps: int, *, record=DEFAULT_STEPS, seed: int = 0,
               progress: bool = False, spectrum_n: int = 100, active_rate: float = 0.2) -> dict:
    """How inference of ``net`` on x (N, D) relaxes over ``steps`` steps (true counts).

    Returns a dict: ``error_gain`` η · mean_d σ_d⁻², ``leak`` the median of η·b_k,
    ``sigma`` the median σ_d, ``eta``, the medians over latents k of ``atom`` ‖φ_k‖,
    ``spike_gain`` η Σ_d φ_dk²/σ_d² (what one spike feeds back to its own potential),
    ``drive`` η ‖φ_k/σ²‖ (the input's push per unit of input) and ``u0``; and per recorded step t (< ``steps``) a dict with the
    mean over inputs of ``r2_spikes`` (Φz_t), ``r2_rates`` (Φe^{u_t}), ``noise_share``
    Σ_k e^{u_k}‖φ_k‖² / Σ_d(x_d − x̄)² (the expected R² the counts' Poisson noise costs),
    ``zeros`` the share of zero counts and ``spikes`` counts per step and input; and
    ``spectrum`` the medians of :func:`loop_spectrum` (at ``active_rate``) at the last
    recorded step over the first ``spectrum_n`` inputs (``mu_max``, ``tenfold``,
    ``active``).  Inputs with zero variance are left out, as in ``train.evaluate``.
    """
    return _relaxation(net, *_simulate_varied(net, x, steps, record, seed, progress),
                       spectrum_n=spectrum_n, active_rate=active_rate)


def _relaxation(net, x, total, trace, *, spectrum_n: int, active_rate: float, only=None) -> dict:
    """:func:`relaxation` from a run (``_simulate_varied``'s), at its steps in ``only``."""
    from train.evaluate import r2_curve

    phi = np.asarray(net.phi, dtype=np.float64)
    col_norm2 = (phi ** 2).sum(axis=0)                                      # (K,)
    inv_var = np.exp(-2.0 * np.asarray(net.log_sigma, dtype=np.float64))
    eta = float(np.exp(net.log_eta))
    out = dict(eta=eta, error_gain=eta * float(inv_var.mean()),
               leak=float(np.median(eta * np.exp(np.asarray(net.log_bias)))),
               sigma=float(np.median(np.exp(np.asarray(net.log_sigma)))), n=len(x),
               atom=float(np.median(np.sqrt(col_norm2))),
               spike_gain=float(np.median(eta * (phi ** 2 * inv_var[:, None]).sum(axis=0))),
               drive=float(np.median(eta * np.linalg.norm(phi * inv_var[:, None], axis=0))),
               u0=float(np.median(net.u0)))
    rates = np.exp(trace.u[:len(trace.steps)])                              # (S, N, K)
    r2_spikes = r2_curve(x, trace.step_mse[trace.steps])
    r2_rates = r2_curve(x, ((x - rates @ phi.T) ** 2).mean(axis=2))
    for i, t in enumerate(trace.steps):
        if only is not None and t not in only:
            continue
        out[int(t)] = dict(r2_spikes=float(r2_spikes[i]), r2_rates=float(r2_rates[i]),
                           noise_share=float(((rates[i] @ col_norm2) / total).mean()),
                           zeros=float(trace.step_zeros[t].mean()),
                           spikes=float(trace.spikes[i].sum(axis=1).mean()))
    spec = loop_spectrum(net, rates[-1][:spectrum_n], active_rate=active_rate)
    out["spectrum"] = {k: float(np.nanmedian(v)) if np.isfinite(v).any() else float("nan")
                       for k, v in spec.items()}
    out["spectrum"].update(t=int(trace.steps[-1]), active_rate=float(active_rate))
    return out


def relaxation_table(r: dict) -> str:
    """:func:`relaxation`'s result as a Markdown table with its constants above it."""
    lines = [f"Relaxation ({r['n']} inputs; η = {r['eta']:.3g}, median σ = {r['sigma']:.3g}, "
             f"error gain η·mean σ⁻² = {r['error_gain']:.3g}, leak η·b = {r['leak']:.3g}; "
             f"medians over latents: ‖φ_k‖ = {r['atom']:.3g}, per-spike loop gain "
             f"η Σ φ²/σ² = {r['spike_gain']:.3g}, drive η ‖φ/σ²‖ = {r['drive']:.3g}, "
             f"u₀ = {r['u0']:.3g}):", "",
             "| t | R² spikes | R² rates | noise share | zeros | spikes/step |",
             "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for t in sorted(k for k in r if isinstance(k, int)):
        s = r[t]
        lines.append(f"| {t} | {s['r2_spikes']:.3f} | {s['r2_rates']:.3f} | "
                     f"{s['noise_share']:.3f} | {s['zeros']:.3f} | {s['spikes']:.1f} |")
    sp = r["spectrum"]
    lines += ["", f"Linearised at t = {sp['t']} over the latents above {sp['active_rate']:g} spikes "
              f"per step (median "
              f"{sp['active']:.0f}; medians over inputs): fastest mode η·μ_max = {sp['mu_max']:.3g} "
              f"(stable below 2), slowest mode shrinks tenfold in {sp['tenfold']:.4g} steps."]
    return "\n".join(lines)


def _tables(net, x, steps, seed) -> str:
    g = loop_gain(net, x)
    floors = list(g["floored"])
    lines = [f"Loop gain (η = {g['eta']:.4g}, c_u = {g['clamp_u']:g}; {g['quiet_pixels']} "
             f"pixels with std < 0.05):", "",
             "| u | latents with G_k(u) > 2 | " + " | ".join(f"with σ ≥ {f:g}" for f in floors)
             + " |", "| ---: " * (2 + len(floors)) + "|"]
    lines += [f"| {u:g} | {n} | " + " | ".join(str(g["floored"][f][u]) for f in floors) + " |"
              for u, n in g["unstable"].items()]
    order = np.argsort(g["u_star"])[:10]
    lines += ["", "The 10 least stable latents: u* = "
              + ", ".join(f"{v:.2f}" for v in g["u_star"][order])
              + "; share of their gain from quiet pixels = "
              + ", ".join(f"{v:.2f}" for v in g["quiet_share"][order]), ""]
    relax_steps = {2, 4, 8, 16, 32, 64, 160, 400, steps - 1}
    run = _simulate_varied(net, x, steps, relax_steps | set(DEFAULT_STEPS), seed, False)
    r = _by_contrast(*run, only=set(DEFAULT_STEPS))
    e = r["edges"]
    lines += [f"R² of the spike read-out by contrast quartile ({r['n']} inputs; quartile "
              f"edges of ‖x − x̄‖: {e[0]:.3g}, {e[1]:.3g}, {e[2]:.3g}):", "",
              "| t | mean R² | median | pooled | Q1 (flattest) | Q2 | Q3 | Q4 | spikes/step |",
              "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for t in sorted(k for k in r if isinstance(k, int)):
        s = r[t]
        q = " | ".join(f"{v:.3f}" for v in s["quartiles"])
        lines.append(f"| {t} | {s['mean']:.3f} | {s['median']:.3f} | {s['pooled']:.3f} | {q} "
                     f"| {s['spikes']:.1f} |")
    lines += ["", relaxation_table(_relaxation(net, *run, spectrum_n=100, active_rate=0.2,
                                                only=relax_steps))]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.diagnose", description=__doc__.split("\n")[0])
    ap.add_argument("model", help="a trained network file (.npz)")
    ap.add_argument("--data", default="mnist", help="data set of the held-out inputs "
                    "(as ipvae train --data; default mnist)")
    ap.add_argument("--n", type=int, default=400, help="held-out inputs (default 400)")
    ap.add_argument("--steps", type=int, default=1000, help="inference steps (default 1000)")
    ap.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    args = ap.parse_args(argv)
    if args.n < 1 or args.steps < 2:
        ap.error("--n must be >= 1 and --steps >= 2")
    from networks import load_network
    from train.data import load_dataset

    try:
        net = load_network(args.model)
        x = load_dataset(args.data, "test").x[:args.n]
        print(_tables(net, x, args.steps, args.seed))
    except (OSError, ValueError) as err:
        print(f"python -m train.diagnose: {err}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
