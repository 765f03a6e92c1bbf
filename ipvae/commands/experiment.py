"""``ipvae experiment NAME --out DIR [--quick]``: one of the paper's experiments (issue 14).

Each experiment writes into DIR its figures (``NAME_*.png``), its numbers
(``NAME.json``, claim checks included) and a Markdown table (``NAME.md``); the models
it trains go to ``DIR/models/`` and are reused by a rerun (or by another experiment
given the same DIR).  ``--quick`` runs tiny sizes (under a minute each; for tests);
``--list`` names the experiments.
"""
from ipvae.checks import seed

NAME = "experiment"
HELP = "run one of the paper's experiments (figures, JSON, Markdown table) into --out"


def _names(text):
    return [s.strip() for s in text.split(",") if s.strip()]


def _ints(text):
    import argparse

    try:
        return [int(s) for s in _names(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}")


def add_arguments(p):
    p.add_argument("name", nargs="?", help="experiment name (see --list)")
    p.add_argument("--list", action="store_true", help="list the experiments and exit")
    p.add_argument("--out", help="output folder (figures, NAME.json, NAME.md, models/)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (each under a minute)")
    p.add_argument("--seed", type=seed, default=0, help="training, data and noise seed (default 0)")
    p.add_argument("--data", type=_names,
                   help="horizon only: the data sets to run (mnist, patches; comma-separated)")
    p.add_argument("--t-train", type=_ints,
                   help="horizon only: the training horizons to run (e.g. 4 or 4,16)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")


def run(args):
    from ipvae.checks import run_folder
    from ipvae.cli import UserError
    from train import experiments

    if args.list:
        for name in experiments.EXPERIMENTS:
            print(f"{name:16s} {experiments.load(name).HELP}")
        return 0
    if not args.name:
        raise UserError("give an experiment NAME (ipvae experiment --list names them)")
    if args.name not in experiments.EXPERIMENTS:
        raise UserError(f"unknown experiment {args.name!r}; available: "
                        f"{', '.join(experiments.EXPERIMENTS)}")
    if not args.out:
        raise UserError("--out DIR is required")
    module = experiments.load(args.name)
    filters = dict(data=args.data, t_train=args.t_train)
    for key, value in filters.items():
        if value is not None and key not in module.FILTERS:
            raise UserError(f"experiment {args.name!r} does not take --{key.replace('_', '-')}")
    out = run_folder(args.out)
    numbers = experiments.run(args.name, out, quick=args.quick, progress=not args.quiet,
                              seed=args.seed, **filters)
    files = [f"{args.name}.json", f"{args.name}.md"] + list(numbers.get("figures", []))
    claims = numbers.get("claims", [])
    held = sum(c["holds"] for c in claims)
    if claims:
        print(f"{args.name}: {held} of {len(claims)} claim checks hold")
    print(f"wrote {', '.join(str(out / f) for f in files)}")
    return 0
