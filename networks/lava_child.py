"""Child runner of the Lava backend: ``python -m networks.lava_child DIR``.

Started by ``networks.lava.run`` in its own session.  Reads from DIR
``params.json``, ``net.npz``, ``x.npy`` (N, D), ``record.npy`` (the steps to
keep) and optionally ``noise.npy`` (T, N, K); builds one ``IPVAENet`` with two
``Extractor``s (spikes, u); runs the N samples back to back in one
non-blocking Lava run while receiving every Lava step into a
``TraceRecorder`` (which keeps the recorded steps and the per-step metrics
only); writes ``out.npz`` (the Trace's arrays, compile_s, run_s, and cpu_s:
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
"""Extractor channel depth (Lava steps); the host drains the channels as they fill."""


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


def main(directory: str) -> int:
    tmp = Path(directory)
    params = json.loads((tmp / "params.json").read_text())
    from networks.network import load_network

    net = load_network(tmp / "net.npz")
    steps, n, topology = params["steps"], params["n"], params["topology"]
    k = net.n_latents

    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.extractor import Extractor, PyLoihiExtractorModel

    from networks.trace import TraceRecorder
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
    spike_out = Extractor(shape=(k,), buffer_size=BUFFER)
    u_out = Extractor(shape=(k,), buffer_size=BUFFER)
    ipvae.s_out.connect(spike_out.in_port)
    ipvae.u_out.connect(u_out.in_port)
    cfg = Loihi2SimCfg(select_tag="floating_pt" if fixed is None else "fixed_pt",
                       select_sub_proc_model=True,
                       exception_proc_model_map={Extractor: PyLoihiExtractorModel})
    period, stride = ipvae.period, ipvae.stride
    phi_t = np.ascontiguousarray(net.phi.T)
    progress = tmp / "progress.txt"
    t0 = time.perf_counter()
    try:
        ipvae.run(condition=RunSteps(num_steps=n * period, blocking=False), run_cfg=cfg)
        t1 = time.perf_counter()
        c1 = cpu_seconds()
        last = t1
        for i in range(n):
            rows = slice(i, i + 1)
            for j in range(period):
                z = spike_out.receive()
                u = u_out.receive() * u_scale
                # z_t and u_t arrive at local step j = stride·t; u_T at j = stride·T.
                t, rest = divmod(j, stride)
                if rest:
                    continue
                if t < steps:
                    z = np.rint(z).astype(np.int32)[None]
                    recorder.add(t, u[None], z, z @ phi_t, rows=rows)
                else:
                    recorder.u[-1, i] = u
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
    try:
        status = main(sys.argv[1])
    except BaseException as err:
        report_error("Lava child", err)
        raise
    sys.exit(status)
