"""``make bench``: run every ``benchmarks/bench_*.py`` in one run and write one results page.

Each bench module defines ``bench() -> str`` (or ``bench(quick=False) -> str``)
returning a markdown section (a ``## heading``, its tables, each figure beside
its anchor timed in the same run).  Sections are printed as they finish and
written together to ``--out`` under a header naming the machine, the versions,
the commit and the date.  ``--only NAME`` (repeatable) runs some; ``--quick`` runs
every bench at tiny sizes (``benchmarks/common.py``) so that the benchmark code is
tested (``tests/test_bench.py``): its figures are finite but mean nothing.  A bench
that fails writes its error as its section, the others still run, and the exit
status is 1.
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import inspect
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

VERSIONED = ("numpy", "scipy", "torch", "snntorch", "lava-nc", "brian2", "threadpoolctl")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in VERSIONED:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} (not installed)")
    return ", ".join(found)


def _commit() -> str:
    def git(*args):
        return subprocess.run(["git", *args], cwd=HERE.parent, capture_output=True,
                              text=True).stdout.strip()

    rev = git("rev-parse", "--short", "HEAD") or "unknown"
    return rev + (" (with uncommitted changes)" if git("status", "--porcelain", "--",
                                                         "benchmarks", "networks", "neurons",
                                                         "hardware", "train") else "")


def header(quick: bool) -> str:
    """The page's title and the machine it was measured on."""
    from common import blas, load_average

    now = datetime.datetime.now(datetime.timezone.utc)
    return "\n".join([
        "# ipvae benchmarks" + (" (--quick: tiny sizes, the figures mean nothing)"
                                if quick else ""),
        "",
        f"{now:%Y-%m-%d %H:%M} UTC, `make bench`{' --quick' if quick else ''}, commit "
        f"{_commit()}.",
        "",
        f"Machine: {platform.node()}, {_cpu_model()}, {os.cpu_count()} cores, "
        f"{platform.system()} {platform.release()}; {load_average()} at the start.",
        "",
        f"Python {platform.python_version()}; {_versions()}; numpy's BLAS: {blas()}.",
        "",
    ])


def run_bench(name: str, quick: bool) -> tuple[str, bool]:
    """(markdown section, whether it ran) of ``bench_<name>``."""
    t = time.perf_counter()
    try:
        module = importlib.import_module(f"bench_{name}")
        takes_quick = "quick" in inspect.signature(module.bench).parameters
        section = module.bench(quick=quick) if takes_quick else module.bench()
        ok = True
    except Exception:  # noqa: BLE001 - reported in the page, the other benches still run
        section = (f"## bench_{name}: FAILED\n\n```\n{traceback.format_exc().strip()}\n```\n")
        ok = False
    return section.rstrip() + f"\n\n(`bench_{name}` took {time.perf_counter() - t:.0f} s.)\n", ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "results.md"))
    parser.add_argument("--only", action="append", help="bench module suffix, repeatable")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes: test the benchmark code (figures mean nothing)")
    args = parser.parse_args(argv)
    if args.quick:
        os.environ["IPVAE_BENCH_QUICK"] = "1"  # read by benchmarks/common.py at import
    names = sorted(p.stem[len("bench_"):] for p in HERE.glob("bench_*.py"))
    if args.only:
        unknown = set(args.only) - set(names)
        if unknown:
            parser.error(f"unknown bench {sorted(unknown)}; available: {names}")
        names = [n for n in names if n in args.only]
    start = time.perf_counter()
    sections = [header(args.quick)]
    print(sections[0], flush=True)
    failed = []
    for name in names:
        section, ok = run_bench(name, args.quick)
        print(section, flush=True)
        sections.append(section)
        if not ok:
            failed.append(name)
    from common import load_average

    sections.append(f"All sections in {time.perf_counter() - start:.0f} s; {load_average()} "
                    "at the end.\n")
    from networks.network import atomic_write

    atomic_write(args.out, lambda f: f.write("\n".join(sections).encode()))
    print(f"wrote {args.out}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
