"""Checks the CLI runs before any work: option values (argparse types) and output paths.

Every check raises one clear line: ``argparse.ArgumentTypeError`` for an option's
value (argparse reports it as a usage error, exit status 2) or ``UserError``
for a path.
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from ipvae.cli import UserError

SEED_LIMIT = 2**63
"""Seeds and noise keys lie in [0, 2**63) on every backend (design §2.2)."""


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def seed(text: str) -> int:
    """argparse type: a noise or data seed, an integer in [0, 2**63)."""
    value = _int(text)
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must lie in [0, 2**63), got {value}")
    return value


def _float(text: str, ok, requirement: str) -> float:
    """``text`` as a float satisfying ``ok``; ArgumentTypeError naming the ``requirement``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return _float(text, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")


def finite_float(text: str) -> float:
    """argparse type: a finite number."""
    return _float(text, math.isfinite, "finite")


def _writable_folder(folder: Path, option: str, path: Path) -> None:
    """UserError unless ``folder`` is (or can be created as) a writable directory."""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"{option} {path}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"{option} {path}: {probe} is not writable")


def output_file(path, option: str = "--out", inputs=()) -> Path:
    """Check a file the user named for output, before any work; returns it as a Path.

    It may exist (it is replaced atomically) but not be a directory or one of
    ``inputs`` (the files the command reads); its folder must be writable or creatable.
    """
    path = Path(path)
    if str(path).endswith(os.sep) or path.is_dir():
        raise UserError(f"{option} {path} is a directory; give a file name")
    if path.exists() and not path.is_file():
        raise UserError(f"{option} {path} exists and is not a regular file")
    for other in inputs:
        if other is not None and path.exists() and Path(other).exists() \
                and os.path.samefile(path, other):
            raise UserError(f"{option} {path} is also an input of this command; "
                            f"writing it would destroy the input")
    if path.exists() and not os.access(path.parent, os.W_OK | os.X_OK):
        raise UserError(f"{option} {path}: its folder {path.parent} is not writable")
    _writable_folder(path.parent, option, path)
    return path


def output_folder(path, produces, option: str = "--out", force: bool = False) -> Path:
    """Check a folder for the files ``produces`` (names), before any work.

    The folder may exist, but if it already holds one of those files the
    command would replace results the user did not name: refused unless ``force``.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} exists and is not a directory")
    _writable_folder(path, option, path)
    if path.is_dir() and not force:
        existing = [name for name in produces if (path / name).exists()]
        if existing:
            raise UserError(f"{option} {path} already holds {', '.join(existing)} from an "
                            f"earlier run; choose another folder or pass --force to replace them")
    return path


def run_folder(path, option: str = "--out") -> Path:
    """Check a folder a command writes into and may resume from (``train --out``)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} exists and is not a directory")
    _writable_folder(path, option, path)
    return path
