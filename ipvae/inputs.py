"""Input selection shared by the CLI commands: ``--data NAME --n N --offset I``.

``--data planted`` makes inputs from sparse codes under the network's own
dictionary; any other value goes to ``train.data.load_dataset`` (``mnist``,
``digits``, ``patches`` or a path), test split.  ``--offset`` is the index of
the first input in the data set and keys its noise (design §2.2), so input i
of the data set gets the same spikes whichever range it is simulated in.
"""
from ipvae.checks import finite_float, nonnegative_int, positive_int, seed
from ipvae.cli import UserError

DATASETS = ["planted", "mnist", "digits", "patches"]


def add_data_arguments(p):
    p.add_argument("--data", default="planted",
                   help="inputs: planted (sparse codes under the network's own dictionary), "
                        "mnist, digits, patches (test split), or a PATH to a .npy array / "
                        "image folder")
    p.add_argument("--n", "--n-inputs", type=positive_int, default=8,
                   help="number of inputs (default 8; --n-inputs under torchrun, whose own "
                        "options --nnodes, --nproc... make --n ambiguous)")
    p.add_argument("--offset", type=nonnegative_int, default=0,
                   help="index of the first input in the data set (keys its noise; default 0)")
    p.add_argument("--active", type=positive_int, default=5,
                   help="planted: active units per input (default 5)")
    p.add_argument("--data-seed", type=seed, default=0,
                   help="planted: seed of the codes; data sets: seed of the split (default 0)")
    p.add_argument("--rotate", type=finite_float,
                   help="data sets: rotate every image by DEG degrees")
    p.add_argument("--data-dir", help="mnist: folder with the full MNIST IDX files")


def load_inputs(args, net):
    """Return (x (N, D), offset) for the CLI's data arguments."""
    if args.n < 1:
        raise UserError(f"--n must be >= 1, got {args.n}")
    if args.offset < 0:
        raise UserError(f"--offset must be >= 0, got {args.offset}")
    from ipvae.checks import SEED_LIMIT

    if args.offset + args.n > SEED_LIMIT:
        raise UserError(f"--offset {args.offset} + --n {args.n} passes 2**63: noise keys "
                        f"offset + i must stay below 2**63")
    rotate, data_dir = getattr(args, "rotate", None), getattr(args, "data_dir", None)
    if args.data == "planted":
        if args.active > net.n_latents:
            raise UserError(f"--active {args.active} is more than the network's "
                            f"K = {net.n_latents} latents")
        if rotate is not None or data_dir is not None:
            raise UserError("--rotate and --data-dir apply to data sets, not to planted inputs")
        from networks import planted_inputs

        x, _ = planted_inputs(net, args.n, args.active, args.data_seed, offset=args.offset)
        return x, args.offset
    from train.data import load_dataset

    try:
        ds = load_dataset(args.data, "test", seed=args.data_seed, rotate=rotate,
                          data_dir=data_dir)
    except ValueError as err:
        if str(err).startswith("unknown data set"):
            raise UserError(f"unknown --data {args.data!r}; available: {', '.join(DATASETS)}, "
                            "or a path to a .npy file or an image folder") from None
        raise
    if ds.dim != net.input_dim:
        raise UserError(f"data set {args.data!r} has D = {ds.dim} (input shape "
                        f"{ds.input_shape}) but the network expects D = {net.input_dim} "
                        f"(input shape {net.input_shape})")
    if args.offset >= len(ds):
        raise UserError(f"--offset {args.offset} is past the end of the {args.data!r} test "
                        f"split ({len(ds)} inputs)")
    return ds.x[args.offset:args.offset + args.n].astype("float64"), args.offset
