"""``ipvae compare NET.npz --backends reference,lava,brian2``: cross-check backends' rasters."""
from ipvae.cli import UserError
from ipvae.inputs import add_data_arguments, load_inputs

NAME = "compare"
HELP = "run several backends on the same network and inputs and compare their spike rasters"


def add_arguments(p):
    p.add_argument("network", help="network file (.npz)")
    p.add_argument("--backends", default="reference,brian2",
                   help="comma-separated backends to compare (default reference,brian2)")
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    add_data_arguments(p)
    p.add_argument("--target", default="cython",
                   help="brian2 code-generation target: numpy | cython | cpp_standalone")
    p.add_argument("--topology", help="lava: folded | error-units")
    p.add_argument("--independent-noise", action="store_true",
                   help="backends draw their own random numbers; compare statistics over trials")
    p.add_argument("--trials", type=int, default=20,
                   help="trials per input with --independent-noise (default 20)")
    p.add_argument("--out", required=True, help="folder for report.json, rasters.png, mse.png")


def run(args):
    from networks import load_network
    from networks.compare import run_comparison
    from networks.simulate import available_backends

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in backends if b not in available_backends()]
    if unknown:
        raise UserError(f"unknown backend(s) {', '.join(unknown)}; "
                        f"available: {', '.join(available_backends())}")
    if len(set(backends)) < 2 or len(set(backends)) != len(backends):
        raise UserError(f"--backends needs at least two different backends, got {args.backends!r}")
    if args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    if args.independent_noise and args.trials < 2:
        raise UserError(f"--trials must be >= 2, got {args.trials}")
    net = load_network(args.network)
    x, offset = load_inputs(args, net)
    options = {"brian2": {"target": args.target}}
    if args.topology:
        options["lava"] = {"topology": args.topology}
    report = run_comparison(net, x, args.steps, backends, args.out, seed=args.seed,
                            offset=offset, options=options,
                            independent_noise=args.independent_noise, trials=args.trials,
                            progress=True, network_path=args.network)
    for pair, r in report["pairs"].items():
        a, b = pair.split("|")
        if report["mode"] == "shared":
            print(f"{a} vs {b}: {r['identical_share']:.6%} identical counts "
                  f"({r['n_different']} of {r['n_counts']} differ), rate correlation "
                  f"{r['rate_correlation']:.6f}, max |du| {r['max_abs_du']:.3g}  "
                  f"{'PASS' if r['passed'] else 'FAIL'}")
        else:
            print(f"{a} vs {b}: rate correlation {r['rate_correlation']:.4f}, "
                  f"min corrected p {min(r['min_p_rate'], r['min_p_mse']):.3g} over "
                  f"{r['n_tests']} tests, Fano {r['mean_fano'][0]:.3f} vs {r['mean_fano'][1]:.3f}  "
                  f"{'PASS' if r['passed'] else 'FAIL'}")
    if report["mode"] == "independent":
        print(f"test: {report['test']}")
    else:
        print(f"threshold: {report['threshold']:.4%} identical counts under shared noise")
    print(f"wrote {args.out}/report.json, rasters.png, mse.png")
    print("PASS" if report["passed"] else "FAIL")
    return 0 if report["passed"] else 1
