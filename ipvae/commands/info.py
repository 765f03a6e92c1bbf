"""``ipvae info NET.npz``: shapes, parameters and meta of a network file."""
import json

import numpy as np

NAME = "info"
HELP = "show a network file's shapes, parameters and meta"


def add_arguments(p):
    p.add_argument("network", help="network file (.npz)")


def run(args):
    from networks import load_network

    net = load_network(args.network)

    def stats(a):
        return f"min {a.min():.4g}  mean {a.mean():.4g}  max {a.max():.4g}"

    print(f"network      {args.network}")
    print(f"input        D = {net.input_dim}  shape {net.input_shape}")
    print(f"latents      K = {net.n_latents}")
    print(f"phi          ({net.input_dim}, {net.n_latents})  {stats(net.phi)}")
    print(f"sigma        {stats(np.sqrt(net.sigma2))}")
    print(f"bias         {stats(net.bias)}")
    print(f"eta          {net.eta:.4g}")
    print(f"u0           {stats(net.u0)}")
    print(f"clamps       u <= {net.clamp_u:g}, du <= {net.clamp_du:g} (floor -8)")
    print("meta         " + json.dumps(net.meta, indent=2, sort_keys=True).replace("\n", "\n             "))
    return 0
