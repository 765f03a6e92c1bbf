"""Child runner of the Lava backend: ``python -m networks.lava_child DIR``.

Started by ``networks.lava.run`` in its own session.  Reads from DIR
``params.json``, ``net.npz``, ``x.npy`` (N, D), ``record.npy`` (the steps to
keep) and optionally ``noise.npy`` (T, N, K); builds one ``IPVAENet`` whose
``state_out`` ([z, u] per Lava step) is an external pipe read here (Lava's own
host channel: no Extractor process, which cost ~210 µs of CPU per step and a
forked process's memory); runs the N samples back to back
in one non-blocking Lava run while receiving every Lava step; every ``BLOCK``
inference steps the counts and potentials go to a ``TraceRecorder`` at once
(read-out Φz by ``neurons.kernels.readout``, the recorder keeps the recorded
steps and the per-step metrics only); writes ``out.npz`` (the Trace's arrays, compile_s, run_s, and cpu_s:
CPU seconds of all its processes during the run) atomically, and
``progress.txt`` (Lava steps done) as it goes.  A watchdog kills the run's
process group (after unlinking its shared-memory segments and removing DIR)
if the parent process disappears.
Any error goes to stderr, a non-zero exit status and one line in
``$IPVAE_LAVA_ERROR_FILE`` (written by the models themselves for errors inside
Lava, and here before Lava's ``stop()``, which can hang after a failure).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from neurons.lava.failures import report_error

BUFFER = 256
"""Depth of the state pipe (Lava steps); the host drains it as it fills."""

BLAS_THREADS = 1
"""BLAS threads of the Lava run (its processes are forked from here and inherit it).
Lava runs every Process in its own OS process, so the parallelism is already there;
a Dense's product (512×512 float64, ~40 µs) gains nothing from more threads, and
OpenBLAS's threads spinning between steps doubled the Dense process's CPU time per
step on a 2-core machine (measured: ~1,000 → ~550 µs)."""

HIDDEN_IMPORTS = ("pandas",)
"""Modules the Lava run never uses but would import: Lava's compiler builds networkx graphs,
and networkx's graph constructor imports pandas (when installed) only to test whether its
argument is a DataFrame.  Hidden in this process (an import raises ImportError, which
networkx catches), they cost the run's whole process tree nothing: pandas alone was
~20 MiB in the child, shared but copied on write by every forked Lava process
(``benchmarks/bench_memory.py``)."""

BLOCK = 256
"""Inference steps handed to the TraceRecorder at once (the host's work per step is
then a copy; the read-out and the metrics run once per block)."""


def _write_progress(path: Path, steps_done: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(str(steps_done))
    os.replace(tmp, path)


def cpu_seconds() -> float:
    """CPU time (user + system, s) of this process and its live children (Lava's model
    processes are forked children of the process that runs the network)."""
    import multiprocessing

    total = sum(os.times()[:2])
    tick = os.sysconf("SC_CLK_TCK")
    for child in multiprocessing.active_children():
        try:
            with open(f"/proc/{child.pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            continue
    return total


def _limit_blas_threads(threads: int) -> None:
    """Limit BLAS to ``threads`` in this process and the Lava processes it will fork
    (threadpoolctl; nothing happens without it)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(threads, user_api="blas")


def _watch_parent(parent: int, directory: str, period_s: float = 0.5) -> None:
    """Daemon thread: once ``parent`` is gone (e.g. SIGKILLed), clean up as it would have.

    Unlinks the shared-memory segments this process group maps and the run's
    directory, then kills the group (this process included).
    """

    def watch():
        while True:
            time.sleep(period_s)
            if os.getppid() != parent:
                break
        import shutil

        from networks.lava import _group_members, _shared_memory_of

        for name in _shared_memory_of(_group_members(os.getpgid(0))):
            try:
                os.unlink(os.path.join("/dev/shm", name))
            except OSError:
                pass
        shutil.rmtree(directory, ignore_errors=True)
        os.killpg(0, signal.SIGKILL)

    threading.Thread(target=watch, name="ipvae-parent-watch", daemon=True).start()


def hide_unused_imports() -> None:
    """Make :data:`HIDDEN_IMPORTS` unimportable in this process (a ``None`` entry in
    ``sys.modules`` makes ``import`` raise ImportError); those already imported stay."""
    for name in HIDDEN_IMPORTS:
        sys.modules.setdefault(name, None)


def untrack_shared_memory() -> None:
    """Keep multiprocessing's resource tracker out of the run: it would be one more Python
    process (~6 MiB) only to unlink leaked ``/dev/shm`` segments, which here the
    SharedMemoryManager server that Lava starts (at its shutdown) and ``networks.lava``'s
    clean-up (when the run's process group is killed, the tracker with it) already do.
    Only the ``shared_memory`` resource type is skipped; others are tracked as before."""
    from multiprocessing import resource_tracker

    register, unregister = resource_tracker.register, resource_tracker.unregister

    def register_except_shared_memory(name, rtype):
        if rtype != "shared_memory":
            register(name, rtype)

    def unregister_except_shared_memory(name, rtype):
        if rtype != "shared_memory":
            unregister(name, rtype)

    resource_tracker.register = register_except_shared_memory
    resource_tracker.unregister = unregister_except_shared_memory
    # SharedMemoryManager() starts the tracker eagerly through this module function (for
    # the shared memory it would track); other resource types start it when they register.
    resource_tracker.ensure_running = lambda: None


def main(directory: str) -> int:
    tmp = Path(directory)
    params = json.loads((tmp / "params.json").read_text())
    from networks.network import load_network

    net = load_network(tmp / "net.npz")
    steps, n, topology = params["steps"], params["n"], params["topology"]
    k = net.n_latents

    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg

    from networks.trace import TraceRecorder
    from neurons import kernels
    from neurons.lava.ipvae_net.process import IPVAENet

    x = np.load(tmp / "x.npy")
    recorder = TraceRecorder(net, x, steps, np.load(tmp / "record.npy"),
                             rate_metrics=params.get("rate_metrics", False))
    fixed = params.get("fixed")  # a quantized network file: the fixed_pt models
    if fixed is not None:
        from neurons.fixed import U_FRAC

        with np.load(fixed, allow_pickle=False) as f:
            fixed = {key: f[key] for key in f.files}
    u_scale = 1.0 if fixed is None else 2.0 ** -U_FRAC  # fixed_pt sends U = u·2^12
    ipvae = IPVAENet(net, steps=steps, topology=topology, seed=params["seed"],
                     offset=params["offset"], inputs_path=str(tmp / "x.npy"),
                     noise_path=str(tmp / "noise.npy") if params["noise"] else None,
                     fixed=fixed)
    ipvae.state_out.flag_external_pipe(BUFFER)
    if fixed is None:  # the recurrent Dense adds the rows of the latents that fired
        from lava.proc.dense.process import Dense

        from neurons.lava.dense_events import PyDenseEventModelFloat

        cfg = Loihi2SimCfg(select_tag="floating_pt", select_sub_proc_model=True,
                           exception_proc_model_map={Dense: PyDenseEventModelFloat})
    else:
        cfg = Loihi2SimCfg(select_tag="fixed_pt", select_sub_proc_model=True)
    period, stride = ipvae.period, ipvae.stride
    phi_t = kernels.row_table(net.phi.T)
    block = max(1, min(BLOCK, steps))
    z_block = np.zeros((block, k))  # counts z_t (float64 integers) of the block's steps
    u_block = np.zeros((block, k))
    recon = np.zeros((block, net.input_dim))
    progress = tmp / "progress.txt"

    def flush(i: int, t0: int, b: int) -> None:
        """Hand steps t0 … t0+b−1 of sample i to the recorder."""
        kernels.readout(z_block[:b], phi_t, recon[:b])
        recorder.add_block(t0, u_block[:b, None], z_block[:b, None], rows=slice(i, i + 1),
                           recon=recon[:b, None])

    _limit_blas_threads(BLAS_THREADS)
    t0 = time.perf_counter()
    try:
        ipvae.run(condition=RunSteps(num_steps=n * period, blocking=False), run_cfg=cfg)
        t1 = time.perf_counter()
        c1 = cpu_seconds()
        last = t1
        for i in range(n):
            b = 0
            for j in range(period):
                state = ipvae.receive_state()
                # z_t and u_t arrive at local step j = stride·t; u_T at j = stride·T.
                t, rest = divmod(j, stride)
                if rest:
                    continue
                if t < steps:
                    z_block[b] = state[:k]
                    np.multiply(state[k:], u_scale, out=u_block[b])
                    b += 1
                    if b == block:
                        flush(i, t + 1 - b, b)
                        b = 0
                else:
                    if b:
                        flush(i, t - b, b)
                    recorder.u[-1, i] = state[k:] * u_scale
            now = time.perf_counter()
            if now - last > 0.2 or i == n - 1:
                _write_progress(progress, (i + 1) * period)
                last = now
        ipvae.wait()
        t2 = time.perf_counter()
        c2 = cpu_seconds()
    except BaseException as err:
        # Reported before stop(), which can hang after a failure (lava-nc/lava#231).
        report_error("Lava run", err)
        raise
    finally:
        ipvae.stop()
    trace = recorder.finish()
    out = {name: getattr(trace, name) for name in ("steps", "spikes", "u", "recon", "step_mse",
                                                    "step_zeros", "step_rate", "step_rate_mse")}
    out.update(compile_s=np.float64(t1 - t0), run_s=np.float64(t2 - t1),
               cpu_s=np.float64(c2 - c1))
    part = tmp / "out.part.npz"
    np.savez(part, **out)
    os.replace(part, tmp / "out.npz")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m networks.lava_child DIR", file=sys.stderr)
        sys.exit(2)
    _watch_parent(os.getppid(), sys.argv[1])
    hide_unused_imports()
    untrack_shared_memory()
    try:
        status = main(sys.argv[1])
    except BaseException as err:
        report_error("Lava child", err)
        raise
    sys.exit(status)
