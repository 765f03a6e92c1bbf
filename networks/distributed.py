"""Inference spread over processes and machines (``torchrun``): shard inputs by index, gather.

Inputs never interact and input n's noise is keyed by (seed, offset + n)
(design §2.2), so a data set cut into contiguous index ranges, each simulated
with its own offset, gives the results of one process: only the order in which
the pieces are put back together matters.  Counts are always identical.  Floats
are identical where every simulate call is the same as one process's (a caller
that works in chunks shards in whole chunks, ``unit=``), and where a call's
arithmetic is per input; a dense BLAS product (the reference's feedback Φᵀe
above 20% nonzero counts, the rate read-out Φe^u) rounds the last rows of a
block (row count mod the kernel's unroll) differently, so a split elsewhere
moves potentials by an ulp or so, inside design §2.1's tolerance.

One process per rank, started by ``torchrun`` (which sets ``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``); a command enters through
:func:`lead_or_serve`.  Rank 0 leads: it reads the inputs, runs the command as
usual and, wherever the command simulates, calls :func:`map_shards`, which sends
every rank its shard (the function to run, its arguments and its slice of the
inputs: the other ranks need no files), runs its own, and gathers the results in
index order.  The other ranks only :func:`serve`: they run what rank 0 sends
until it calls :func:`release`.
Without torchrun (no ``WORLD_SIZE`` > 1) nothing here starts a process group and
:func:`map_shards` is one plain call.

Transport: ``torch.distributed`` with the gloo backend (CPU), objects pickled;
a result that is a dict is gathered one key at a time, so the pickled copies of
a large result are never all in memory at once.  An error in any rank's shard
is sent to rank 0 and raised there (the collectives stay in step).
"""
from __future__ import annotations

import atexit
import datetime
import os

import numpy as np

TIMEOUT = datetime.timedelta(hours=12)
"""How long a collective may wait (the workers wait while rank 0 fits the probe and
writes).  A rank that dies does not leave the others waiting that long: torchrun
stops every process of the job when one fails."""

_RUN, _STOP = "run", "stop"


def rank_world() -> tuple[int, int]:
    """(rank, world size).  Under torchrun with ``WORLD_SIZE`` > 1 the gloo process
    group is initialised on first call; otherwise (0, 1) without importing torch."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=TIMEOUT)
        # A gloo group still alive at interpreter exit can abort the process ("terminate
        # called without an active exception", exit -6, seen in about 1 run in 3): tear
        # it down first.
        atexit.register(_destroy_group)
    return dist.get_rank(), dist.get_world_size()


def _destroy_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def shard(n: int, rank: int, world: int, unit: int = 1) -> tuple[int, int]:
    """The index range [lo, hi) of ``rank``'s shard of n inputs split over ``world`` ranks.

    Contiguous, made of whole units of ``unit`` inputs (the last unit may be
    short) and near-equal (unit counts differ by at most one, the larger first),
    so rank 0 always holds input 0 and, with more ranks than units, the last
    ranks get an empty range (lo == hi).
    """
    n, rank, world, unit = int(n), int(rank), int(world), int(unit)
    if n < 0 or world < 1 or unit < 1 or not 0 <= rank < world:
        raise ValueError(f"shard needs n >= 0, unit >= 1 and 0 <= rank < world, got n={n}, "
                         f"rank={rank}, world={world}, unit={unit}")
    q, r = divmod(-(-n // unit), world)
    lo = rank * q + min(rank, r)
    return min(n, lo * unit), min(n, (lo + q + (rank < r)) * unit)


def lead_or_serve(lead, *args) -> int:
    """A command's entry under torchrun: rank 0 returns ``lead(*args, world)`` (the
    command as usual, calling :func:`map_shards` to simulate) and then releases the
    others, also when ``lead`` raises; the other ranks :func:`serve` until then.
    Without torchrun: ``lead(*args, 1)``."""
    rank, world = rank_world()
    if rank != 0:
        return serve()
    try:
        return lead(*args, world)
    finally:
        release()


def map_shards(fn, x, *, offset: int = 0, unit: int = 1, **kwargs) -> list:
    """Run ``fn(x=x[lo:hi], offset=offset + lo, **kwargs)`` on every rank's shard.

    Call on rank 0 (or without torchrun: one call, on all of x).  The shards are
    :func:`shard`'s, whole ``unit`` s of inputs: a caller that works through x in
    chunks passes its chunk size, so that every chunk is the same in any split.  ``fn`` must be
    importable by name (a module-level function; the other ranks import it) and
    its keyword arguments picklable; the other ranks never draw progress bars
    (``progress`` is set False there).  Returns the results of the non-empty
    shards in index order.  An exception in any shard is raised here, after every
    rank has finished (a worker's as RuntimeError naming its rank, unless it was a
    ValueError or MemoryError).
    """
    rank, world = rank_world()
    if world == 1:
        return [fn(x=x, offset=offset, **kwargs)]
    if rank != 0:
        raise RuntimeError("map_shards is called on rank 0; the other ranks serve()")
    import torch.distributed as dist

    n = len(x)
    _broadcast((_RUN, fn, kwargs))
    pieces = [(x[lo:hi], offset + lo)
              for lo, hi in (shard(n, r, world, unit) for r in range(world))]
    mine = [None]
    dist.scatter_object_list(mine, pieces, src=0)
    return _run_and_gather(fn, mine[0], kwargs, rank)


def serve() -> int:
    """Ranks other than 0: run the shards rank 0 sends until :func:`release`; returns 0."""
    import torch.distributed as dist

    rank, _ = rank_world()
    while True:
        message = _broadcast(None)
        if message[0] == _STOP:
            return 0
        _, fn, kwargs = message
        if "progress" in kwargs:
            kwargs = dict(kwargs, progress=False)
        mine = [None]
        dist.scatter_object_list(mine, None, src=0)
        _run_and_gather(fn, mine[0], kwargs, rank)


def release() -> None:
    """Rank 0: tell the serving ranks there is no more work (no-op without torchrun)."""
    rank, world = rank_world()
    if world > 1 and rank == 0:
        _broadcast((_STOP,))


def concat_dicts(parts: list[dict], axes: dict) -> dict:
    """Join per-shard result dicts: key k's arrays concatenated along ``axes[k]``
    (the input axis); keys not in ``axes`` (or None values) are taken from the first part."""
    out = dict(parts[0])
    for k, axis in axes.items():
        arrays = [p[k] for p in parts if p.get(k) is not None]
        if arrays:
            out[k] = np.concatenate(arrays, axis=axis)
    return out


TRACE_AXES = dict(x=0, spikes=1, u=1, recon=1, step_mse=1, step_zeros=1, step_rate=1,
                  step_rate_mse=1)
"""The input axis of each array of a ``Trace`` (``steps`` and ``info`` are shared)."""


def simulate_shard(**kwargs) -> dict:
    """``networks.simulate(**kwargs)`` as a dict of the Trace's fields (for :func:`map_shards`)."""
    from networks.simulate import simulate

    return dict(vars(simulate(**kwargs)))


def concat_traces(parts: list[dict], world: int = 1):
    """One ``Trace`` from the shards' :func:`simulate_shard` dicts, in index order.

    ``info`` is the first shard's (its offset is the whole run's) with counters
    that are dicts of numbers summed over shards, plus ``processes`` when > 1.
    """
    from networks.trace import Trace

    out = concat_dicts(parts, TRACE_AXES)
    info = dict(parts[0]["info"])
    for k, v in info.items():
        if isinstance(v, dict) and all(isinstance(c, (int, float)) for c in v.values()):
            info[k] = {c: sum(p["info"][k][c] for p in parts) for c in v}
    if world > 1:
        info["processes"] = world
    out["info"] = info
    return Trace(**out)


# --- transport -------------------------------------------------------------------------------
def _broadcast(obj):
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _gather(obj, rank):
    import torch.distributed as dist

    world = dist.get_world_size()
    out = [None] * world if rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def _run_and_gather(fn, piece, kwargs, rank):
    """Run this rank's piece (x, offset) and gather every rank's result on rank 0.

    First every rank's header (a dict's keys / an object / empty / an error); rank 0
    then broadcasts what follows: a dict result key by key, an object whole, or
    nothing when a shard failed (the error is raised on rank 0, after the others
    have moved on to wait for the next request).
    """
    x, off = piece
    result, header, own_error = None, ("empty",), None
    if len(x):
        try:
            result = fn(x=x, offset=off, **kwargs)
            header = ("dict", list(result)) if isinstance(result, dict) else ("object",)
        except Exception as err:  # sent to rank 0, raised there
            own_error = err
            header = ("error", type(err).__name__, " ".join(str(err).split()))
    headers = _gather(header, rank)
    plan = None
    if rank == 0:
        failed = [(r, h) for r, h in enumerate(headers) if h[0] == "error"]
        kinds = [h for h in headers if h[0] in ("dict", "object")]
        plan = (("abort",) if failed or not kinds
                else ("keys", kinds[0][1]) if kinds[0][0] == "dict" else ("whole",))
    plan = _broadcast(plan)
    if plan[0] == "keys":
        got = {k: _gather(None if result is None else result[k], rank) for k in plan[1]}
        if rank == 0:
            return [{k: got[k][r] for k in plan[1]} for r, h in enumerate(headers)
                    if h[0] == "dict"]
    elif plan[0] == "whole":
        got = _gather(result, rank)
        if rank == 0:
            return [got[r] for r, h in enumerate(headers) if h[0] == "object"]
    elif rank == 0:
        if own_error is not None:
            raise own_error
        if not failed:
            return []
        r, (_, name, msg) = failed[0]
        if name in ("ValueError", "MemoryError"):
            raise {"ValueError": ValueError, "MemoryError": MemoryError}[name](msg)
        raise RuntimeError(f"process {r} of {len(headers)}: {name}: {msg}")
    return None
