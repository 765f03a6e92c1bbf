"""The integer emulator: ``simulate(net, x, steps, backend="fixed")``.

It is the reference simulator's row loop and recorder (``networks.reference``)
with another kernel set: the integer step of ``neurons.fixed`` (the one the
Lava ``fixed_pt`` model runs) and its integer generator in place of the float
kernels and the shared float noise.  The folded topology, integers only: per
input the constant drive Φᵀx/σ² comes from the quantized feed-forward weights
and x as a Q.12 payload; per step z_t = F⁻¹(V; R(U_t)), the feedback is the
off-diagonal Dense plus the self-term, and U_{t+1} the integer membrane step.

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
from neurons import fixed

SATURATION_KEYS = ("counts", "currents", "inputs", "drives")


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
    """The integer kernel set of one row block (see ``networks.reference.FloatKernels``)."""

    def __init__(self, q: QuantizedNetwork, x, seed: int, offset: int, noise, block: int):
        self.q, self.latent = q, q.latent()
        self.x, self.noise, self.block = x, noise, block
        self.keys = fixed.stream_keys(seed, np.arange(offset, offset + x.shape[0]))
        # (pre, post) float64 holding small integers: exact (neurons.fixed.int_matmul)
        self.w_rec_t = np.ascontiguousarray(q.w_rec.T, dtype=np.float64)
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


def run(net, x, steps, *, seed=0, offset=0, noise=None, record=None, rate_metrics=False,
        progress=False, quantized=None, weight_bits=8, block=64, threads=None):
    """Run the fixed-point network; see ``networks.simulate``.

    Options: ``quantized`` (a QuantizedNetwork or its file; default: ``net``
    quantized at ``weight_bits``), ``weight_bits`` (2..8), ``threads``, ``block``.
    """
    q = as_quantized(net, quantized, weight_bits)
    made = []

    def make_kernels(lo, hi):
        kern = IntegerKernels(q, x[lo:hi], seed, offset + lo,
                              None if noise is None else noise[:, lo:hi], block)
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
