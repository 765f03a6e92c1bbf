"""``ipvae planted``: write a planted network (known dictionary) to a network file."""
from ipvae.checks import output_file, positive_int, seed

NAME = "planted"
HELP = "write a planted network with a known random dictionary"


def add_arguments(p):
    p.add_argument("--input-dim", type=positive_int, default=64, help="D (default 64)")
    p.add_argument("--latents", type=positive_int, default=128, help="K (default 128)")
    p.add_argument("--active", type=positive_int, default=5,
                   help="active units per input (default 5)")
    p.add_argument("--seed", type=seed, default=0, help="seed of the dictionary (default 0)")
    p.add_argument("--out", required=True, help="network file to write (.npz)")


def run(args):
    from ipvae.cli import UserError
    from networks import planted_network, save_network

    if args.active > args.latents:
        raise UserError(f"--active {args.active} is more than --latents {args.latents}")
    if args.input_dim * args.latents > (1 << 27):
        raise UserError(f"--input-dim x --latents = {args.input_dim * args.latents} weights; "
                        f"network files hold at most 2**27 (1 GiB)")
    out = output_file(args.out)
    net, _, _ = planted_network(args.input_dim, args.latents, args.active, args.seed)
    print(f"wrote {save_network(net, out)}  (D={net.input_dim}, K={net.n_latents})")
    return 0
