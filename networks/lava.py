"""The Lava backend: iP-VAE inference on Lava's CPU simulator (floating_pt), isolated.

``simulate(net, x, steps, backend="lava", topology="folded" | "error-units")``
lands here.  Everything is validated on the host first (lava-nc importable,
input size, topology, noise); then the network runs in a child process
(``python -m networks.lava_child DIR``) started in its own session, because
Lava 0.10 hangs when a model raises (lava-nc/lava#231, #178) and forces the
``fork`` start method on whoever imports its runtime.  This module never
imports Lava.

Data goes through a temporary directory: the network file, x (N, D), the
recorded steps and the optional explicit noise ξ (T, N, K) as ``.npy``
(memory-mapped by the models), and back the Trace's arrays in ``out.npz``: the
child keeps only the recorded steps and the per-step metrics while it runs,
so memory follows ``record=``, not T.  The child
compiles one ``IPVAENet`` (``neurons.lava.ipvae_net``) and runs the N samples
back to back in one Lava run; each sample's first Lava step resets u ← u₀,
ignores the feedback buffers and restarts the noise stream (seed, offset + n),
so sample n of a batch equals a lone run with ``offset=n``.

On failure (a model raised, the child died, or the wall-clock ``timeout``
passed) the child's whole process group is killed (``os.killpg``) and a
``RuntimeError`` carrying the child's error message is raised.  Every exit
path kills the group, unlinks the shared-memory segments its processes
mapped and removes the temporary directory (the child's ``TMPDIR`` points
inside it, so multiprocessing's ``pymp-*`` folders go too): SIGINT arrives as
KeyboardInterrupt, and SIGTERM and SIGHUP (when their handler is the default)
are turned into an exception for the clean-up, then delivered again with the
default handler, so the process still ends by that signal.
"""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from networks.progress import progress_bar

from networks.network import save_network
from networks.noise import check_noise
from networks.signals import signals_as_exceptions
from networks.trace import Trace, record_steps, trace_from_run
from neurons.lava import STRIDES, TOPOLOGIES  # constants only: no Lava import


ERROR_FILE_ENV = "IPVAE_LAVA_ERROR_FILE"
"""Environment variable naming the file where a failing model writes its error."""

EXIT_GRACE_S = 15.0
"""Seconds a child may take to exit after writing its results (Lava's stop can hang)."""


SOCKET_PATH_MAX = 107
"""Longest path of a Unix-domain socket on Linux (sun_path is 108 bytes with the NUL)."""


def check_lava() -> None:
    """Raise ImportError (one clear line) unless lava-nc can run in this Python.

    Looks the package up without importing Lava's runtime (whose import sets the
    ``fork`` start method for the whole process).
    """
    py = f"{sys.version_info[0]}.{sys.version_info[1]}"
    where = f"this is Python {py} ({sys.executable})"
    try:
        found = importlib.util.find_spec("lava.magma") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ImportError(f"the lava backend needs lava-nc 0.10, which runs on Python 3.10 only "
                          f"(pip install lava-nc); it is not installed: {where}")
    if sys.version_info[:2] != (3, 10):
        raise ImportError(f"lava-nc 0.10 imports on Python 3.10 only; {where}. "
                          f"Use the project's Python 3.10 virtualenv (make venv)")


def check_topology(topology) -> str:
    """The topology name, or ValueError listing the valid ones."""
    if topology not in TOPOLOGIES:
        raise ValueError(f"unknown lava topology {topology!r}; expected one of "
                         f"{', '.join(TOPOLOGIES)}")
    return topology


def default_timeout(steps: int, n: int, topology: str) -> float:
    """Generous wall-clock limit in seconds: 60 s start-up + 100 Lava steps/s at worst."""
    return 60.0 + n * (STRIDES[topology] * steps + 1) / 100.0


def run(net, x, steps, *, seed=0, offset=0, noise=None, record=None, rate_metrics=False,
        progress=False, topology="folded", timeout=None, fixed=None) -> Trace:
    """Run T = ``steps`` inference steps of ``net`` on x (N, D) in Lava; see ``networks.simulate``.

    Parameters (beyond ``simulate``'s)
    ----------------------------------
    topology : ``"folded"`` (default: constant drive + Dense(−ΦᵀΦ/σ²) recurrence,
        1 Lava step per inference step) or ``"error-units"`` (Dense(Φ) → error
        units → Dense(Φᵀ), 2 Lava steps per inference step).
    timeout : wall-clock limit of the child run in seconds (default
        :func:`default_timeout`).
    fixed : path of a quantized network file (``hardware.quantize``): run the
        bit-accurate ``fixed_pt`` models instead (folded topology; ``hardware.lava_fixed``).

    Returns
    -------
    Trace with spikes (T, N, K), u (T+1, N, K), recon (T, N, D), the per-step metrics,
    and ``info`` (backend, topology, seed, offset; compile_s: compile + start, run_s: run
    wall time, cpu_s: CPU seconds of all Lava processes during the run).
    """
    check_lava()
    check_topology(topology)
    x = net.check_input(x)
    n, k = x.shape[0], net.n_latents
    steps, seed, offset = int(steps), int(seed), int(offset)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if seed < 0 or offset < 0:
        raise ValueError(f"seed and offset must be non-negative, got {seed}, {offset}")
    rec = record_steps(record, steps)
    if noise is not None:
        noise = check_noise(noise, steps, n, k)
    if timeout is None:
        timeout = default_timeout(steps, n, topology)
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
    if fixed is not None and topology != "folded":
        raise ValueError("the fixed-point Lava network has the folded topology only")
    info = dict(backend="lava" if fixed is None else "lava-fixed", topology=topology,
                seed=int(seed), offset=int(offset), shared_noise=fixed is None)
    if n == 0:  # nothing to run: no Lava process
        return trace_from_run(net, x, np.zeros((steps, 0, k), dtype=np.int32),
                              np.zeros((steps + 1, 0, k)), record=rec,
                              rate_metrics=rate_metrics, info=info)

    with signals_as_exceptions(), tempfile.TemporaryDirectory(prefix="ipvae-lava-") as tmp:
        tmp = Path(tmp)
        (tmp / "tmp").mkdir()
        save_network(net, tmp / "net.npz")
        np.save(tmp / "x.npy", x)
        np.save(tmp / "record.npy", rec)
        if noise is not None:
            np.save(tmp / "noise.npy", np.ascontiguousarray(noise, dtype=np.float64))
        params = dict(steps=steps, n=n, topology=topology, seed=int(seed), offset=int(offset),
                      noise=noise is not None, rate_metrics=bool(rate_metrics),
                      fixed=None if fixed is None else str(fixed))
        (tmp / "params.json").write_text(json.dumps(params))
        out = _run_child(tmp, params, float(timeout), progress)
    info.update(compile_s=float(out.pop("compile_s")), run_s=float(out.pop("run_s")),
                cpu_s=float(out.pop("cpu_s")))
    return Trace(x=x, **out, info=info)


def _child_env(error_file: Path) -> dict:
    """The child's environment: the repository on PYTHONPATH, the error file named."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env[ERROR_FILE_ENV] = str(error_file)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # multiprocessing's pymp-* folders (and any other temporary file of the run)
    # land inside the run's directory, which is removed on every exit path --
    # unless that would make its sockets' paths (pymp-*/listener-*, 33 more
    # characters) longer than AF_UNIX allows (107 bytes).
    tmp = str(error_file.parent / "tmp")
    if len(os.fsencode(tmp)) + 33 <= SOCKET_PATH_MAX:
        env["TMPDIR"] = tmp
    return env


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


def _read_progress(path: Path) -> int:
    text = _read_text(path)
    return int(text) if text.isdigit() else 0


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid`` (Linux /proc; [] elsewhere)."""
    members = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return members
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z":
            members.append(int(name))
    return members


def _shared_memory_of(pids) -> set[str]:
    """Names of the /dev/shm segments mapped by these processes (Linux /proc)."""
    names = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as f:
                for line in f:
                    if "/dev/shm/" in line:
                        names.add(line.split("/dev/shm/", 1)[1].split()[0])
        except OSError:
            continue
    return names


def _kill_group(pgid: int, wait_s: float = 10.0) -> None:
    """Kill the child's whole process group (the child is its leader) and clean up after it.

    The group is first stopped (SIGSTOP), the shared-memory segments its
    processes map are noted, then every process gets SIGKILL and we wait until
    none is left running; finally those segments are unlinked (a killed Lava
    runtime cannot unlink the segments of its channels itself).
    """
    try:
        os.killpg(pgid, signal.SIGSTOP)
    except (ProcessLookupError, PermissionError):
        return
    segments = _shared_memory_of(_group_members(pgid))
    deadline = time.monotonic() + wait_s
    while True:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            break
        if not [p for p in _group_members(pgid) if p != pgid] or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    for name in segments:
        try:
            os.unlink(os.path.join("/dev/shm", name))
        except OSError:
            pass


def _child_message(tmp: Path) -> str:
    """The child's error: what a model reported, else the last lines of its stderr."""
    reported = _read_text(tmp / "error.txt")
    if reported:
        return reported.splitlines()[0]
    lines = [ln for ln in _read_text(tmp / "stderr.txt").splitlines() if ln.strip()]
    return " | ".join(lines[-3:]) if lines else "no error message"


def _run_child(tmp: Path, params: dict, timeout: float, progress: bool) -> dict:
    """Run ``networks.lava_child`` on the prepared folder ``tmp``; see :func:`run_child`."""
    total = params["n"] * (STRIDES[params["topology"]] * params["steps"] + 1)
    return run_child("networks.lava_child", tmp, total=total, timeout=timeout,
                     desc=f"lava {params['topology']}", unit="step", progress=progress,
                     what="Lava run")


def run_child(module: str, tmp: Path, *, total: int, timeout: float, desc: str, unit: str,
              progress: bool, what: str) -> dict:
    """Start ``python -m module tmp``, watch it, and return its ``out.npz`` (a dict of arrays).

    The child reads its inputs from the folder ``tmp``, counts its progress (``total`` units)
    into ``tmp/progress.txt`` and writes ``tmp/out.npz``.  It runs in its own session
    (process group = its pid) and is polled without being reaped (``waitid(WNOWAIT)``),
    so the group id stays reserved until its leftovers have been killed; on every exit
    path the group is killed.  Raises RuntimeError "<what> failed (<why>): <child's
    message>" when a model raised, the child exited without output, or ``timeout``
    seconds passed.
    """
    error_file, out_file = tmp / "error.txt", tmp / "out.npz"
    with open(tmp / "stdout.txt", "wb") as so, open(tmp / "stderr.txt", "wb") as se:
        proc = subprocess.Popen([sys.executable, "-m", module, str(tmp)],
                                stdin=subprocess.DEVNULL, stdout=so, stderr=se,
                                env=_child_env(error_file), start_new_session=True)
    pid, failure = proc.pid, None
    start = time.monotonic()
    deadline, output_seen = start + timeout, None
    bar = progress_bar(total=total, desc=desc, unit=unit, enabled=progress)
    try:
        while True:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                break
            now = time.monotonic()
            if error_file.exists() and error_file.stat().st_size > 0:
                failure = "a Lava model raised"
                break
            if output_seen is None and out_file.exists():
                output_seen = now
            if output_seen is not None and now - output_seen > EXIT_GRACE_S:
                break  # results are written; Lava's shutdown hung: kill it below
            if now > deadline:
                failure = f"timed out after {timeout:.1f} s"
                break
            done = _read_progress(tmp / "progress.txt")
            if done > bar.n:
                bar.update(done - bar.n)
            time.sleep(0.02)
    finally:
        _kill_group(pid)
        proc.wait()
        bar.close()
    if failure is None and not out_file.exists():
        failure = f"the child exited with status {proc.returncode}"
    if failure is not None:
        raise RuntimeError(f"{what} failed ({failure}): {_child_message(tmp)}")
    with np.load(out_file) as f:
        return {key: f[key] for key in f.files}
