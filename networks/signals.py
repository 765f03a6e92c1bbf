"""Termination signals as exceptions, so that a run's clean-up code runs (design §4.2).

SIGINT already arrives as KeyboardInterrupt; SIGTERM and SIGHUP end a Python
process at once by default, skipping ``finally`` blocks: a Lava child group,
shared-memory segments or a temporary build folder would outlive the run.
"""
from __future__ import annotations

import contextlib
import signal
import threading


class _Terminated(BaseException):
    """A SIGTERM or SIGHUP arrived inside :func:`signals_as_exceptions`."""

    def __init__(self, signum):
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


@contextlib.contextmanager
def signals_as_exceptions():
    """Turn SIGTERM and SIGHUP into ``_Terminated`` for the block, so its clean-up runs.

    Only signals whose handler is the default are taken over (a user's own
    handler or ``nohup``'s SIG_IGN stay as they are), and only in the main
    thread (Python delivers signals there).  After the block has cleaned up,
    the signal is delivered again under the default handler: the process ends
    by it, as it would have without us.
    """
    taken = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(signum) == signal.SIG_DFL:
                taken[signum] = signal.signal(signum, _raise_terminated)
    try:
        yield
    except _Terminated as err:
        for signum, previous in taken.items():
            signal.signal(signum, previous)
        taken.clear()
        signal.raise_signal(err.signum)
        raise  # only reached if the signal did not end the process
    finally:
        for signum, previous in taken.items():
            signal.signal(signum, previous)


def _raise_terminated(signum, frame):
    raise _Terminated(signum)
