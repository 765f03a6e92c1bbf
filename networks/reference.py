"""The reference simulator: the iP-VAE recurrence of design §1, vectorised over the batch.

Each step is sampling, the read-out Φz, the feedback and the membrane update.
Work follows the spikes, as on neuromorphic hardware, while few neurons fire:

- the read-out Φz sums the columns of Φ of the neurons that fired (D
  multiply-adds per nonzero count; the dense (N×K)(K×D) product above
  ``SPARSE_READOUT``);
- the feedback is taken in the folded form of design §1.1: the drive Φᵀx/σ² is
  computed once per input, and each step adds the rows of the recurrent
  weights W = −ΦᵀΦ/σ² of the neurons that fired, weighted by their counts (K
  multiply-adds per nonzero count).  Above ``SPARSE_RECURRENT`` nonzero counts,
  or when W would not fit in ``RECURRENT_MAX_BYTES``, the step takes the
  prediction error's dense product ((x − Φz)/σ²)Φ instead.  Both are the same
  function; they round differently (within the contract of design §2.1).

Sampling and the membrane update run in the compiled kernels of
:mod:`neurons.kernels` (the numbers of :mod:`neurons.poisson` to rounding, the same
counts).  Inputs never interact, so a large batch is cut into row blocks that run
side by side in threads, one per core, each with single-threaded BLAS: no step ever
waits for another core.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
import weakref
from dataclasses import dataclass

import numpy as np
from networks.progress import progress_bar

from networks.noise import noise_blocks
from networks.trace import Trace, TraceRecorder
from neurons import kernels

MIN_BLOCK_ELEMENTS = 8192
"""A row block holds at least this many neurons (rows × K); smaller batches run in one."""

SPARSE_READOUT = 0.2
"""Up to this fraction of nonzero counts the read-out Φz is event-driven (work per
spike fired, ``neurons.kernels.readout``); above it, the dense BLAS product is faster."""

SPARSE_RECURRENT = 0.2
"""Up to this fraction of nonzero counts the feedback is the drive plus the recurrent rows
of the neurons that fired (``neurons.kernels.readout`` over W); above it, the dense
product of the prediction error."""

RECURRENT_MAX_BYTES = 64 * 2**20
"""W = −ΦᵀΦ/σ² (K×K float64) is built only up to this size (K ≤ 2,896); larger networks
take the dense prediction-error product every step.  The event-driven step reads K
doubles of W per nonzero count, so its work grows as K² while the dense product's grows as
K, and once W is far larger than the caches its rows come from memory: measured in
``make bench`` (the reference section's crossover table; planted network, D = 784,
N = 256, 4–6% of counts nonzero, 2-core AMD Zen 4 with 32 MiB of L3; two runs), the
event-driven step is 3.5–5.2×, 2.9–3.3× and 1.6–1.7× as fast as the dense one at K = 512,
1,024 and 2,048 (W 2, 8 and 32 MiB) and 0.8–0.9× at K = 4,096 (W 128 MiB): the crossover
lies between, and this bound sits at its geometric middle."""

GRAM_MAX_BYTES = 64 * 2**20
"""ΦᵀΦ (K×K float64), for the per-step MSE without the read-out, up to this size (K ≤ 2,896);
larger networks sum the squared residual of the event-driven read-out."""

KEEP_MAX_BYTES = 64 * 2**20
"""The folded weights of a network are kept between its runs while they take at most this."""


TILE_ROWS = 32
"""Rows of a block that the fused path runs together for ``block`` steps at a time (their
state then stays in the core's cache; see ``FloatKernels.run_rows``).  One fused step call
takes a tile, and sums each slice of W's columns for all its rows while the slice is in
cache."""


def run(net, x, steps, *, seed=0, offset=0, noise=None, record=None, rate_metrics=False,
        progress=False, block=64, threads=None) -> Trace:
    """Run T = ``steps`` inference steps on inputs x (N, D); see ``networks.simulate``.

    threads : row blocks run in parallel (default: the cores this process may use).
    block : steps of noise drawn at a time.
    """
    block = int(block)
    if block < 1:
        raise ValueError(f"block (steps of noise drawn at a time) must be >= 1, got {block}")
    if threads is not None and int(threads) < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    k = net.n_latents
    # W[pre, post] (the transpose of Lava's Dense layout), so that a fired neuron's row
    # is contiguous; shared by every block, with ΦᵀΦ for the folded MSE.
    folded = folded_weights(net) if k * k * 8 <= RECURRENT_MAX_BYTES else None
    paths = []

    def make_kernels(lo, hi):
        kern = FloatKernels(net, seed, offset + lo,
                            None if noise is None else noise[:, lo:hi], block,
                            x=x[lo:hi], folded=folded)
        paths.append(kern.paths)
        return kern

    trace = run_loop(net, x, steps, make_kernels, record=record, rate_metrics=rate_metrics,
                     progress=progress, threads=threads,
                     info=dict(backend="reference", seed=seed, offset=offset, shared_noise=True))
    trace.info["feedback_steps"] = {name: int(sum(p[name] for p in paths))
                                    for name in ("event-driven", "dense")}
    return trace


@dataclass(frozen=True)
class Folded:
    """The folded quantities of a network shared by every row block (K×K float64 each).

    w_rows : W[pre, post] = −ΦᵀΦ/σ² (the recurrent weights, a fired neuron's row contiguous);
    gram : ΦᵀΦ, for the per-step MSE without the read-out, and norms : (K,) ‖φ_k‖ (both
    None above ``GRAM_MAX_BYTES``).
    """

    w_rows: np.ndarray
    gram: np.ndarray | None
    norms: np.ndarray | None


_FOLDED = weakref.WeakKeyDictionary()  # net -> (phi, log_sigma, Folded) it was built from


def folded_weights(net) -> Folded:
    """W and ΦᵀΦ of ``net`` (two K×K×D products).  Kept for the next run while Φ and σ are
    unchanged, up to ``KEEP_MAX_BYTES`` (evaluating a data set in chunks builds them once);
    ΦᵀΦ only up to ``GRAM_MAX_BYTES`` (larger networks sum the MSE from the read-out)."""
    kept = _FOLDED.get(net)
    if kept is not None and np.array_equal(kept[0], net.phi) and np.array_equal(
            kept[1], net.log_sigma):
        return kept[2]
    k = net.n_latents
    gram = net.phi.T @ net.phi if k * k * 8 <= GRAM_MAX_BYTES else None
    folded = Folded(kernels.row_table(net.recurrent_weights().T), gram,
                    None if gram is None else np.sqrt(np.maximum(np.diagonal(gram), 0.0)))
    if 2 * k * k * 8 <= KEEP_MAX_BYTES:
        _FOLDED[net] = (net.phi.copy(), net.log_sigma.copy(), folded)
    return folded


_READOUT = weakref.WeakKeyDictionary()  # net -> (phi, Φᵀ) it was built from


def readout_matrix(net) -> np.ndarray:
    """Φᵀ (K, D) laid out by ``neurons.kernels.row_table``, for the read-out; kept for the
    next run while Φ is unchanged."""
    kept = _READOUT.get(net)
    if kept is not None and np.array_equal(kept[0], net.phi):
        return kept[1]
    phi_t = kernels.row_table(net.phi.T)
    _READOUT[net] = (net.phi.copy(), phi_t)
    return phi_t


class FloatKernels:
    """The float64 arithmetic of one row block: the shared uniforms, ``neurons.kernels``.

    With the compiled kernels (``fused``) the block runs :meth:`run_rows`, one fused kernel
    call per step (``neurons.kernels.step``).  Without them, the generic row loop
    (:func:`_run_rows`) asks a kernel set for: ``blocks(steps)`` (an iterator of blocks
    of per-step noise, any objects its ``fire`` takes), ``start(u)`` (u ← u₀),
    ``fire(u, noise_t, rate, z)`` (counts and rates into float64 arrays; returns the
    number of nonzero counts) and ``integrate(u, z, residual, u_next)`` (the membrane
    step, given the read-out residual x − Φz).  The integer emulator
    (``hardware.emulator``) is another such kernel set.  A kernel set whose ``fused`` is
    true runs its block itself instead: ``run_rows(phi_t, x, steps, rec, rows, bar)``.

    Feedback (design §2.3): a row whose nonzero counts are at most ``SPARSE_RECURRENT``
    of K takes the folded, event-driven form (the drive Φᵀx/σ², once per input, plus
    the rows of W of the neurons that fired); a busier row, or every row when W is not
    built (``RECURRENT_MAX_BYTES``), the dense prediction error ((x − Φz)/σ²)Φ.
    ``paths`` counts the row-steps that took each.
    """

    def __init__(self, net, seed, offset, noise, block, x=None, folded=None):
        self.net, self.x = net, x
        self.seed, self.offset, self.noise, self.block = seed, offset, noise, block
        self.sigma2, self.bias, self.eta = net.sigma2, net.bias, net.eta
        self.folded = folded if x is not None else None  # None: dense feedback only
        self.drive = self.xphi = self.xsq = None
        if self.folded is not None:
            # (n, K) the drive Φᵀ(x/σ²) and Φᵀx, (n,) ‖x‖²: sums over each input's nonzero
            # pixels in order, so a row's numbers never depend on the batch it comes in
            phi, k = np.ascontiguousarray(net.phi), net.n_latents
            self.drive = np.empty((len(x), k))
            kernels.readout(np.ascontiguousarray(x / self.sigma2), phi, self.drive)
            if self.folded.gram is not None:  # the folded MSE's quantities
                self.xphi = np.empty((len(x), k))
                kernels.readout(np.ascontiguousarray(x), phi, self.xphi)
                self.xsq = np.einsum("nd,nd->n", x, x)
        self.paths = {"event-driven": 0, "dense": 0}  # row-steps that took each path
        self.fused = kernels.compiled()
        self._fired = 0
        self._error = self._feedback = None

    def blocks(self, steps, n, k):
        return noise_blocks(self.seed, steps, n, k, self.offset, self.noise, self.block)

    def start(self, u):
        u[...] = self.net.u0

    def fire(self, u, xi_t, rate, z):
        self._fired = kernels.spikes(u, np.ascontiguousarray(xi_t), rate, z)
        return self._fired

    def integrate(self, u, z, residual, u_next):
        """The feedback Φᵀ(x − Φz)/σ² and the membrane update (the generic loop's step).

        Event-driven while few neurons of the block fired: the drive Φᵀx/σ² plus the rows
        of W of the neurons that fired; otherwise the prediction error (x − Φz)/σ²
        (``neurons.poisson.prediction_error``, from the read-out's residual) times Φ.
        """
        if self._feedback is None:
            self._feedback = np.empty_like(u)
        if self.drive is not None and self._fired <= SPARSE_RECURRENT * z.size:
            kernels.readout(z, self.folded.w_rows, self._feedback)
            self._feedback += self.drive
            self.paths["event-driven"] += len(u)
        else:
            if self._error is None:
                self._error = np.empty_like(residual)
            np.divide(residual, self.sigma2, out=self._error)
            np.matmul(self._error, self.net.phi, out=self._feedback)
            self.paths["dense"] += len(u)
        kernels.membrane(u, self._feedback, self.eta, self.bias, self.net.clamp_u,
                         self.net.clamp_du, u_next)

    def run_rows(self, phi_t, x, steps, rec, rows, bar):
        """The recurrence for this block's inputs x (n, D), one fused kernel call per step
        and tile.

        The inputs never interact, so the block runs in tiles of ``TILE_ROWS`` rows, each
        for ``self.block`` steps at a time (then the next tile): a tile's state (u, z,
        rates, drive: a few KiB per row) stays in the core's cache across its steps
        instead of the whole block's streaming through it every step.  Every number is
        the one a whole-block step gives (rows are computed independently, with the same
        noise by index).  Recorded steps are computed straight into the trace (u, recon;
        spikes copied); the per-step metrics always are.  A step's MSE comes from the
        folded quantities (``neurons.kernels.step``), or, in a row on the dense path,
        from its residual.  u_T is left in the trace (always kept).
        """
        net, n, k = self.net, x.shape[0], self.net.n_latents
        x = np.ascontiguousarray(x, dtype=np.float64)
        spare = [np.empty((n, k)), np.empty((n, k))]
        rate, z = np.empty((n, k)), np.empty((n, k))
        dense = np.empty(n, dtype=np.int64)
        f = self.folded
        max_sparse = int(np.floor(SPARSE_RECURRENT * k)) if f is not None else -1
        bias = np.ascontiguousarray(self.bias, dtype=np.float64)
        eta, cu, cdu = float(self.eta), float(net.clamp_u), float(net.clamp_du)
        w_rows, gram, norms = (None, None, None) if f is None else (f.w_rows, f.gram, f.norms)
        self.start(_u_storage(rec, 0, rows, spare[0]))
        tiles = [slice(lo, min(n, lo + TILE_ROWS)) for lo in range(0, n, TILE_ROWS)]
        where = [0] * len(tiles)  # per tile: spare[p] holds its u_t (unless u_t is recorded)

        def part(a, tile):
            return None if a is None else a[tile]

        for t0 in range(0, steps, self.block):
            t1 = min(steps, t0 + self.block)
            for ti, tile in enumerate(tiles):
                g = slice(rows.start + tile.start, rows.start + tile.stop)  # the trace's rows
                m = tile.stop - tile.start
                xt, zt, rt = x[tile], z[tile], rate[tile]
                drive, xphi, xsq = (part(a, tile) for a in (self.drive, self.xphi, self.xsq))
                p = where[ti]
                u = _u_storage(rec, t0, g, spare[p][tile])
                for t in range(t0, t1):
                    i = rec.slot(t)
                    recon = None if i is None else rec.recon[i, g]
                    u_next = _u_storage(rec, t + 1, g, spare[1 - p][tile])
                    xi = (None if self.noise is None
                          else np.ascontiguousarray(self.noise[t, tile], dtype=np.float64))
                    mse = rec.step_mse[t, g]
                    n_dense = kernels.step(
                        u, xi, u_next, zt, rt, drive, w_rows, xphi, gram, norms, xsq, phi_t,
                        xt, recon, bias, mse, rec.step_zeros[t, g], rec.step_rate[t, g],
                        dense[:m], self.seed, self.offset + tile.start, t, eta, cu, cdu,
                        max_sparse)
                    if n_dense:
                        self._dense_rows(dense[:n_dense], u, zt, xt, phi_t, u_next, mse, recon)
                    self.paths["dense"] += n_dense
                    self.paths["event-driven"] += m - n_dense
                    if i is not None:
                        rec.spikes[i, g] = zt
                    if rec.rate_metrics:
                        rec.step_rate_mse[t, g] = np.mean((xt - rt @ net.phi.T) ** 2, axis=1)
                    u, p = u_next, 1 - p
                where[ti] = p
            if bar is not None:
                bar.update(t1 - t0)

    def _dense_rows(self, idx, u, z, x, phi_t, u_next, mse, recon):
        """The dense path for rows ``idx`` of the block: the read-out Φz, the prediction
        error (x − Φz)/σ² times Φ, the membrane update, and the MSE from the residual."""
        sel = slice(None) if len(idx) == len(u) else idx
        zd = z[sel]
        rd = np.empty((len(idx), x.shape[1]))
        if np.count_nonzero(zd) <= SPARSE_READOUT * zd.size:
            kernels.readout(np.ascontiguousarray(zd), phi_t, rd)
        else:
            np.matmul(zd, phi_t, out=rd)
        residual = x[sel] - rd
        fb = (residual / self.sigma2) @ self.net.phi
        if isinstance(sel, slice):
            kernels.membrane(u, fb, self.eta, self.bias, self.net.clamp_u, self.net.clamp_du,
                             u_next)
        else:
            out = np.empty((len(idx), u.shape[1]))
            kernels.membrane(np.ascontiguousarray(u[sel]), fb, self.eta, self.bias,
                             self.net.clamp_u, self.net.clamp_du, out)
            u_next[sel] = out
        mse[sel] = np.einsum("nd,nd->n", residual, residual) / residual.shape[1]
        if recon is not None:
            recon[sel] = rd


def run_loop(net, x, steps, make_kernels, *, record, rate_metrics, progress, threads,
             info) -> Trace:
    """The row loop and recorder shared by the float reference and the integer emulator.

    make_kernels(lo, hi) : the kernel set (see :class:`FloatKernels`) of rows lo..hi.
    """
    n, k = x.shape[0], net.n_latents
    rec = TraceRecorder(net, x, steps, record, rate_metrics, info=info)
    phi_t = readout_matrix(net)
    edges = row_blocks(n, k, default_threads() if threads is None else threads)
    with progress_bar(total=steps, desc=info.get("backend", "run"), unit="step",
                      enabled=progress) as bar:
        def run_rows(lo, hi):
            rows = slice(lo, hi)
            kern = make_kernels(lo, hi)
            if kern.fused:
                kern.run_rows(phi_t, x[rows], steps, rec, rows, bar if lo == 0 else None)
            else:
                _run_rows(kern, phi_t, x[rows], steps, rec, rows, bar if lo == 0 else None)

        if len(edges) == 2:
            run_rows(0, n)
        else:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=1, user_api="blas"), \
                    ThreadPoolExecutor(len(edges) - 1, thread_name_prefix="reference") as pool:
                for f in [pool.submit(run_rows, lo, hi) for lo, hi in zip(edges[:-1], edges[1:])]:
                    f.result()
    return rec.finish()  # every block wrote its u_T into the trace


def _run_rows(kern, phi_t, x, steps, rec, rows, bar):
    """The recurrence for one block of inputs x (n, D); records into ``rec`` at ``rows``.

    kern : the block's kernel set; phi_t : Φᵀ (K, D), C-contiguous, for the read-out.
    Returns the final potentials u_T (n, K).  Recorded steps are computed
    straight into the trace's storage; the rest into arrays allocated once.
    """
    n, k, d = x.shape[0], rec.net.n_latents, rec.net.input_dim
    spare = [np.empty((n, k)), np.empty((n, k))]  # u_t and u_{t+1} when not recorded
    rate, z = np.empty((n, k)), np.empty((n, k))
    spare_recon, residual = np.empty((n, d)), np.empty((n, d))
    u = _u_storage(rec, 0, rows, spare[0])
    kern.start(u)
    t = 0
    for xi in kern.blocks(steps, n, k):
        for xi_t in xi:
            i = rec.slot(t)
            recon = spare_recon if i is None else rec.recon[i, rows]
            fired = kern.fire(u, xi_t, rate, z)
            if fired <= SPARSE_READOUT * z.size:
                kernels.readout(z, phi_t, recon)
            else:
                np.matmul(z, phi_t, out=recon)
            np.subtract(x, recon, out=residual)
            u_next = _u_storage(rec, t + 1, rows, spare[1] if u is spare[0] else spare[0])
            kern.integrate(u, z, residual, u_next)
            rec.add_metrics(t, u, z, recon, residual, rate, rows=rows)
            if i is not None:
                rec.spikes[i, rows] = z
            u, t = u_next, t + 1
        if bar is not None:
            bar.update(len(xi))
    return u


def _u_storage(rec, t, rows, spare):
    """Where u_t of these rows is computed: the trace's own storage if kept, else ``spare``."""
    j = rec.u_slot(t)
    return spare if j is None else rec.u[j, rows]


def default_threads() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def row_blocks(n: int, k: int, threads: int) -> np.ndarray:
    """Edges (parts + 1,) of ≤ ``threads`` near-equal row blocks of an (n, k) batch."""
    parts = max(1, min(int(threads), n, n * k // MIN_BLOCK_ELEMENTS))
    return np.linspace(0, n, parts + 1).round().astype(int)
