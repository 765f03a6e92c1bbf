"""The reference simulator: the iP-VAE recurrence of DESIGN.md §1, vectorised over the batch.

Each step costs two float64 matrix products, (N×K)(K×D) for the read-out Φz
and (N×D)(D×K) for the feedback Φᵀe, plus sampling and the membrane update,
which run in the compiled kernels of :mod:`neurons.kernels` (the same numbers
as the numpy functions of :mod:`neurons.poisson`).  Inputs never interact, so
a large batch is cut into row blocks that run side by side in threads, one per
core, each with single-threaded BLAS: no step ever waits for another core.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm.auto import tqdm

from networks.noise import noise_blocks
from networks.trace import Trace, TraceRecorder
from neurons import kernels

MIN_BLOCK_ELEMENTS = 8192
"""A row block holds at least this many neurons (rows × K); smaller batches run in one."""


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
    u_final = np.empty((n, k))
    phi_t = np.ascontiguousarray(net.phi.T)  # (K, D), shared by every block
    edges = row_blocks(n, k, default_threads() if threads is None else threads)
    with tqdm(total=steps, desc="reference", unit="step", disable=not progress) as bar:
        def run_rows(lo, hi):
            rows = slice(lo, hi)
            block_noise = None if noise is None else noise[:, rows]
            u_final[rows] = _run_rows(net, phi_t, x[rows], steps, rec, rows, seed, offset + lo,
                                      block_noise, block, bar if lo == 0 else None)

        if len(edges) == 2:
            run_rows(0, n)
        else:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=1, user_api="blas"), \
                    ThreadPoolExecutor(len(edges) - 1, thread_name_prefix="reference") as pool:
                for f in [pool.submit(run_rows, lo, hi) for lo, hi in zip(edges[:-1], edges[1:])]:
                    f.result()
    return rec.finish(u_final)


def _run_rows(net, phi_t, x, steps, rec, rows, seed, offset, noise, block, bar):
    """The recurrence for one block of inputs x (n, D); records into ``rec`` at ``rows``.

    phi_t : Φᵀ (K, D), C-contiguous.
    Returns the final potentials u_T (n, K).  The prediction error is
    (x − Φz)/σ² (``neurons.poisson.prediction_error``), written out here because
    its numerator is also the trace's residual.  Per-step arrays are allocated once.
    """
    n, k, d = x.shape[0], net.n_latents, net.input_dim
    phi = net.phi
    sigma2, bias, eta = net.sigma2, net.bias, net.eta
    u = np.broadcast_to(net.u0, (n, k)).astype(np.float64, order="C")  # a writable copy
    u_next, rate, z, feedback = (np.empty((n, k)) for _ in range(4))
    recon, residual, error = (np.empty((n, d)) for _ in range(3))
    t = 0
    for xi in noise_blocks(seed, steps, n, k, offset, noise, block):
        for xi_t in xi:
            kernels.spikes(u, np.ascontiguousarray(xi_t), rate, z)
            np.matmul(z, phi_t, out=recon)
            np.subtract(x, recon, out=residual)
            np.divide(residual, sigma2, out=error)
            np.matmul(error, phi, out=feedback)
            kernels.membrane(u, feedback, eta, bias, net.clamp_u, net.clamp_du, u_next)
            rec.add(t, u, z, recon, residual, rate, rows=rows)
            u, u_next, t = u_next, u, t + 1
        if bar is not None:
            bar.update(len(xi))
    return u


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
