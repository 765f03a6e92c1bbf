"""The Brian2 backend: the folded iP-VAE network as Brian2 objects (design §1.1, §2).

Topology (folded): the latent ``NeuronGroup`` of :mod:`neurons.brian` gets
the constant feed-forward drive ``ff = Φᵀx/σ²`` of the current input as a
state variable, and its lateral feedback through all-to-all ``Synapses`` with
w_ij = (−ΦᵀΦ/σ²)[i, j].  The synapses are event-driven: a neuron with count
z_j > 0 emits one Brian2 spike event and ``on_pre`` adds w_ij · z_j into every
target's ``fb`` in the same step (zero delay), so the work per step is
proportional to the neurons that fired, not K².  One Brian2 time step is one
inference step; see :mod:`neurons.brian` for the schedule within a step.

Inputs run one after another in the same network, each for T steps starting
from u₀: a ``run_regularly`` with a period of T steps resets u and loads the
next input's drive row, so a whole chunk of inputs is one Brian2 ``run``.
Shared noise (default): input n's uniforms ξ (T, K) come from its stream
keyed (seed, offset + n) (``networks.noise``, design §2.2) or the explicit
``noise[:, n]``.  Runtime targets keep them in a ring of one block of steps
(``BLOCK_VALUES``), read by the firing code as ``ipvae_noise(step mod B, i)``
and refilled, drawn in order from the streams, by a ``NetworkOperation`` at the
start of every block.  The cpp_standalone program computes each one where it is
used, ``ipvae_noise(step, i)``, from its stream's counter with the Philox code of
``neurons/_philox.h`` (:func:`neurons.brian.keyed_noise_function`; seed and
offset are compiled in), so neither Python nor the program holds a table of
N·T·K uniforms; only an explicit ``noise=`` goes in as a 2-D ``TimedArray``.
Independent noise (``independent_noise=True``): Brian2's own ``rand()``,
seeded per chunk of inputs from (seed, offset + first input of the chunk).

Recording: a ``SpikeMonitor`` with ``variables="z"`` records every active
neuron's count (one event per active neuron-step); a ``StateMonitor`` reads u
at the end of every step, after the integration (u_{t+1}); u_0 = u₀.  On the
runtime targets the same block operation moves the monitors' records into a
``TraceRecorder`` (which keeps the recorded steps and the per-step metrics
only) and empties them, so a run holds one block of noise and one of records:
memory follows ``record=``, not T or N (design §4.2).  cpp_standalone still
keeps every step in its monitors (the program writes them to disk and Python
reads them back), but no noise table.

Code generation: ``target="numpy" | "cython" | "cpp_standalone"``.  Cython
(default) falls back to numpy with a warning when no C compiler works.  The
compiled-code caches live outside the repository (:func:`cache_dir`);
cpp_standalone builds in a fresh temporary directory that is removed after
the run, compiling with make in a process group of its own.

Faults clean up (design §4.2): SIGTERM and SIGHUP become exceptions during a
run; an interrupted run ends the compilers it started and removes its build
folder, and before the signal ends the process, Brian2's own files (its debug
log, the copy of the main script, the redirected compiler output), which
Brian2 would remove at interpreter exit.  make and the compiled program each run
under a watchdog process (:func:`_supervise`, with the Lava child's watchdog) in
a process group of their own: if this process dies without its clean-up
(SIGKILL), the watchdog kills the group (make, its compilers, the program) and
removes the build folder.  Brian2's own files then stay in the temporary folder.
"""
from __future__ import annotations

import contextlib
import gc
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from networks.progress import progress_bar

from networks.noise import sample_stream
from networks.signals import _Terminated, signals_as_exceptions
from networks.trace import TraceRecorder, record_steps, trace_from_run

TARGETS = ("numpy", "cython", "cpp_standalone")
"""Brian2 code-generation targets this backend accepts."""

REPO_ROOT = Path(__file__).resolve().parents[1]

_STATE = {}


BRIAN2_OPTIONAL_IMPORTS = ("pylab", "matplotlib", "pytest")
"""What ``import brian2`` pulls in for interactive use only: ``from pylab import *`` (so
that ``from brian2 import *`` also gives ``plot``) and pytest (for ``brian2.test()``).
Brian2 takes its own no-matplotlib / no-pytest path when they cannot be imported, and the
backend needs neither; skipping them saves ~26 MiB in every process that runs Brian2
(``benchmarks/bench_memory.py``)."""


def import_brian2():
    """Import brian2 or raise ImportError saying how to get it.

    When brian2 is first imported here and none of :data:`BRIAN2_OPTIONAL_IMPORTS` is
    loaded yet, they are hidden for the duration of the import (then importable again as
    usual).  The brian2 module then lacks pylab's names; import brian2 (or matplotlib)
    before running the backend to keep Brian2's full import.
    """
    hide = "brian2" not in sys.modules and not any(
        m in sys.modules for m in BRIAN2_OPTIONAL_IMPORTS)
    if hide:
        for name in BRIAN2_OPTIONAL_IMPORTS:
            sys.modules[name] = None  # an import of a None entry raises ImportError
    try:
        import brian2
    except ImportError as err:
        raise ImportError(f"the brian2 backend needs the brian2 package "
                          f"(pip install brian2): {err}") from None
    finally:
        if hide:
            for name in BRIAN2_OPTIONAL_IMPORTS:
                if sys.modules.get(name, 0) is None:
                    del sys.modules[name]
    return brian2


def cache_dir() -> Path:
    """Directory for Brian2's compiled cython code, never inside the repository.

    ``$IPVAE_BRIAN2_CACHE`` if set, else ``$XDG_CACHE_HOME/ipvae/brian2-cython``
    (``~/.cache/...``); if that would fall inside the repository tree, a
    per-user folder under the system temporary directory instead.
    """
    env = os.environ.get("IPVAE_BRIAN2_CACHE")
    if env:
        path = Path(env).expanduser().resolve()
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        path = (base / "ipvae" / "brian2-cython").resolve()
    if path == REPO_ROOT or REPO_ROOT in path.parents:
        path = Path(tempfile.gettempdir()) / f"ipvae-brian2-cython-{os.getuid()}"
    source = "$IPVAE_BRIAN2_CACHE" if env else "Brian2's cython cache"
    if path.exists() and not path.is_dir():
        raise ValueError(f"{source} {path} is not a folder; point $IPVAE_BRIAN2_CACHE at one")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{source} {path} cannot be created ({err.strerror}); point "
                         f"$IPVAE_BRIAN2_CACHE at a writable folder") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"{source} {path} is not writable; point $IPVAE_BRIAN2_CACHE at "
                         f"a writable folder")
    return path


def _configure(brian2, target):
    prefs = brian2.prefs
    if target == "cython":
        prefs.codegen.runtime.cython.cache_dir = str(cache_dir())
    prefs.codegen.target = "cython" if target == "cython" else "numpy"


def cython_available(brian2=None) -> bool:
    """True when Brian2's cython target can compile here (checked once per process)."""
    if "cython_ok" not in _STATE:
        brian2 = brian2 or import_brian2()
        brian2.prefs.codegen.runtime.cython.cache_dir = str(cache_dir())
        try:
            from brian2.codegen.runtime.cython_rt import CythonCodeObject

            _STATE["cython_ok"] = bool(CythonCodeObject.is_available())
        except Exception:  # any failure to compile means: not available
            _STATE["cython_ok"] = False
    return _STATE["cython_ok"]


def resolve_target(target: str, brian2=None) -> str:
    """Validate ``target``; ``cython`` becomes ``numpy`` (with a warning) without a compiler."""
    if target not in TARGETS:
        raise ValueError(f"unknown Brian2 code-generation target {target!r}; "
                         f"expected one of {', '.join(TARGETS)}")
    if target == "cython" and not cython_available(brian2):
        warnings.warn("Brian2's cython target cannot compile here (no working C compiler?); "
                      "falling back to the numpy target", RuntimeWarning, stacklevel=3)
        return "numpy"
    if target == "cpp_standalone" and shutil.which("g++") is None and shutil.which("c++") is None:
        raise RuntimeError("Brian2's cpp_standalone target needs a C++ compiler (g++), "
                           "none found on PATH")
    return target


def _sample_seed(seed, index) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0] % (2**31 - 1))


BLOCK_VALUES = 1 << 16
"""Runtime targets hold the shared noise a block of max(1, BLOCK_VALUES // K) steps ahead and
move the monitors' records into the trace after every such block (512 KiB of uniforms and of
recorded potentials; 64 steps at K = 1024, the reference's noise block)."""

CHUNK_VALUES = 1 << 22
"""Runtime targets run inputs in chunks of at most max(1, CHUNK_VALUES // (T·K)) inputs, one
Brian2 ``run`` per chunk (a run costs code-object set-up and a garbage collection);
independent noise is seeded per chunk."""


def build(brian2, net, steps, n_inputs, *, noise="table", dt=None, noise_rows=None,
          standalone=False, drive_values=None, noise_values=None, seed=0, offset=0):
    """The Brian2 objects of one network running ``n_inputs`` inputs of ``steps`` steps each.

    ``noise``: "table" (runtime targets: ``noise_table`` (noise_rows, K), a ring
    indexed by the network's step modulo ``noise_rows`` (default n_inputs·steps),
    written in place while running), "keyed" (cpp_standalone: the uniforms of the
    streams keyed (``seed``, ``offset`` + input) computed in the C++ program,
    :func:`neurons.brian.keyed_noise_function`; no table), "timed" (cpp_standalone
    with explicit noise: a ``TimedArray`` holding ``noise_values`` (n_inputs·steps, K))
    or "own" (Brian2's ``rand()``).  ``standalone``: the drive is a ``TimedArray`` of
    ``drive_values`` (n_inputs, K) and the weights go through the device; otherwise
    ``drive_table`` (n_inputs, K) is written in place between runs.

    Returns a dict with ``network``, ``latents``, ``synapses``,
    ``noise_table`` (None unless "table" or "timed"), ``drive_table``, ``u_monitor`` (u at
    the end of every step, i.e. u_{t+1}), ``z_monitor`` (count events) and ``dt``.
    """
    from neurons.brian import (FEEDBACK_ON_PRE, FEEDBACK_SYNAPSE, keyed_noise_function,
                               latent_group, table_function)

    b2 = brian2
    dt = dt if dt is not None else 1 * b2.ms
    k = net.n_latents
    gc.collect()  # fixed object names (so compiled code is reused) need old objects gone
    noise_rows = int(noise_rows or max(steps, 1) * n_inputs)
    if (noise in ("keyed", "timed")) != standalone and noise != "own":
        raise ValueError(f"noise={noise!r} does not go with standalone={standalone}")
    noise_table = None
    if standalone:
        drive_table = drive_values
        functions = dict(ipvae_drive=b2.TimedArray(drive_values, dt=steps * dt,
                                                   name="ipvae_drive"))
        if noise == "timed":
            noise_table = noise_values
            functions["ipvae_noise"] = b2.TimedArray(noise_values, dt=dt, name="ipvae_noise")
        elif noise == "keyed":
            functions["ipvae_noise"] = keyed_noise_function(seed, offset, steps, k)
    else:
        drive_table = np.zeros((n_inputs, k))
        functions = dict(ipvae_drive=table_function("ipvae_drive", drive_table))
        if noise == "table":
            noise_table = np.zeros((noise_rows, k))
            functions["ipvae_noise"] = table_function("ipvae_noise", noise_table)
    latents = latent_group(k, net.u0, net.bias, eta=net.eta, clamp_u=net.clamp_u,
                           clamp_du=net.clamp_du, steps=steps, noise=noise,
                           functions=functions, dt=dt, noise_rows=noise_rows,
                           standalone=standalone)
    # a scalar zero delay: no per-synapse delay array (K² float64s), the same schedule
    syn = b2.Synapses(latents, latents, FEEDBACK_SYNAPSE, on_pre=FEEDBACK_ON_PRE,
                      delay=0 * b2.ms, dt=dt, name="feedback")
    syn.connect()  # all to all, pre-major: synapse i·K + j runs from i to j
    w = net.recurrent_weights()  # W[post, pre]
    if standalone:  # cpp_standalone: values go to the project through the device
        syn.w[:] = w.T.reshape(-1)
    else:  # runtime: straight into Brian2's array, (pre, post) order, no K² temporary
        syn.variables["w"].get_value().reshape(k, k)[:] = w.T
    del w
    z_mon = b2.SpikeMonitor(latents, variables="z", name="counts")
    u_mon = b2.StateMonitor(latents, "u", record=True, when="end", order=1, name="potentials")
    network = b2.Network(latents, syn, z_mon, u_mon)
    return dict(network=network, latents=latents, synapses=syn, noise_table=noise_table,
                drive_table=drive_table, u_monitor=u_mon, z_monitor=z_mon, dt=dt)


def run(net, x, steps, *, seed=0, offset=0, noise=None, record=None, rate_metrics=False,
        progress=False, target="cython", independent_noise=False, dt_ms=1.0):
    """Run T = ``steps`` inference steps in Brian2 on inputs x (N, D); see ``networks.simulate``.

    Extra options
    -------------
    target : "numpy" | "cython" (default) | "cpp_standalone".
    independent_noise : use Brian2's own ``rand()`` instead of the shared uniforms
        (then only statistics agree with other backends).  Seeded with
        ``brian2.seed``, which also reseeds numpy's global generator.
    dt_ms : duration of one inference step in Brian2 time (cosmetic).

    Returns a Trace whose ``info`` records backend, target, noise mode and timings:
    ``build_seconds`` (objects, code generation, compilation or cache load, and
    the code-object set-up every runtime ``Network.run`` starts with),
    ``run_seconds`` (Brian2's step loop), ``total_seconds``.
    """
    b2 = import_brian2()
    x = net.check_input(x)
    target = resolve_target(target, b2)
    if not (np.isfinite(dt_ms) and dt_ms > 0):
        raise ValueError(f"dt_ms must be a positive number of milliseconds, got {dt_ms}")
    if independent_noise and noise is not None:
        raise ValueError("independent_noise=True draws Brian2's own random numbers; "
                         "do not also pass noise=")
    n, k = x.shape[0], net.n_latents
    record = record_steps(record, steps)
    drive = net.drive(x)  # (N, K) feed-forward Φᵀx/σ²
    info = dict(backend="brian2", target=target, seed=seed, offset=offset,
                shared_noise=not independent_noise, feedback="event-driven synapses")
    if steps == 0 or n == 0:
        u = np.zeros((steps + 1, n, k))
        u[0] = net.u0
        return trace_from_run(net, x, np.zeros((steps, n, k), dtype=np.int32), u, record,
                              rate_metrics, info)
    t0 = time.perf_counter()
    previous = b2.prefs.codegen.target
    # SIGTERM/SIGHUP end the run through its clean-up: the build folder, the compilers, and
    # Brian2's own files go (design §4.2)
    with signals_as_exceptions(), _cleaned_up_on_interrupt():
        try:
            if target == "cpp_standalone":
                spikes = np.zeros((steps, n, k), dtype=np.int32)
                u = np.zeros((steps + 1, n, k))
                timing = _run_standalone(b2, net, drive, steps, seed, offset, noise,
                                         independent_noise, dt_ms, spikes, u, progress)
                recorder = None
            else:
                recorder = TraceRecorder(net, x, steps, record, rate_metrics, info)
                timing = _run_runtime(b2, target, net, drive, steps, seed, offset, noise,
                                      independent_noise, dt_ms, recorder, progress)
        finally:
            b2.prefs.codegen.target = previous  # leave the user's Brian2 preferences as found
    info.update(timing, total_seconds=time.perf_counter() - t0)
    if recorder is None:
        return trace_from_run(net, x, spikes, u, record, rate_metrics, info)
    recorder.info.update(info)
    return recorder.finish()


def _collect(objs, n, steps, k, spikes, u, u0):
    """Copy the monitors' records of N inputs into spikes (T,N,K) and u (T+1,N,K)."""
    z_mon, u_mon = objs["z_monitor"], objs["u_monitor"]
    tstep = np.rint(np.asarray(z_mon.t[:] / objs["dt"])).astype(np.int64)
    sample, step = np.divmod(tstep, steps)
    spikes[step, sample, np.asarray(z_mon.i[:])] = np.rint(np.asarray(z_mon.z[:]))
    uu = np.asarray(u_mon.u[:])  # (K, N*T)
    if uu.shape != (k, n * steps):
        raise RuntimeError(f"Brian2 StateMonitor recorded {uu.shape[1]} steps, "
                           f"expected {n * steps}")
    u[0] = u0
    u[1:] = uu.T.reshape(n, steps, k).transpose(1, 0, 2)


class _Feed:
    """What a runtime run does between blocks of steps (design §2.2, §4.2).

    Steps are counted on the network's clock (absolute step numbers).  Before the
    block starting at step s the noise ring gets the uniforms of steps s … s + B − 1
    (row = step mod B, B = ``block``), drawn in order from each input's keyed stream
    (or copied from the explicit ``noise`` (T, N, K)); after it, the monitors'
    records of those steps go into the ``TraceRecorder`` (which keeps the recorded
    steps and the per-step metrics only) and the monitors are emptied.  So a run
    holds one block of noise and one block of records, whatever T and N.
    """

    def __init__(self, objs, recorder, u0, steps, block, seed, offset, noise, bar):
        self.objs, self.recorder, self.u0 = objs, recorder, u0
        self.steps, self.block = steps, block
        self.seed, self.offset, self.noise, self.bar = seed, offset, noise, bar
        self.table, self.dt = objs["noise_table"], float(objs["dt"])
        self.end = None

    def begin(self, first, m, start):
        """A chunk of inputs first … first + m − 1 starts at network step ``start``."""
        self.first, self.start, self.end = first, start, start + m * self.steps
        self.harvested = self.filled = start
        self.u_prev = np.tile(self.u0, (m, 1))  # u_t of each input's next step
        self.stream = None
        self._fill(min(self.end, (start // self.block + 1) * self.block))

    def boundary(self, t):
        """NetworkOperation at the start of every step that is a multiple of ``block``."""
        if self.end is None:
            return
        now = int(round(float(t[:]) / self.dt))
        if self.filled < now:
            raise RuntimeError(f"Brian2 noise ring not filled at step {now}")
        self.harvest(now)
        self._fill(min(self.end, now + self.block))

    def _fill(self, until):
        """Write the uniforms of network steps [filled, until) into the ring (no wrap)."""
        if self.table is None:  # independent noise: Brian2's rand()
            self.filled = max(self.filled, until)
            return
        s = self.filled
        while s < until:
            j, t = divmod(s - self.start, self.steps)
            e = min(until, self.start + (j + 1) * self.steps)
            rows = self.table[s % self.block:s % self.block + e - s]
            if self.noise is not None:
                rows[:] = self.noise[t:t + e - s, self.first + j]
            else:
                if t == 0:
                    self.stream = sample_stream(self.seed, self.offset + self.first + j)
                self.stream.random(out=rows)  # the stream's next (e − s)·K uniforms, in order
            s = e
        self.filled = max(self.filled, until)

    def harvest(self, until):
        """Feed the records of network steps [harvested, until) to the recorder; empty them."""
        b = until - self.harvested
        if b <= 0:
            return
        z_mon, u_mon = self.objs["z_monitor"], self.objs["u_monitor"]
        k = self.u_prev.shape[1]
        z = np.zeros((b, k), dtype=np.int32)
        when = z_mon.variables["t"].get_value()
        if len(when):
            local = np.rint(when / self.dt).astype(np.int64) - self.harvested
            z[local, z_mon.variables["i"].get_value()] = np.rint(z_mon.variables["z"].get_value())
        after = u_mon.variables["u"].get_value()  # (b, K): u at the end of each step, u_{t+1}
        if after.shape != (b, k):
            raise RuntimeError(f"Brian2 StateMonitor recorded {after.shape[0]} steps, "
                               f"expected {b}")
        s = self.harvested
        while s < until:  # one segment per input within the block
            j, t = divmod(s - self.start, self.steps)
            e = min(until, self.start + (j + 1) * self.steps)
            seg = slice(s - self.harvested, e - self.harvested)
            u = np.concatenate([self.u_prev[j][None], after[seg][:-1]])  # u_t, t … e − 1
            rows = slice(self.first + j, self.first + j + 1)
            self.recorder.add_block(t, u[:, None], z[seg][:, None], rows=rows)
            self.u_prev[j] = after[seg][-1]
            if t + e - s == self.steps:
                self.recorder.u[-1, self.first + j] = self.u_prev[j]
            s = e
        z_mon.resize(0)
        z_mon.variables["N"].set_value(0)
        u_mon.resize(0)
        self.harvested = until
        self.bar.update(b)


def _run_runtime(b2, target, net, drive, steps, seed, offset, noise, independent, dt_ms,
                 recorder, progress):
    _configure(b2, target)
    n, k = drive.shape
    chunk = max(1, min(n, CHUNK_VALUES // (steps * k)))
    block = max(1, BLOCK_VALUES // k)
    t0 = time.perf_counter()
    objs = build(b2, net, steps, chunk, noise="own" if independent else "table",
                 dt=dt_ms * b2.ms, noise_rows=block)
    network, latents, dt = objs["network"], objs["latents"], objs["dt"]
    with progress_bar(total=n * steps, desc=f"brian2 ({target})", unit="step",
                      enabled=progress) as bar:
        feed = _Feed(objs, recorder, net.u0, steps, block, seed, offset, noise, bar)
        network.add(b2.NetworkOperation(feed.boundary, dt=block * dt, when="start",
                                        order=-1, name="ipvae_block"))
        network.run(0 * dt, namespace={})  # code generation and compilation (or cache load)
        build_seconds, run_seconds = time.perf_counter() - t0, 0.0
        for first in range(0, n, chunk):
            m = min(chunk, n - first)
            objs["drive_table"][:m] = drive[first:first + m]
            if independent:
                b2.seed(_sample_seed(seed, offset + first))
            latents.t_start = network.t
            feed.begin(first, m, int(round(float(network.t / dt))))
            t0 = time.perf_counter()
            with _gc_frozen():
                network.run(m * steps * dt, namespace={})
            # Network.run first regenerates its code objects (compiled modules come
            # from the cache): ~50 ms a call, counted as build; the step loop is the run.
            loop = float(getattr(b2.get_device(), "_last_run_time", np.nan))
            wall = time.perf_counter() - t0
            loop = wall if not np.isfinite(loop) else min(loop, wall)
            run_seconds += loop
            build_seconds += wall - loop
            feed.harvest(feed.end)
    return dict(build_seconds=build_seconds, run_seconds=run_seconds)


@contextlib.contextmanager
def _gc_frozen():
    """Objects alive now skip the garbage collector's passes until the block ends.

    ``Network.run`` starts with a full ``gc.collect()`` (to warn about objects left
    out of the network), whose cost grows with everything the process holds: with
    ~150,000 objects alive (numpy, scipy, Brian2 itself) it took 0.1 s per call,
    0.4 ms per step of a 256-step run, more than the steps themselves.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _run_standalone(b2, net, drive, steps, seed, offset, noise, independent, dt_ms,
                    spikes, u, progress):
    """cpp_standalone: one C++ program runs all N inputs, built in a temporary directory."""
    n, k = drive.shape
    workdir = tempfile.mkdtemp(prefix="ipvae-brian2-standalone-")
    try:
        b2.set_device("cpp_standalone", directory=workdir, build_on_run=False)
        b2.prefs.devices.cpp_standalone.openmp_threads = 0
        values = None
        if noise is not None and not independent:  # the caller's ξ, inputs one after another
            values = np.ascontiguousarray(noise.transpose(1, 0, 2)).reshape(n * steps, k)
        mode = "own" if independent else "keyed" if noise is None else "timed"
        objs = build(b2, net, steps, n, noise=mode, dt=dt_ms * b2.ms, standalone=True,
                     noise_values=values, drive_values=drive, seed=seed, offset=offset)
        del values
        network, latents, dt = objs["network"], objs["latents"], objs["dt"]
        if independent:
            b2.seed(_sample_seed(seed, offset))
        latents.t_start = 0 * dt
        network.run(n * steps * dt, namespace={})
        with progress_bar(total=n * steps, desc="brian2 (cpp_standalone)", unit="step",
                          enabled=progress) as bar:
            t0 = time.perf_counter()
            with _compilers_tmpdir(Path(workdir) / "tmp"):
                b2.device.build(directory=workdir, compile=False, run=False,
                                with_output=False)  # writes the project, tests compiler flags
                _compile(b2, workdir)
                with _program_supervised(b2, workdir):
                    b2.device.run(directory=workdir, results_directory="results",
                                  with_output=False)
            total = time.perf_counter() - t0
            bar.update(n * steps)
        _collect(objs, n, steps, k, spikes, u, net.u0)
        run_seconds = float(getattr(b2.device, "_last_run_time", float("nan")))
        return dict(build_seconds=total - run_seconds, run_seconds=run_seconds)
    except Exception as err:
        raise RuntimeError(f"Brian2 cpp_standalone run failed: {err}") from err
    finally:
        b2.Network._globally_running = False  # left set when the program's run is interrupted
        b2.device.reinit()
        b2.set_device("runtime")
        shutil.rmtree(workdir, ignore_errors=True)


def _compile(b2, workdir):
    """Compile the generated project in ``workdir`` with make, in a process group of its own.

    Brian2 itself compiles with ``os.system``, whose wait no signal interrupts: a
    SIGTERM would wait for every g++ job to finish.  Here Python waits, so an
    exception (Ctrl-C, or SIGTERM/SIGHUP under ``signals_as_exceptions``) kills
    make and its compilers at once.  Their output goes to ``workdir/make.log``.
    make runs under :func:`_supervise` (the group's leader), which kills the group
    if this process dies without its clean-up (SIGKILL).
    """
    prefs = b2.prefs.devices.cpp_standalone
    log = Path(workdir) / "make.log"
    make = [*shlex.split(prefs.make_cmd_unix), *prefs.extra_make_args_unix]
    with open(log, "wb") as out:
        proc = subprocess.Popen(_supervised(make, workdir), cwd=workdir,
                                stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait()
        finally:
            if proc.returncode is None:  # interrupted: make and its compilers go now
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    if code != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"compilation failed (make exited with {code}): "
                           + " | ".join(tail))


_SUPERVISOR = ("import sys; sys.path.insert(0, sys.argv[1]); "
               "from networks.brian import _supervise; sys.exit(_supervise(sys.argv[2:]))")


def _supervised(command: list[str], workdir) -> list[str]:
    """The command line running ``command`` under :func:`_supervise` for this process."""
    return [sys.executable, "-c", _SUPERVISOR, str(REPO_ROOT), str(os.getpid()), str(workdir),
            "--", *command]


def _supervise(argv: list[str]) -> int:
    """Watchdog around one command of a cpp_standalone run (make, or the compiled program).

    ``argv`` is PARENT DIR -- COMMAND...: PARENT the pid of the Python process running
    the simulation, DIR its build folder.  Runs in a process group of its own (made
    here unless it already leads one), starts COMMAND as its child and returns its exit
    status (128 + signal number if a signal ended it).  The child gets SIGKILL when
    this process dies (Linux ``PR_SET_PDEATHSIG``).  When PARENT dies first (SIGKILL,
    which no clean-up of its own survives), the watchdog the Lava child uses
    (``networks.lava_child._watch_parent``, polling every 0.5 s) removes DIR and kills
    this process group: make, every compiler it started, or the program, and this
    process.  Files a compiler writes while DIR is being removed may stay (the group is
    killed right after); nothing of the group keeps running.
    """
    if len(argv) < 4 or argv[2] != "--":
        print("usage: _supervise PARENT DIR -- COMMAND...", file=sys.stderr)
        return 2
    parent, directory, command = int(argv[0]), argv[1], argv[3:]
    if os.getpgid(0) != os.getpid():
        os.setsid()  # the watchdog kills its own group: never the caller's
    if os.getppid() != parent:  # the run ended before we started
        shutil.rmtree(directory, ignore_errors=True)
        return 1
    preexec = None
    if sys.platform.startswith("linux"):
        import ctypes

        prctl, me = ctypes.CDLL(None, use_errno=True).prctl, os.getpid()

        def preexec():  # in the child, before exec: SIGKILL when this process dies
            prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
            if os.getppid() != me:
                os._exit(1)

    try:
        child = subprocess.Popen(command, preexec_fn=preexec)
    except OSError as err:  # one line for the caller's log (make.log, the program's stdout)
        print(f"cannot run {command[0]}: {err.strerror}", file=sys.stderr)
        return 127
    from networks.lava_child import _watch_parent

    _watch_parent(parent, directory)
    code = child.wait()
    return 128 - code if code < 0 else code


@contextlib.contextmanager
def _program_supervised(b2, workdir):
    """Brian2 runs the compiled program (``./main``) under :func:`_supervise` in the block."""
    prefs = b2.prefs.devices.cpp_standalone
    previous = prefs.run_cmd_unix
    command = [previous] if isinstance(previous, str) else list(previous)
    prefs.run_cmd_unix = _supervised(command, workdir)
    try:
        yield
    finally:
        prefs.run_cmd_unix = previous


@contextlib.contextmanager
def _compilers_tmpdir(path: Path):
    """Child processes started in the block (g++ from make and from Brian2's compiler-flag
    tests) keep their temporary files in ``path`` (created here; the caller removes it):
    a compiler killed mid-way cannot leave them in the user's temporary folder.  Python's
    own ``tempfile`` folder, chosen once per process, is unchanged."""
    path.mkdir(exist_ok=True)
    previous = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(path)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["TMPDIR"]
        else:
            os.environ["TMPDIR"] = previous


@contextlib.contextmanager
def _cleaned_up_on_interrupt():
    """Undo what an interrupted run leaves behind (design §4.2).

    On Ctrl-C, SIGTERM or SIGHUP (the latter two arrive as ``_Terminated`` inside
    :func:`signals_as_exceptions`): the compilers this run started and that still
    run (Brian2 compiles cython modules and tests compiler flags in child
    processes it does not stop) get SIGTERM, which lets g++ remove its temporary
    files.  On SIGTERM and SIGHUP, which then end the process, Brian2's own files
    are removed too: for the life of the process it keeps a debug log, a copy of
    the main script and its compilers' redirected output (``brian_*`` in the
    temporary folder) and removes them at interpreter exit, which a process ended
    by a signal never reaches.
    """
    since = _clock_ticks()
    try:
        yield
    except (KeyboardInterrupt, _Terminated) as err:
        _end_children_since(since)
        if isinstance(err, _Terminated):
            from brian2.utils.logger import clean_up_logging

            clean_up_logging()  # Brian2's exit handler: its files, unless it keeps them on purpose
        raise


def _clock_ticks() -> int:
    """Now, in the clock ticks since boot that /proc/PID/stat counts start times in."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK"))


def _end_children_since(since: int, grace: float = 2.0) -> None:
    """End this process's descendants started at or after clock tick ``since``, the
    deepest first (a compiler before its driver, so that the driver, ending last,
    removes the temporary files): SIGTERM, then SIGKILL after ``grace`` seconds.
    Linux /proc; elsewhere nothing."""
    if not os.path.isdir("/proc"):
        return
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                stats[int(entry)] = (int(fields[1]), int(fields[19]))  # ppid, start time
            except (OSError, IndexError, ValueError):
                continue
    levels, frontier = [], {os.getpid()}
    while frontier:
        frontier = {pid for pid, (ppid, _) in stats.items() if ppid in frontier}
        levels.append([pid for pid in frontier if stats[pid][1] >= since - 1])
    for level in reversed(levels):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in level:
                with contextlib.suppress(OSError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + grace
            while level and time.monotonic() < deadline:
                level = [pid for pid in level if not _gone(pid)]
                if level:
                    time.sleep(0.02)
            if not level:
                break


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie counts: it no longer runs)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except OSError:
        return True
