"""The reference simulator: the iP-VAE recurrence of DESIGN.md §1, vectorised over the batch.

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
    n, k = x.shape[0], net.n_latents
    rec = TraceRecorder(net, x, steps, record, rate_metrics,
                        info=dict(backend="reference", seed=seed, offset=offset,
                                  shared_noise=True))
    phi_t = np.ascontiguousarray(net.phi.T)  # (K, D), shared by every block
    edges = row_blocks(n, k, default_threads() if threads is None else threads)
    with progress_bar(total=steps, desc="reference", unit="step", enabled=progress) as bar:
        def run_rows(lo, hi):
            rows = slice(lo, hi)
            block_noise = None if noise is None else noise[:, rows]
            _run_rows(net, phi_t, x[rows], steps, rec, rows, seed, offset + lo, block_noise,
                      block, bar if lo == 0 else None)

        if len(edges) == 2:
            run_rows(0, n)
        else:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=1, user_api="blas"), \
                    ThreadPoolExecutor(len(edges) - 1, thread_name_prefix="reference") as pool:
                for f in [pool.submit(run_rows, lo, hi) for lo, hi in zip(edges[:-1], edges[1:])]:
                    f.result()
    return rec.finish()  # every block wrote its u_T into the trace


def _run_rows(net, phi_t, x, steps, rec, rows, seed, offset, noise, block, bar):
    """The recurrence for one block of inputs x (n, D); records into ``rec`` at ``rows``.

    phi_t : Φᵀ (K, D), C-contiguous.
    Returns the final potentials u_T (n, K).  The prediction error is
    (x − Φz)/σ² (``neurons.poisson.prediction_error``), written out here because
    its numerator is also the trace's residual.  Recorded steps are computed
    straight into the trace's storage; the rest into arrays allocated once.
    """
    n, k, d = x.shape[0], net.n_latents, net.input_dim
    phi = net.phi
    sigma2, bias, eta = net.sigma2, net.bias, net.eta
    spare = [np.empty((n, k)), np.empty((n, k))]  # u_t and u_{t+1} when not recorded
    rate, z, feedback = (np.empty((n, k)) for _ in range(3))
    spare_recon, residual, error = (np.empty((n, d)) for _ in range(3))
    u = _u_storage(rec, 0, rows, spare[0])
    u[...] = net.u0
    t = 0
    for xi in noise_blocks(seed, steps, n, k, offset, noise, block):
        for xi_t in xi:
            i = rec.slot(t)
            recon = spare_recon if i is None else rec.recon[i, rows]
            fired = kernels.spikes(u, np.ascontiguousarray(xi_t), rate, z)
            if fired <= SPARSE_READOUT * z.size:
                kernels.readout(z, phi_t, recon)
            else:
                np.matmul(z, phi_t, out=recon)
            np.subtract(x, recon, out=residual)
            np.divide(residual, sigma2, out=error)
            np.matmul(error, phi, out=feedback)
            u_next = _u_storage(rec, t + 1, rows, spare[1] if u is spare[0] else spare[0])
            kernels.membrane(u, feedback, eta, bias, net.clamp_u, net.clamp_du, u_next)
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
