"""``ipvae train``: train an iP-VAE offline (PyTorch + snntorch) and export the network file.

Runs single-process, or under ``torchrun --nproc_per_node P -m ipvae train ...``
(gloo, each process its shard of every batch; only rank 0 writes).

Every ``TrainConfig`` field is an option, made from the field's metadata
(``train.config.settings``: group, help, how the value is checked), so a new
field needs no code here. Settings come from the options, then ``--config FILE``,
then the defaults (with ``--resume``: the run's own settings); the resolved
configuration is stored in the checkpoint, ``metrics.json`` and the network
file's ``meta["config"]`` (design §3).
"""
import argparse

NAME = "train"
HELP = "train an iP-VAE and write runs/NAME/{model.npz, metrics.json, *.png}"

DESCRIPTION = """\
Train an iP-VAE (the iterative Poisson VAE) by backpropagation through its
unrolled inference and write the run folder --out: the network file model.npz
(what every backend runs), metrics.json, checkpoint.pt and plots.

Settings are taken from the options below, then from --config FILE, then from
the defaults shown. With --resume the run's own settings replace the defaults,
and a setting that changes the trained parameters must equal the run's.

A config file is TOML (.toml) or JSON (.json) whose keys are the options'
names without the leading dashes (dashes or underscores: t-train or t_train),
at the top level or in a table named after their group, for example

    latents = 128
    [schedule]
    epochs = 20
    adam-betas = [0.9, 0.999]

'none' (JSON: null) unsets a setting whose default is none; a path in the file
is relative to the current folder, like one on the command line."""

EXTRA = ("config", "out", "resume", "stop_after", "allow_collapse")
"""Options that are not training settings."""


def add_arguments(p):
    from train.config import GROUPS, settings

    p.description = DESCRIPTION
    p.usage = ("%(prog)s [SETTINGS] [--config FILE] --out DIR [--resume] [--stop-after N]\n"
               "                   [--allow-collapse]")
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    groups = {name: p.add_argument_group(name, text) for name, text in GROUPS.items()}
    for s in settings():
        _add_setting(groups[s.group], s)
    run = groups["run"]
    run.add_argument("--config", metavar="FILE",
                     help="read settings from a TOML or JSON file; options given here win")
    run.add_argument("--out", required=True, metavar="DIR", help="the run folder, e.g. runs/NAME")
    run.add_argument("--resume", action="store_true",
                     help="continue the run in --out exactly where its checkpoint stopped")
    run.add_argument("--stop-after", type=_positive_int, metavar="N",
                     help="run at most N epochs now (continue later with --resume)")
    run.add_argument("--allow-collapse", action="store_true",
                     help="exit 0 even if the model collapsed (no latent fires, held-out "
                          "R² <= 0, or σ at its floor; exit 1 otherwise)")


def _add_setting(group, s):
    """One option (a flag pair for a yes/no setting) for Setting ``s``, absent unless given."""
    if s.kind is bool:
        on, off = ("", " (the default)") if not s.default else (" (the default)", "")
        group.add_argument(s.option, dest=s.name, action="store_const", const=True,
                           default=argparse.SUPPRESS, help=s.help + on)
        group.add_argument("--no-" + s.option[2:], *s.aliases, dest=s.name,
                           action="store_const", const=False, default=argparse.SUPPRESS,
                           help=f"not {s.option}" + off)
        return
    metavar = s.metavar
    if metavar is None:
        metavar = "|".join(s.choices) if s.choices else METAVARS.get(s.kind, "X")
    kw = dict(dest=s.name, default=argparse.SUPPRESS, type=_parser(s), metavar=metavar,
              help=f"{s.help} (default: {s.default_text})")
    if s.kind is tuple:
        kw["nargs"] = len(s.default)
    group.add_argument(s.option, *s.aliases, **kw)


METAVARS = {int: "N", float: "X", str: "TEXT"}


def _parser(s):
    """argparse type for Setting ``s`` (one item of it for a tuple)."""
    from train.config import parse_setting

    def parse(text):
        try:
            return parse_setting(s, text, text=True)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = s.name  # argparse names the type in some messages
    return parse


def _positive_int(text):
    from ipvae.checks import positive_int

    return positive_int(text)


def resolve(args):
    """(the settings given, by field name; the config file's keys) from parsed ``args``.

    Options override the file; a setting given nowhere is absent (a default, or on
    ``--resume`` the run's own)."""
    from train.config import read_config_file, settings

    names = [s.name for s in settings()]
    given = {k: getattr(args, k) for k in names if hasattr(args, k)}
    if "adam_betas" in given and isinstance(given["adam_betas"], list):
        given["adam_betas"] = tuple(given["adam_betas"])
    from_file = read_config_file(args.config) if getattr(args, "config", None) else {}
    return {**from_file, **given}, set(from_file) - set(given)


def run(args):
    import sys

    from train.config import TrainConfig, settings

    from ipvae.checks import run_folder

    given, from_file = resolve(args)
    run_folder(args.out)
    if args.resume:
        from train.checkpoint import resume_config

        given.setdefault("progress", True)  # shown unless this invocation says otherwise
        cfg = resume_config(args.out, **given)
    else:
        cfg = TrainConfig(**given)
    try:
        cfg.check()
    except ValueError as err:  # name the file, or the option, that gave the bad value
        name, rest = (str(err).split(" ", 1) + [""])[:2]
        if name in from_file:
            raise ValueError(f"config file {args.config}: {err}") from None
        options = {s.name: s.option for s in settings()}
        if name in given and name in options:
            raise ValueError(f"{options[name]} {rest}") from None
        raise
    from train.trainer import train

    res = train(cfg, args.out, resume=args.resume, stop_after=args.stop_after)
    m = res["metrics"]
    if not m["finished"]:
        print(f"stopped after epoch {m['epochs_done']}/{m['epochs_planned']}; "
              f"continue with --resume --out {args.out}")
        return 0
    line = (f"wrote {args.out}: {m['epochs_done']} epochs, {m['train_seconds'] / 60:.1f} min, "
            f"train loss {m['final_train_loss']:.2f}")
    ev = m.get("evaluation")
    if ev:
        r2 = ev["r2_spikes"]
        line += ", held-out R² (spikes) " + ", ".join(f"t={t}: {v:.3f}" for t, v in r2.items())
        if ev.get("probe"):
            line += f", probe {ev['probe']['rates'][-1]:.3f} (pixels {ev['probe']['pixels']:.3f})"
    if m.get("collapsed"):
        line += "; COLLAPSED: " + "; ".join(m["collapse_reasons"])
    print(line)
    if m.get("collapsed") and not args.allow_collapse:
        print(f"training collapsed (see 'held_out' in {args.out}/metrics.json; a lower --beta "
              "often helps, docs/training-ablation.md); pass --allow-collapse to accept it",
              file=sys.stderr)
        return 1
    return 0
