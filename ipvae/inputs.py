"""Input selection shared by the CLI commands: ``--data NAME --n N --offset I``."""
from ipvae.cli import UserError

DATASETS = ["planted"]


def add_data_arguments(p):
    p.add_argument("--data", default="planted",
                   help="inputs: planted (sparse codes under the network's own dictionary)")
    p.add_argument("--n", type=int, default=8, help="number of inputs (default 8)")
    p.add_argument("--offset", type=int, default=0,
                   help="index of the first input in the data set (keys its noise)")
    p.add_argument("--active", type=int, default=5, help="planted: active units per input")
    p.add_argument("--data-seed", type=int, default=0, help="planted: seed of the codes")


def load_inputs(args, net):
    """Return (x (N, D), offset) for the CLI's data arguments."""
    if args.n < 1:
        raise UserError(f"--n must be >= 1, got {args.n}")
    if args.data == "planted":
        from networks import planted_inputs

        x, _ = planted_inputs(net, args.offset + args.n, args.active, args.data_seed)
        return x[args.offset:], args.offset
    raise UserError(f"unknown --data {args.data!r}; available: {', '.join(DATASETS)}")
