"""Faults clean up (issue 15): a Lava run whose parent gets SIGTERM or SIGHUP (or SIGKILL,
through the child's watchdog) leaves no process, no /dev/shm segment and no temporary
folder (its own nor multiprocessing's).

Needs lava-nc (``require("lava")``): skipped without it, failed under CI=true.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from conftest import require
from leftovers import leaked_shared_memory, marked_processes, shm_names

ROOT = Path(__file__).resolve().parent.parent

# A long run on a tiny network: started, then killed from outside.
SCRIPT = textwrap.dedent("""
    from networks import planted_network, simulate
    net, x, _ = planted_network(6, 5, 2, seed=3, n_inputs=1)
    simulate(net, x, 1_000_000, backend="lava", timeout=600, record=[])
""")


def _started(mark: str) -> bool:
    """True once Lava's runtime has forked its processes (parent + child + at least 2)."""
    return len(marked_processes(mark)) >= 4


@pytest.mark.parametrize("signum,repeats", [(signal.SIGTERM, 10), (signal.SIGHUP, 1),
                                            (signal.SIGKILL, 1)])
def test_signal_to_the_parent_leaves_nothing_behind(signum, repeats):
    require("lava")
    for _ in range(repeats):
        mark = uuid.uuid4().hex
        # A short folder: multiprocessing's socket paths inside it must fit AF_UNIX's limit.
        tmpdir = Path(tempfile.mkdtemp(prefix="ipvc-"))
        try:
            _run_and_signal(tmpdir, mark, signum)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)


def _default_signals() -> None:
    for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)


def _run_and_signal(tmpdir: Path, mark: str, signum: int) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TMPDIR=str(tmpdir),
               IPVAE_LAVA_TEST_MARK=mark)
    shm_before = shm_names()
    # The run starts with the signals at their defaults, as from a terminal, whatever the
    # test runner inherited: under ``nohup`` SIGHUP is ignored, and the runner rightly
    # keeps it ignored.
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=_default_signals)
    try:
        deadline = time.monotonic() + 120
        while not _started(mark):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the Lava run did not start"
            time.sleep(0.05)
        time.sleep(0.5)  # inside the run: channels and segments exist
        assert list(tmpdir.glob("ipvae-lava-*"))
        proc.send_signal(signum)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signum  # still ended by the signal itself
    assert "Traceback" not in proc.stderr.read().decode()
    proc.stderr.close()
    # SIGKILL cannot be caught: the child's watchdog notices the parent is gone (0.5 s)
    deadline = time.monotonic() + 20
    while (marked_processes(mark) or list(tmpdir.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marked_processes(mark) == []
    assert leaked_shared_memory(shm_before) == set()
    assert list(tmpdir.iterdir()) == []  # no ipvae-lava-*, no pymp-*


def test_failed_and_timed_out_runs_leave_no_temporary_folder(monkeypatch):
    """A model that raises, and a run past its timeout: no ipvae-lava-* nor pymp-* left."""
    require("lava")
    from networks import planted_network, simulate

    net, x, _ = planted_network(6, 5, 2, seed=3, n_inputs=1)
    tmpdir = Path(tempfile.mkdtemp(prefix="ipvc-"))
    try:
        monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
        monkeypatch.setenv("TMPDIR", str(tmpdir))
        with pytest.raises(RuntimeError, match="timed out"):
            simulate(net, x, 1_000_000, backend="lava", timeout=3.0, record=[])
        assert list(tmpdir.iterdir()) == []
        monkeypatch.setenv("IPVAE_LAVA_FAIL_AT", "3")
        with pytest.raises(RuntimeError, match="forced failure"):
            simulate(net, x, 5, backend="lava")
        assert list(tmpdir.iterdir()) == []
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
