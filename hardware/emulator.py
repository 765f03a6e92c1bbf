"""The integer emulator: ``simulate(net, x, steps, backend="fixed")``.

It is the reference simulator's row loop and recorder (``networks.reference``)
with another kernel set: the integer step of ``neurons.fixed`` (the one the
Lava ``fixed_pt`` model runs) and its integer generator in place of the float
kernels and the shared float noise.  The folded topology, integers only: per
input the constant drive Φᵀx/σ² comes from the quantized feed-forward weights
and x as a Q.12 payload; per step z_t = F⁻¹(V; R(U_t)), the feedback is the
off-diagonal Dense plus the self-term, and U_{t+1} the integer membrane step.

Where ``neurons/_fixed.c`` is built, each row block takes that whole step in one
compiled call per step (``FixedLatent.step``: the Dense summed over the nonzero
counts only, K multiply-adds each); otherwise the generic row loop runs it in
numpy.  Both give the same trace, bit for bit (``tests/test_fixed_point.py``).

The trace holds what a float backend's does, in real units: counts, u = U·2^-12,
and the read-out x̂ = Φz with the float network's Φ (the decoder is read off
chip), so its MSE compares directly with the float model's.  ``info`` adds
the quantization report and the saturation counts (``saturation``).

Noise: sample n's integers are keyed by (seed, offset + n) like the shared
noise (``neurons.fixed.stream_keys``), so a batch equals lone runs; an explicit
``noise=`` (T, N, K) is used as ⌊ξ·2^32⌋ for each neuron's first rate part.
"""
from __future__ import annotations

import numpy as np

from hardware.quantize import QuantizedNetwork, load_quantized, quantize
from networks import reference
from neurons import fixed, kernels

SATURATION_KEYS = ("counts", "currents", "inputs", "drives")

METRIC_ROWS = 64
"""The compiled path takes the read-outs Φz of up to this many row-steps in one call."""


def as_quantized(net, quantized=None, weight_bits: int = 8) -> QuantizedNetwork:
    """The quantized network to run: ``quantized`` (object or file path) or ``net`` quantized."""
    if quantized is None:
        return quantize(net, weight_bits=weight_bits)
    if not isinstance(quantized, QuantizedNetwork):
        quantized = load_quantized(quantized)
    if (quantized.input_dim, quantized.n_latents) != (net.input_dim, net.n_latents):
        raise ValueError(f"the quantized network is {quantized.input_dim}→{quantized.n_latents}, "
                         f"the network {net.input_dim}→{net.n_latents}")
    return quantized


class IntegerKernels:
    """The integer kernel set of one row block (see ``networks.reference.FloatKernels``).

    ``dense`` : the recurrent weights for the compiled step (``neurons.fixed.EventDense``),
    or None.  With it (``fused``), the block runs :meth:`run_rows`, one compiled call per
    step (``FixedLatent.step``); without it, the generic row loop with :meth:`fire` and
    :meth:`integrate` in numpy.  Both compute the same integers.
    """

    def __init__(self, q: QuantizedNetwork, x, seed: int, offset: int, noise, block: int,
                 dense: fixed.EventDense | None = None):
        self.q, self.latent = q, q.latent()
        self.x, self.noise, self.block = x, noise, block
        self.keys = fixed.stream_keys(seed, np.arange(offset, offset + x.shape[0]))
        self.dense = dense if fixed.compiled() else None
        self.fused = self.dense is not None
        # (pre, post) float64 holding small integers: exact (neurons.fixed.int_matmul)
        self.w_rec_t = None if self.fused else np.ascontiguousarray(q.w_rec.T, dtype=np.float64)
        self.saturation = dict.fromkeys(SATURATION_KEYS, 0)
        self.U = self.drive = self.z = None

    def blocks(self, steps, n, k):
        for start in range(0, steps, self.block):
            stop = min(start + self.block, steps)
            if self.noise is None:
                yield [(t, None) for t in range(start, stop)]
            else:
                first = fixed.explicit_uniforms(self.noise[start:stop])
                yield [(t, first[t - start]) for t in range(start, stop)]

    def start(self, u):
        self.U = np.repeat(self.latent.u0[None, :], self.x.shape[0], axis=0)
        self.drive, x_sat, d_sat = self.q.drive(self.x)
        self.saturation["inputs"] += x_sat
        self.saturation["drives"] += d_sat
        u[...] = self.U * 2.0 ** -fixed.U_FRAC

    def fire(self, u, step, rate, z):
        t, first = step
        self.z, R, clipped = self.latent.fire(self.U, self.keys, t, first)
        self.saturation["counts"] += clipped
        z[...] = self.z
        rate[...] = R * 2.0 ** -fixed.R_FRAC
        return int(np.count_nonzero(self.z))

    def integrate(self, u, z, residual, u_next):
        feedback = fixed.dense_t(self.w_rec_t, self.q.rec_exp, self.z)
        self.U, clipped = self.latent.integrate(self.U, feedback, self.drive, self.z)
        self.saturation["currents"] += clipped
        u_next[...] = self.U * 2.0 ** -fixed.U_FRAC

    def run_rows(self, phi_t, x, steps, rec, rows, bar):
        """The recurrence for this block's inputs x (n, D), one compiled call per step.

        The integers stay integers between steps; u = U·2^-12 is written only where the
        trace keeps it, the rates R·2^-20 only for the rate metrics.  The read-outs Φz and
        the MSE are taken for ``METRIC_ROWS`` row-steps at a time, each step's as the generic
        loop (``networks.reference._run_rows``) takes it: event-driven up to
        ``SPARSE_READOUT`` nonzero counts, else the dense product.  Returns u_T (n, K), the
        trace's storage.
        """
        n, k, d = x.shape[0], self.q.n_latents, x.shape[1]
        lat = self.latent
        U = np.repeat(lat.u0[None, :], n, axis=0).astype(np.int64)
        U_next, R = np.empty((n, k), dtype=np.int64), np.empty((n, k), dtype=np.int64)
        nnz = np.empty((steps, n), dtype=np.int64)       # nonzero counts per row and step
        rate_sum = np.empty((steps, n), dtype=np.int64)  # Σ_k R per row and step (Q.20)
        saturation = np.zeros(2, dtype=np.int64)         # counts, currents
        drive, x_sat, d_sat = self.q.drive(self.x)
        drive = np.ascontiguousarray(drive, dtype=np.int64)
        self.saturation["inputs"] += x_sat
        self.saturation["drives"] += d_sat
        keys = np.ascontiguousarray(self.keys, dtype=np.uint64)
        chunk = max(1, METRIC_ROWS // n)  # steps whose read-outs are taken together
        z = np.empty((chunk, n, k), dtype=np.int64)
        zf = np.empty((chunk, n, k))
        recon, residual = np.empty((chunk, n, d)), np.empty((chunk, n, d))

        def metrics(t0, m):
            """Read-outs, MSE and recorded counts of steps t0 … t0+m−1 (counts in z[:m])."""
            np.copyto(zf[:m], z[:m])
            few = nnz[t0:t0 + m].sum(axis=1) <= reference.SPARSE_READOUT * n * k
            if few.all():  # rows are summed independently: one call for all m steps
                kernels.readout(zf[:m].reshape(m * n, k), phi_t, recon[:m].reshape(m * n, d))
            else:
                for j in range(m):
                    if few[j]:
                        kernels.readout(zf[j], phi_t, recon[j])
                    else:
                        np.matmul(zf[j], phi_t, out=recon[j])
            np.subtract(x, recon[:m], out=residual[:m])
            res = residual[:m].reshape(m * n, d)
            rec.step_mse[t0:t0 + m, rows] = (np.einsum("nd,nd->n", res, res) / d).reshape(m, n)
            for j in range(m):
                i = rec.slot(t0 + j)
                if i is not None:
                    rec.recon[i, rows] = recon[j]
                    rec.spikes[i, rows] = z[j]

        def keep_u(t, U):
            j = rec.u_slot(t)
            if j is not None:
                np.multiply(U, 2.0 ** -fixed.U_FRAC, out=rec.u[j, rows])

        keep_u(0, U)
        t = t0 = 0
        for block in self.blocks(steps, n, k):
            for _, first in block:
                lat.step(U, keys, t, first, drive, self.dense, U_next, z[t - t0], R, nnz[t],
                         rate_sum[t], saturation)
                if rec.rate_metrics:
                    rate = R * 2.0 ** -fixed.R_FRAC
                    rec.step_rate_mse[t, rows] = np.mean((x - rate @ rec.net.phi.T) ** 2, axis=1)
                U, U_next = U_next, U
                t += 1
                keep_u(t, U)
                if t - t0 == chunk:
                    metrics(t0, chunk)
                    t0 = t
            if bar is not None:
                bar.update(len(block))
        if t > t0:
            metrics(t0, t - t0)
        rec.step_zeros[:, rows] = (k - nnz) / k
        # Σ_k R·2^-20 is exact in float64 (an integer below 2^53 times a power of 2), so this
        # equals the mean of the rates R·2^-20 as the generic loop takes it.
        rec.step_rate[:, rows] = rate_sum * 2.0 ** -fixed.R_FRAC / k
        self.saturation["counts"] += int(saturation[0])
        self.saturation["currents"] += int(saturation[1])
        return rec.u[rec.u_slot(steps), rows]


def run(net, x, steps, *, seed=0, offset=0, noise=None, record=None, rate_metrics=False,
        progress=False, quantized=None, weight_bits=8, block=64, threads=None):
    """Run the fixed-point network; see ``networks.simulate``.

    Options: ``quantized`` (a QuantizedNetwork or its file; default: ``net``
    quantized at ``weight_bits``), ``weight_bits`` (2..8), ``threads``, ``block``.
    """
    q = as_quantized(net, quantized, weight_bits)
    made = []
    dense = fixed.EventDense.from_weights(q.w_rec, q.rec_exp) if fixed.compiled() else None

    def make_kernels(lo, hi):
        kern = IntegerKernels(q, x[lo:hi], seed, offset + lo,
                              None if noise is None else noise[:, lo:hi], block, dense)
        made.append(kern)
        return kern

    info = dict(backend="fixed", seed=seed, offset=offset, shared_noise=False,
                noise="integer counter-based (neurons.fixed)", weight_bits=q.weight_bits,
                quantization=q.report)
    trace = reference.run_loop(net, x, steps, make_kernels, record=record,
                               rate_metrics=rate_metrics, progress=progress, threads=threads,
                               info=info)
    trace.info["saturation"] = {key: int(sum(k.saturation[key] for k in made))
                                for key in SATURATION_KEYS}
    return trace
