"""``ipvae demo``: the main job end to end on embedded data.

Planted network → spiking inference with the reference simulator → trace
file, raster PNG and an error-versus-step PNG.
"""
from pathlib import Path

NAME = "demo"
HELP = "run the main job end to end on embedded data (what `make demo` runs)"


def add_arguments(p):
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)


def run(args):
    from networks import planted_network, save_network, simulate
    from networks.plots import plot_rasters

    out = Path(args.out)
    net, x, codes = planted_network(input_dim=64, n_latents=128, n_active=5, seed=args.seed)
    save_network(net, out / "planted.npz")
    trace = simulate(net, x, args.steps, seed=args.seed, progress=True)
    trace.save(out / "trace_reference.npz")
    plot_rasters({"reference": trace}, out / "raster.png")
    mse = trace.mse()
    print(f"planted network D={net.input_dim} K={net.n_latents}: reference MSE/pixel "
          f"{mse[0]:.4g} (t=0) -> {mse[-1]:.4g} (t={args.steps - 1}), "
          f"sparsity {trace.sparsity()[-1]:.2f}")
    print(f"wrote {out}/planted.npz, trace_reference.npz, raster.png")
    return 0
