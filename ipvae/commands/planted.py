"""``ipvae planted``: write a planted network (known dictionary) to a network file."""
NAME = "planted"
HELP = "write a planted network with a known random dictionary"


def add_arguments(p):
    p.add_argument("--input-dim", type=int, default=64, help="D (default 64)")
    p.add_argument("--latents", type=int, default=128, help="K (default 128)")
    p.add_argument("--active", type=int, default=5, help="active units per input (default 5)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="network file to write (.npz)")


def run(args):
    from networks import planted_network, save_network

    net, _, _ = planted_network(args.input_dim, args.latents, args.active, args.seed)
    print(f"wrote {save_network(net, args.out)}  (D={net.input_dim}, K={net.n_latents})")
    return 0
