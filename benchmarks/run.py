"""``make bench``: run every ``benchmarks/bench_*.py`` and write one markdown table file.

Each bench module defines ``bench() -> str`` returning a markdown section
(a ``## heading`` and a table).  Sections are printed as they finish and
written together to ``--out``.  Run one with ``--only NAME`` (e.g. ``reference``).
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "results.md"))
    parser.add_argument("--only", action="append", help="bench module suffix, repeatable")
    args = parser.parse_args(argv)
    names = sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py"))
    if args.only:
        unknown = set(args.only) - set(names)
        if unknown:
            parser.error(f"unknown bench {sorted(unknown)}; available: {names}")
        names = [n for n in names if n in args.only]
    header = (f"# ipvae benchmarks\n\n{datetime.datetime.now():%Y-%m-%d %H:%M}, "
              f"{platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}\n")
    sections = [header]
    print(header)
    for name in names:
        section = importlib.import_module(f"bench_{name}").bench()
        print(section, flush=True)
        sections.append(section)
    from networks.network import atomic_write

    atomic_write(args.out, lambda f: f.write("\n".join(sections).encode()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
