"""The reference simulator: the iP-VAE recurrence of DESIGN.md §1 in vectorised numpy.

Batched over inputs: each step costs two float64 matrix products, (N×K)(K×D)
for the read-out Φz and (N×D)(D×K) for the feedback Φᵀe, plus sampling.
"""
from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from networks.noise import noise_blocks
from networks.trace import Trace, TraceRecorder
from neurons.poisson import membrane_update, poisson_icdf


def run(net, x, steps, *, seed=0, offset=0, noise=None, record=None, rate_metrics=False,
        progress=False, block=64) -> Trace:
    """Run T = ``steps`` inference steps on inputs x (N, D); see ``networks.simulate``.

    The prediction error is (x − Φz)/σ² (``neurons.poisson.prediction_error``),
    written out here because its numerator is also the trace's residual.
    """
    n, k = x.shape[0], net.n_latents
    phi, phi_t = net.phi, np.ascontiguousarray(net.phi.T)
    sigma2, bias, eta = net.sigma2, net.bias, net.eta
    rec = TraceRecorder(net, x, steps, record, rate_metrics,
                        info=dict(backend="reference", seed=seed, offset=offset,
                                  shared_noise=True))
    u = np.broadcast_to(net.u0, (n, k)).copy()
    z = np.empty((n, k))
    t = 0
    with tqdm(total=steps, desc="reference", unit="step", disable=not progress) as bar:
        for xi in noise_blocks(seed, steps, n, k, offset, noise, block):
            for xi_t in xi:
                rate = np.exp(u)
                counts = poisson_icdf(xi_t, rate)
                z[...] = counts
                recon = z @ phi_t
                residual = x - recon
                feedback = (residual / sigma2) @ phi
                u_next = membrane_update(u, feedback, eta, bias, net.clamp_u, net.clamp_du)
                rec.add(t, u, counts, recon, residual, rate)
                u, t = u_next, t + 1
            bar.update(len(xi))
    return rec.finish(u)
