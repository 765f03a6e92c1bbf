"""``ipvae`` command line: one sub-command per module in ``ipvae.commands``.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``.  User errors (bad files, shapes, values, a backend that is
not installed) print one line and exit with status 2, without a traceback.
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
]


class UserError(Exception):
    """An error caused by the user's input, reported as one line."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ipvae", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(name)
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (UserError, ValueError, FileNotFoundError, ImportError, RuntimeError) as err:
        print(f"ipvae {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
