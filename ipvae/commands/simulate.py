"""``ipvae simulate NET.npz``: run spiking inference with any backend, save the trace."""
from ipvae.inputs import add_data_arguments, load_inputs

NAME = "simulate"
HELP = "run spiking inference on a network file with one backend"


def add_arguments(p):
    p.add_argument("network", help="network file (.npz)")
    p.add_argument("--backend", default="reference", help="reference | lava | brian2")
    p.add_argument("--topology", help="lava: folded | error-units")
    p.add_argument("--target", help="brian2: numpy | cython | cpp_standalone")
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    add_data_arguments(p)
    p.add_argument("--out", required=True, help="trace file to write (.npz)")
    p.add_argument("--raster", help="also draw the spike raster of the first input to this PNG")


def run(args):
    from networks import load_network, simulate

    net = load_network(args.network)
    x, offset = load_inputs(args, net)
    options = {k: v for k, v in (("topology", args.topology), ("target", args.target)) if v}
    trace = simulate(net, x, args.steps, backend=args.backend, seed=args.seed, offset=offset,
                     progress=True, **options)
    trace.save(args.out)
    mse = trace.mse()
    print(f"wrote {args.out}: {args.backend}, {x.shape[0]} inputs x {args.steps} steps, "
          f"MSE {mse[0]:.4g} (t=0) -> {mse[-1]:.4g} (t={args.steps - 1})")
    if args.raster:
        from networks.plots import plot_rasters

        label = " ".join(filter(None, (args.backend, args.topology, args.target)))
        plot_rasters({label: trace}, args.raster)
        print(f"wrote {args.raster}")
    return 0
