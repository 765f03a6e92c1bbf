"""``ipvae compare NET.npz --backends reference,lava,brian2``: cross-check backends' rasters."""
from ipvae.checks import output_folder, positive_int, seed
from ipvae.cli import UserError
from ipvae.inputs import add_data_arguments, load_inputs

NAME = "compare"
HELP = "run several backends on the same network and inputs and compare their spike rasters"

OUTPUTS = ("report.json", "rasters.png", "mse.png")


def _trials(text):
    value = positive_int(text)
    if value < 2:
        import argparse

        raise argparse.ArgumentTypeError(f"must be >= 2 (statistics across trials), got {value}")
    return value


def add_arguments(p):
    p.add_argument("network", help="network file (.npz)")
    p.add_argument("--backends", default="reference,brian2",
                   help="comma-separated backends to compare (default reference,brian2)")
    p.add_argument("--steps", type=positive_int, default=64,
                   help="inference steps T per input (default 64)")
    p.add_argument("--seed", type=seed, default=0,
                   help="noise seed: input i gets the stream (seed, offset + i) (default 0)")
    add_data_arguments(p)
    p.add_argument("--target", choices=["numpy", "cython", "cpp_standalone"],
                   help="brian2 only: code-generation target (default cython)")
    p.add_argument("--topology", choices=["folded", "error-units"],
                   help="lava only: folded (default) | error-units")
    p.add_argument("--independent-noise", action="store_true",
                   help="backends draw their own random numbers; compare statistics over trials")
    p.add_argument("--trials", type=_trials,
                   help="trials per input with --independent-noise (default 20)")
    p.add_argument("--out", required=True, help="folder for report.json, rasters.png, mse.png")
    p.add_argument("--force", action="store_true",
                   help="replace the results of an earlier run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


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
    options = {}
    for flag, backend, key in (("--target", "brian2", "target"),
                               ("--topology", "lava", "topology")):
        value = getattr(args, key)
        if value is None:
            continue
        if backend not in backends:
            raise UserError(f"{flag} applies to backend {backend!r}, which is not in "
                            f"--backends {args.backends}")
        options[backend] = {key: value}
    if args.trials is not None and not args.independent_noise:
        raise UserError("--trials applies with --independent-noise only")
    trials = args.trials or 20
    output_folder(args.out, OUTPUTS, force=args.force)
    net = load_network(args.network)
    x, offset = load_inputs(args, net)
    report = run_comparison(net, x, args.steps, backends, args.out, seed=args.seed,
                            offset=offset, options=options,
                            independent_noise=args.independent_noise, trials=trials,
                            progress=not args.quiet, network_path=args.network)
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
