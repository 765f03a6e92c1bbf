"""Why a trained network misses a quality floor: two measurements (issue 16).

``python -m train.diagnose MODEL.npz --data SET [--n N] [--steps T]`` prints both as
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
    from networks.simulate import simulate

    x = np.asarray(x, dtype=np.float64)
    record = sorted(int(t) for t in record if 0 <= int(t) < steps)
    if not record:
        raise ValueError(f"no recorded step lies in [0, {steps})")
    centred = x - x.mean(axis=1, keepdims=True)
    total = (centred ** 2).sum(axis=1)
    keep = total > 0
    trace = simulate(net, x[keep], steps, seed=seed, record=record, progress=progress)
    x, total = x[keep], total[keep]
    contrast = np.sqrt(total)
    edges = np.quantile(contrast, [0.25, 0.5, 0.75])
    which = np.searchsorted(edges, contrast, side="right")                   # 0 … 3
    out = dict(edges=edges, n=int(keep.sum()))
    for i, t in enumerate(trace.steps):
        res = ((x - trace.recon[i]) ** 2).sum(axis=1)
        r2 = 1.0 - res / total
        out[int(t)] = dict(mean=float(r2.mean()), median=float(np.median(r2)),
                           pooled=float(1.0 - res.sum() / total.sum()),
                           quartiles=[float(r2[which == q].mean()) for q in range(4)],
                           spikes=float(trace.spikes[i].sum(axis=1).mean()))
    return out


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
    r = r2_by_contrast(net, x, steps, seed=seed)
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
