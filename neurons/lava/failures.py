"""Failure reporting for the Lava ProcessModels (no Lava import here).

Lava 0.10 hangs when a model raises inside a multi-process run and only logs
the traceback (lava-nc/lava#231, #178).  The models therefore wrap their step
in :func:`reporting`: the first exception is written, as one line, to the file
named by the environment variable ``IPVAE_LAVA_ERROR_FILE`` (set by the
backend's child runner), so the parent can kill the run at once and raise a
clear error instead of waiting for its timeout.

``IPVAE_LAVA_FAIL_AT`` (test-only hook): a Lava time step (≥ 1) at which the
PoissonLatent model raises on purpose.
"""
from __future__ import annotations

import functools
import os

ERROR_FILE_ENV = "IPVAE_LAVA_ERROR_FILE"
FAIL_AT_ENV = "IPVAE_LAVA_FAIL_AT"


def fail_at_step() -> int | None:
    """The Lava time step at which the test hook forces a failure, or None."""
    value = os.environ.get(FAIL_AT_ENV, "").strip()
    return int(value) if value else None


def report_error(where: str, err: BaseException) -> None:
    """Append ``where: Type: message`` to the error file, if one is configured."""
    path = os.environ.get(ERROR_FILE_ENV)
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{where}: {type(err).__name__}: {err}\n")
    except OSError:
        pass


def reporting(method):
    """Decorate a ProcessModel's ``run_spk``: report any exception, then re-raise it."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except BaseException as err:  # noqa: BLE001 - reported, then re-raised
            report_error(f"{type(self).__name__} at time step {self.time_step}", err)
            raise

    return wrapper
