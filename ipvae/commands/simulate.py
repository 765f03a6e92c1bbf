"""``ipvae simulate NET.npz``: run spiking inference with any backend, save the trace.

Under ``torchrun --nproc_per_node P -m ipvae simulate ...`` every process runs a
contiguous index range of the inputs (noise keyed by index, design §2.2) and
rank 0 gathers the trace and writes it: the same arrays as one process.
"""
from ipvae.checks import output_file, positive_int, seed
from ipvae.cli import UserError
from ipvae.inputs import add_data_arguments, load_inputs

NAME = "simulate"
HELP = "run spiking inference on a network file with one backend"

BACKEND_OPTIONS = {"reference": (), "lava": ("topology",), "brian2": ("target",), "fixed": (),
                   "lava-fixed": ()}
"""The CLI options each backend takes (the rest are refused naming the backend's own)."""


def add_arguments(p):
    p.add_argument("network", help="network file (.npz)")
    p.add_argument("--backend", default="reference", choices=list(BACKEND_OPTIONS),
                   help="simulator (default reference)")
    p.add_argument("--topology", choices=["folded", "error-units"],
                   help="lava only: folded (default) | error-units")
    p.add_argument("--target", choices=["numpy", "cython", "cpp_standalone"],
                   help="brian2 only: code-generation target (default cython)")
    p.add_argument("--steps", type=positive_int, default=64,
                   help="inference steps T per input (default 64)")
    p.add_argument("--seed", type=seed, default=0,
                   help="noise seed: input i gets the stream (seed, offset + i) (default 0)")
    add_data_arguments(p)
    p.add_argument("--out", required=True, help="trace file to write (.npz)")
    p.add_argument("--raster", help="also draw the spike raster of the first input to this PNG")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def backend_options(args, backend):
    """The backend options given on the command line; UserError for one that does not apply."""
    given = {k: getattr(args, k) for k in ("topology", "target") if getattr(args, k, None)}
    allowed = BACKEND_OPTIONS[backend]
    wrong = [k for k in given if k not in allowed]
    if wrong:
        takes = ("its options are " + ", ".join(f"--{k}" for k in allowed)) if allowed \
            else "it takes no backend options"
        raise UserError(f"--{wrong[0]} does not apply to backend {backend!r}; {takes}")
    return given


def run(args):
    from networks.distributed import lead_or_serve

    return lead_or_serve(_lead, args)


def _lead(args, world):
    from networks import load_network
    from networks.distributed import concat_traces, map_shards, simulate_shard

    options = backend_options(args, args.backend)
    out = output_file(args.out, "--out", inputs=[args.network])
    if args.raster:
        output_file(args.raster, "--raster", inputs=[args.network])
        if out.resolve() == output_file(args.raster).resolve():
            raise UserError("--out and --raster name the same file")
    net = load_network(args.network)
    x, offset = load_inputs(args, net)
    parts = map_shards(simulate_shard, x, offset=offset, net=net, steps=args.steps,
                       backend=args.backend, seed=args.seed, progress=not args.quiet, **options)
    trace = concat_traces(parts, world)
    trace.save(out)
    mse = trace.mse()
    procs = f" over {world} processes" if world > 1 else ""
    print(f"wrote {args.out}: {args.backend}, {x.shape[0]} inputs x {args.steps} steps{procs}, "
          f"MSE {mse[0]:.4g} (t=0) -> {mse[-1]:.4g} (t={args.steps - 1})")
    if args.raster:
        from networks.plots import plot_rasters

        label = " ".join(filter(None, (args.backend, args.topology, args.target)))
        plot_rasters({label: trace}, args.raster)
        print(f"wrote {args.raster}")
    return 0
