"""``ipvae`` command line: one sub-command per module in ``ipvae.commands``.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``.  Errors print one line, without a traceback: exit status
2 for a usage error or bad input (options, files, shapes, values, a backend
that is not installed), checked before any work; 1 for a run that failed
(a simulator failed, a write failed, memory ran out); 130 when interrupted.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = [
    "ipvae.commands.demo",
    "ipvae.commands.info",
    "ipvae.commands.planted",
    "ipvae.commands.simulate",
    "ipvae.commands.compare",
    "ipvae.commands.train",
    "ipvae.commands.evaluate",
    "ipvae.commands.deploy",
    "ipvae.commands.experiment",
]


DESCRIPTION = ("Spiking inference with the iterative Poisson VAE (iP-VAE): train a network, "
               "run it on the reference simulator, Lava or Brian2, and check that they emit "
               "the same spikes.")


class UserError(Exception):
    """An error caused by the user's input, reported as one line (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``ipvae CMD: error: ... (see ipvae CMD --help)``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ipvae", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)
    for name in COMMANDS:
        module = importlib.import_module(name)
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, OSError) and err.filename is not None and str(err.filename) not in text:
        text = f"{err.filename}: {text}"
    return text


def main(argv=None) -> int:
    """Run ``ipvae ARGV``; returns the exit status (argparse's usage errors and --help too)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 2)
    name = f"ipvae {args.command}"
    try:
        return int(args._run(args) or 0)
    except (UserError, ValueError, FileNotFoundError, ImportError) as err:
        print(f"{name}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"{name}: error: out of memory (ask for fewer inputs, steps or recorded steps)",
              file=sys.stderr)
        return 1
    except (RuntimeError, OSError) as err:
        print(f"{name}: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
