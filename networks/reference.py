"""The reference simulator: the iP-VAE recurrence of design §1, vectorised over the batch.

Each step is the read-out Φz, the feedback Φᵀe (an (N×D)(D×K) float64
product), sampling and the membrane update.  The read-out is event-driven while
few neurons fire (D multiply-adds per nonzero count; the dense (N×K)(K×D)
product otherwise); it, the sampling and the update run in the compiled kernels
of :mod:`neurons.kernels` (the numbers of :mod:`neurons.poisson` to rounding,
the same counts).  Inputs never interact, so
a large batch is cut into row blocks that run side by side in threads, one per
core, each with single-threaded BLAS: no step ever waits for another core.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

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


def run(net, x, steps, *, seed=0, offset=0, noise=None, record=None, rate_metrics=False,
        progress=False, block=64, threads=None) -> Trace:
    """Run T = ``steps`` inference steps on inputs x (N, D); see ``networks.simulate``.

    threads : row blocks run in parallel (default: the cores this process may use).
    block : steps of noise drawn at a time.
    """
    phi_t = np.ascontiguousarray(net.phi.T)  # (K, D), shared by every block

    def make_kernels(lo, hi):
        return FloatKernels(net, phi_t, seed, offset + lo,
                            None if noise is None else noise[:, lo:hi], block)

    return run_loop(net, x, steps, make_kernels, record=record, rate_metrics=rate_metrics,
                    progress=progress, threads=threads,
                    info=dict(backend="reference", seed=seed, offset=offset, shared_noise=True))


class FloatKernels:
    """The float64 arithmetic of one row block: the shared uniforms, ``neurons.kernels``.

    The row loop (:func:`_run_rows`) asks a kernel set for: ``blocks(steps)``
    (an iterator of blocks of per-step noise, any objects its ``fire`` takes),
    ``start(u)`` (u ← u₀), ``fire(u, noise_t, rate, z)`` (counts and rates into
    float64 arrays; returns the number of nonzero counts) and
    ``integrate(u, z, residual, u_next)`` (the membrane step, given the read-out
    residual x − Φz).  The integer emulator (``hardware.emulator``) is another one.
    """

    def __init__(self, net, phi_t, seed, offset, noise, block):
        self.net, self.phi_t = net, phi_t
        self.seed, self.offset, self.noise, self.block = seed, offset, noise, block
        self.sigma2, self.bias, self.eta = net.sigma2, net.bias, net.eta
        self._error = self._feedback = None

    def blocks(self, steps, n, k):
        return noise_blocks(self.seed, steps, n, k, self.offset, self.noise, self.block)

    def start(self, u):
        u[...] = self.net.u0

    def fire(self, u, xi_t, rate, z):
        return kernels.spikes(u, np.ascontiguousarray(xi_t), rate, z)

    def integrate(self, u, z, residual, u_next):
        """The prediction error (x − Φz)/σ² (``neurons.poisson.prediction_error``, from the
        read-out's residual), its feedback Φᵀe, and the membrane update."""
        if self._error is None:
            self._error = np.empty_like(residual)
            self._feedback = np.empty_like(u)
        np.divide(residual, self.sigma2, out=self._error)
        np.matmul(self._error, self.net.phi, out=self._feedback)
        kernels.membrane(u, self._feedback, self.eta, self.bias, self.net.clamp_u,
                         self.net.clamp_du, u_next)


def run_loop(net, x, steps, make_kernels, *, record, rate_metrics, progress, threads,
             info) -> Trace:
    """The row loop and recorder shared by the float reference and the integer emulator.

    make_kernels(lo, hi) : the kernel set (see :class:`FloatKernels`) of rows lo..hi.
    """
    n, k = x.shape[0], net.n_latents
    rec = TraceRecorder(net, x, steps, record, rate_metrics, info=info)
    phi_t = np.ascontiguousarray(net.phi.T)
    edges = row_blocks(n, k, default_threads() if threads is None else threads)
    with progress_bar(total=steps, desc=info.get("backend", "run"), unit="step",
                      enabled=progress) as bar:
        def run_rows(lo, hi):
            rows = slice(lo, hi)
            _run_rows(make_kernels(lo, hi), phi_t, x[rows], steps, rec, rows,
                      bar if lo == 0 else None)

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
