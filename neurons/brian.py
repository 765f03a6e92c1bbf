"""The latent neuron population of the iP-VAE as a Brian2 ``NeuronGroup``.

Equations are data (module-level strings); the mathematics comes from
:mod:`neurons.poisson` and its C header ``neurons/recipe.h`` (design §2.1):

- ``ipvae_poisson_icdf(xi, r)`` (from :func:`brian_functions`) is a Brian2
  user ``Function``: its ``numpy`` implementation calls
  :func:`neurons.poisson.poisson_icdf`; its ``cython`` and ``cpp``
  implementations are the scalar ``ipvae_poisson_icdf`` of ``recipe.h``
  (float64, ``lgamma`` from C's math library), included, not transcribed.
- ``ipvae_clamp(x, c)`` is the authors' clamp (hard floor −8, then the upper soft
  clamp c − softplus(c − x)), likewise: numpy calls
  :func:`neurons.poisson.clamp`; C calls ``recipe.h``'s ``ipvae_clamp`` (numpy's
  ``logaddexp(0, ·)`` branches).

One Brian2 time step is one inference step (``dt`` is cosmetic: 1 ms means
"one step").  Within a step the schedule is

=========  =====================================================================
slot       what happens
=========  =====================================================================
start      (runtime targets, every B steps: the runner's ``NetworkOperation``
           refills the noise ring and empties the monitors, networks.brian)
           every T steps (a new input): u ← u0, ff ← the input's drive row.
           ``FIRE``: z = poisson_icdf(ξ, exp(u)); ξ from the shared-noise
           ring ``ipvae_noise(step mod B, i)``; on cpp_standalone computed
           in C++ from the stream's counter (``neurons/_philox.h``), or read
           from a 2-D ``TimedArray`` holding an explicit ``noise=`` array;
           or ``rand()`` in independent-noise mode.
thresholds every neuron with z > 0 emits one Brian2 spike event (``threshold``)
synapses   the network's ``Synapses`` add w_ij · z_j into ``fb`` of every
           target (event-driven: work ∝ the neurons that fired)
end        ``INTEGRATE``: u ← clamp_u(u + clamp_du(η (ff + fb − b))); fb ← 0
           (a ``StateMonitor`` of u after it, at ``end``, records u_{t+1})
=========  =====================================================================

Units: u is a log-rate (rate = exp(u) spikes per step); z is spikes per step;
``ff`` and ``fb`` are currents in the units of Φᵀe (input / σ²).

Spike events.  The latent group emits *one* Brian2 event per active neuron per
step carrying its count ``z`` (a ``SpikeMonitor(group, variables="z")`` records
it).  For a conventional raster with *z events* per step,
:func:`count_raster_monitor` replays the counts through a
``SpikeGeneratorGroup`` on a finer clock (see its docstring for the timing).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from neurons import poisson as _poisson

LATENT_EQUATIONS = """
u : 1                 # membrane potential u_t (log-rate, dimensionless)
z : 1                 # spike count emitted this step
ff : 1                # constant feed-forward drive Phi^T x / sigma^2 of the current input
fb : 1                # recurrent input -sum_j (Phi^T Phi / sigma^2)_ij z_j, this step
b : 1 (constant)      # leak / bias b > 0
u0 : 1 (constant)     # initial potential (prior log-rate), restored for every input
t_start : second (shared)  # time the current run (block of inputs) started
"""
"""Variables of the latent group (Brian2 ``Equations`` text)."""

NOISE_TABLE = "ipvae_noise(timestep(t, dt) % ipvae_noise_rows, i)"
"""ξ of this step from the runtime noise table, a ring of ``ipvae_noise_rows`` steps (row =
the network's step modulo the table's rows, column = neuron): the runner refills it a block
of steps ahead (networks.brian)."""

NOISE_TIMED = "ipvae_noise(t - t_start, i)"
"""ξ of this step from a 2-D ``TimedArray`` (cpp_standalone with an explicit ``noise=`` array)."""

NOISE_KEYED = "ipvae_noise(timestep(t - t_start, dt), i)"
"""ξ of this step computed in C++ from its stream's counter (cpp_standalone with the keyed
streams; :func:`keyed_noise_function`): argument 0 is the step since the run's start."""

NOISE_OWN = "rand()"
"""Brian2's own uniform stream (independent-noise mode)."""

FIRE = "z = ipvae_poisson_icdf({xi}, exp(u))"
"""Firing: the Poisson inverse CDF of this step's uniform at rate exp(u); ``{xi}`` is one
of :data:`NOISE_TABLE`, :data:`NOISE_KEYED`, :data:`NOISE_TIMED`, :data:`NOISE_OWN`."""

DRIVE_TABLE = "ipvae_drive(timestep(t - t_start, dt) // ipvae_steps, i)"
DRIVE_TIMED = "ipvae_drive(t - t_start, i)"

NEW_INPUT = "u = u0\nff = {drive}"
"""Start of an input (a ``run_regularly`` whose ``dt`` is T steps): reset u, load the drive row
(row = input index since ``t_start``)."""

INTEGRATE = ("u = ipvae_clamp(u + ipvae_clamp(eta * (ff + fb - b), clamp_du), clamp_u)\n"
             "fb = 0")
"""Membrane update of design §1.1 (``eta``, ``clamp_du``, ``clamp_u`` from the namespace)."""

THRESHOLD = "z > 0"
"""A neuron emits a Brian2 spike event in every step in which its count is positive."""

FEEDBACK_SYNAPSE = "w : 1 (constant)"
FEEDBACK_ON_PRE = "fb_post += w * z_pre"
"""Event-driven lateral feedback: w_ij = (−ΦᵀΦ/σ²)[i, j], weighted by the count z_j."""

# ------------------------------------------------- the compiled recipe (neurons/recipe.h)
def _recipe_code():
    """(cython, cpp) support code declaring the recipe header's two functions.

    Brian2's cython target drops ``include_dirs`` (brian2 2.9 overwrites them), so cython
    includes the header by its absolute path; C++ gets ``include_dirs``.  The header's
    digest is part of the code, so Brian2's caches (keyed by the code text) recompile
    when the header changes.
    """
    import hashlib

    header = _poisson.RECIPE_HEADER.resolve()
    if '"' in str(header) or "\\" in str(header):
        raise ValueError(f"the recipe header's path cannot be quoted in C: {header}")
    digest = hashlib.sha256(header.read_bytes()).hexdigest()[:16]
    cython = (f"# {header.name} {digest}\n"
              f'cdef extern from "{header}":\n'
              "    double ipvae_poisson_icdf(double xi, double r)\n"
              "    double ipvae_clamp(double x, double c)\n")
    cpp = f"/* {header.name} {digest}: ipvae_poisson_icdf, ipvae_clamp */\n"
    cpp_kwds = dict(headers=[f'"{header.name}"'], include_dirs=[str(header.parent)])
    return cython, cpp, cpp_kwds


def _functions():
    """Build the Brian2 user Functions (imports brian2)."""
    from brian2 import check_units, implementation

    cython, cpp, cpp_kwds = _recipe_code()

    @implementation("cpp", cpp, **cpp_kwds)
    @implementation("cython", cython)
    @implementation("numpy", discard_units=True)  # plain arrays: no per-call unit checks
    @check_units(xi=1, r=1, result=1)
    def ipvae_poisson_icdf(xi, r):
        return _poisson.poisson_icdf(xi, r).astype(np.float64)

    @implementation("cpp", cpp, **cpp_kwds)
    @implementation("cython", cython)
    @implementation("numpy", discard_units=True)
    @check_units(x=1, c=1, result=1)
    def ipvae_clamp(x, c):
        return _poisson.clamp(x, c)

    return ipvae_poisson_icdf, ipvae_clamp


_CACHE = {}


def brian_functions():
    """(poisson_icdf, clamp) as Brian2 ``Function`` objects, built once per process."""
    if "f" not in _CACHE:
        _CACHE["f"] = _functions()
    return _CACHE["f"]


def table_function(name, values):
    """A Brian2 ``Function`` ``name(row, i)`` returning ``values[row, i]`` of a (rows, cols) table.

    Unlike a ``TimedArray``, the table's size is not compiled into the cython
    code (it is read from the namespace), so one compiled module serves every
    number of steps, inputs and neurons.  ``values`` is used in place: write
    new rows into it between runs.  Out-of-range rows give NaN.
    """
    from brian2 import Function

    values = np.asarray(values)
    if values.ndim != 2 or values.dtype != np.float64 or not values.flags.c_contiguous:
        raise ValueError(f"table {name!r} must be a C-contiguous float64 2-D array")
    flat = values.reshape(-1)
    meta = np.array(values.shape, dtype=np.int32)

    def lookup(row, i):
        row = np.asarray(row, dtype=np.int64)
        if np.any((row < 0) | (row >= meta[0])):
            raise IndexError(f"{name}: row outside 0..{meta[0] - 1}")
        return flat[row * meta[1] + np.asarray(i, dtype=np.int64)]

    f = Function(lookup, arg_units=[1, 1], return_unit=1, arg_types=["integer", "integer"],
                 return_type="float", stateless=True)
    f.implementations.add_numpy_implementation(lookup, discard_units=True)
    code = f"""
cdef double {name}(long row, long i):
    global _namespace{name}_values, _namespace{name}_meta
    if row < 0 or row >= _namespace{name}_meta[0] or i < 0 or i >= _namespace{name}_meta[1]:
        return _numpy.nan
    return _namespace{name}_values[row * _namespace{name}_meta[1] + i]
"""
    f.implementations.add_implementation(
        "cython", code, namespace={f"{name}_values": flat, f"{name}_meta": meta}, name=name)
    return f


PHILOX_HEADER = Path(__file__).with_name("_philox.h")
"""The counter-based Philox generator shared with the compiled kernels (design §2.2)."""


def keyed_noise_function(seed, offset, steps, n_latents):
    """``ipvae_noise(step, i)``: the shared uniform ξ of neuron i at a network step, in C++.

    For cpp_standalone runs of N inputs back to back, T = ``steps`` steps each, from
    network step 0: step s belongs to input n = s // T (data-set index ``offset`` + n) at
    its step t = s mod T, and ξ is position t·K + i of that input's stream
    ``Generator(Philox(key=[seed, offset + n]))`` (design §2.2), computed from the
    stream's counter by ``philox_uniforms`` of ``neurons/_philox.h``, the code the
    compiled kernels use: the same float64 numbers, bit for bit, and no table of N·T·K
    uniforms anywhere.  One Philox block yields four consecutive uniforms; the last
    block is kept (per thread), so neurons i … i + 3 of a step cost one block.

    ``seed``, ``offset``, T and K = ``n_latents`` are compiled into the code as
    constants (seed and offset + N − 1 in [0, 2**63), checked by ``simulate``).
    Returns a Brian2 ``Function`` with a ``cpp`` implementation only.
    """
    from brian2 import Function

    seed, offset, steps, k = int(seed), int(offset), int(steps), int(n_latents)
    if not (0 <= seed < 2**63 and 0 <= offset < 2**63 and steps >= 1 and k >= 1):
        raise ValueError(f"keyed noise needs seed and offset in [0, 2**63) and T, K >= 1, "
                         f"got {seed}, {offset}, {steps}, {k}")
    header = PHILOX_HEADER.resolve()

    def ipvae_noise(step, i):
        raise NotImplementedError("ipvae_noise runs in cpp_standalone code only")

    code = f"""
static inline double ipvae_noise(const int64_t step, const int64_t i)
{{
    /* seed {seed}, offset {offset}, T = {steps} steps per input, K = {k} neurons */
    const uint64_t pos = ((uint64_t)step % {steps}ULL) * {k}ULL + (uint64_t)i;
    const uint64_t index = {offset}ULL + (uint64_t)step / {steps}ULL, block = pos / 4;
    static thread_local uint64_t held_index = ~0ULL, held_block = ~0ULL;
    static thread_local double held[4];
    if (index != held_index || block != held_block) {{
        philox_uniforms({seed}ULL, index, 4 * block, 4, held);
        held_index = index;
        held_block = block;
    }}
    return held[pos % 4];
}}
"""
    f = Function(ipvae_noise, arg_units=[1, 1], return_unit=1,
                 arg_types=["integer", "integer"], return_type="float", stateless=True)
    f.implementations.add_implementation(
        "cpp", code, name="ipvae_noise",
        compiler_kwds=dict(headers=[f'"{header.name}"'], include_dirs=[str(header.parent)]))
    return f


def latent_group(n_latents, u0, bias, *, eta, clamp_u, clamp_du, steps, noise="table",
                 functions=None, dt=None, name="latents", noise_rows=1, standalone=False):
    """The K latent neurons as a Brian2 ``NeuronGroup`` with its firing and integration.

    Parameters
    ----------
    n_latents : K.
    u0 : (K,) initial potentials; bias : (K,) leak b > 0.
    eta, clamp_u, clamp_du : step size and soft-clamp ceilings (scalars).
    steps : T, inference steps per input (the group resets u and loads the next
        input's drive every T steps).
    noise : "table" (runtime targets: ``ipvae_noise(row, i)`` from
        :func:`table_function`, a ring of ``noise_rows`` steps), "keyed"
        (cpp_standalone: ``ipvae_noise(step, i)`` from :func:`keyed_noise_function`),
        "timed" (cpp_standalone with explicit noise: a 2-D ``TimedArray``
        ``ipvae_noise``) or "own" (Brian2's ``rand()``, independent noise).
    functions : dict of the Brian2 functions ``ipvae_noise`` (unless "own")
        and ``ipvae_drive`` (rows = inputs since ``t_start``, columns = neurons).
    dt : the Brian2 time step standing for one inference step (default 1 ms).
    standalone : cpp_standalone: ``ipvae_drive`` is a 2-D ``TimedArray`` with one row per
        input, indexed by time (T steps a row); otherwise a :func:`table_function`.

    Returns the ``NeuronGroup``.
    """
    from brian2 import BrianLogger, NeuronGroup, ms

    if "quiet" not in _CACHE:  # threshold without reset is intended: the event carries z
        BrianLogger.suppress_name("only_threshold")
        _CACHE["quiet"] = True

    icdf, clamp_fn = brian_functions()
    dt = 1 * ms if dt is None else dt
    namespace = dict(ipvae_poisson_icdf=icdf, ipvae_clamp=clamp_fn, eta=float(eta),
                     clamp_u=float(clamp_u), clamp_du=float(clamp_du), ipvae_steps=int(steps),
                     ipvae_noise_rows=int(noise_rows), **(functions or {}))
    xi = dict(table=NOISE_TABLE, keyed=NOISE_KEYED, timed=NOISE_TIMED, own=NOISE_OWN)[noise]
    drive = DRIVE_TIMED if standalone else DRIVE_TABLE
    group = NeuronGroup(int(n_latents), LATENT_EQUATIONS, threshold=THRESHOLD, reset=None,
                        method="exact", namespace=namespace, dt=dt, name=name, order=0)
    group.u0 = np.asarray(u0, dtype=np.float64)
    group.u = group.u0[:]
    group.b = np.asarray(bias, dtype=np.float64)
    group.run_regularly(NEW_INPUT.format(drive=drive), dt=int(steps) * dt, when="start",
                        order=0, name=f"{name}_new_input")
    group.run_regularly(FIRE.format(xi=xi), when="start", order=1, name=f"{name}_fire")
    group.run_regularly(INTEGRATE, when="end", order=0, name=f"{name}_integrate")
    return group


def count_raster_monitor(counts, dt=None, *, name="count_raster", target="numpy"):
    """Replay spike counts as individual Brian2 spike events and return the SpikeMonitor.

    Each step's count z of neuron k becomes z events of neuron k inside that
    step: with M = the largest count in ``counts``, the step [t·dt, (t+1)·dt)
    is split into M slots of dt/M and the j-th of the z events (j = 0 … z−1)
    falls at slot floor(j·M / z), i.e. the z events are spread evenly over the
    step, the first at its start.  A ``SpikeGeneratorGroup`` on the fine clock
    emits them and a ``SpikeMonitor`` records them (a separate small Brian2
    ``Network``; the cost is T·M fine steps).

    Parameters
    ----------
    counts : (T, K) non-negative integer spike counts (one input of a Trace).
    dt : duration of one inference step (default 1 ms, as the backend uses).
    target : Brian2 code-generation target of the replay (default numpy: no compile).

    Returns
    -------
    brian2.SpikeMonitor with ``i`` (neuron) and ``t`` (time) of every event;
    per step totals equal ``counts``.
    """
    from brian2 import Network, SpikeGeneratorGroup, SpikeMonitor, ms, prefs

    counts = np.asarray(counts)
    if counts.ndim != 2 or (counts.size and counts.min() < 0):
        raise ValueError(f"counts must be a (T, K) array of non-negative integers, "
                         f"got shape {counts.shape}")
    dt = 1 * ms if dt is None else dt
    steps, k = counts.shape
    m = max(1, int(counts.max()) if counts.size else 1)
    tt, kk = np.nonzero(counts)
    z = counts[tt, kk].astype(np.int64)
    rep = np.repeat(np.arange(len(z)), z)
    j = np.arange(len(rep)) - np.repeat(np.cumsum(z) - z, z)
    slot = tt[rep] * m + (j * m) // z[rep]
    fine = dt / m
    previous = prefs.codegen.target
    prefs.codegen.target = target
    try:
        gen = SpikeGeneratorGroup(k, kk[rep], slot * fine, dt=fine, name=f"{name}_generator*")
        mon = SpikeMonitor(gen, name=f"{name}*")
        Network(gen, mon).run(steps * dt, namespace={})
    finally:
        prefs.codegen.target = previous
    return mon
