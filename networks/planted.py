"""A planted problem: a network with a known dictionary and inputs made from known codes."""
from __future__ import annotations

import numpy as np

from networks.network import IPVAENetwork


def planted_codes(n: int, k: int, n_active: int, rng, low=50.0, high=150.0) -> np.ndarray:
    """(n, k) sparse non-negative codes: ``n_active`` units per row drawn from U(low, high)."""
    if not 0 < n_active <= k:
        raise ValueError(f"n_active must lie in 1..{k}, got {n_active}")
    codes = np.zeros((n, k))
    for row in codes:
        active = rng.choice(k, size=n_active, replace=False)
        row[active] = rng.uniform(low, high, size=n_active)
    return codes


def planted_inputs(net: IPVAENetwork, n: int, n_active: int, seed: int = 0, offset: int = 0):
    """Inputs x = Φc generated from random sparse codes under ``net``'s dictionary.

    Input i of the planted set (i = offset … offset + n − 1) draws its code from
    its own generator keyed (seed, 1, i), so it is the same whichever range it
    is made in, and making it costs memory and time in proportion to n, not
    to the offset.

    Returns (x (n, D), codes (n, K)).
    """
    if n < 0 or offset < 0:
        raise ValueError(f"n and offset must be >= 0, got {n}, {offset}")
    k = net.n_latents
    if not 0 < n_active <= k:
        raise ValueError(f"n_active must lie in 1..{k}, got {n_active}")
    codes = np.zeros((n, k))
    x = np.empty((n, net.input_dim))
    for row, i in enumerate(range(offset, offset + n)):
        codes[row] = planted_codes(1, k, n_active, np.random.default_rng([seed, 1, i]))[0]
        np.matmul(net.phi, codes[row], out=x[row])  # row by row: the same bits in any batch
    return x, codes


def planted_network(input_dim: int, n_latents: int, n_active: int, seed: int = 0,
                    n_inputs: int = 8, column_norm: float = 0.1):
    """A network with a random dictionary and a batch of inputs from known sparse codes.

    Φ has random unit-direction columns scaled to ``column_norm``; σ = 1, η = 1,
    b = e^{-3}, u₀ = −3.  Codes have ``n_active`` units of 50–150 spikes per step,
    so inference should put its rate on exactly those units.

    Returns
    -------
    (net, x (n_inputs, D), codes (n_inputs, K))
    """
    if input_dim < 1 or n_latents < 1:
        raise ValueError("input_dim and n_latents must be positive")
    rng = np.random.default_rng([seed, 0])
    phi = rng.standard_normal((input_dim, n_latents))
    phi *= column_norm / np.linalg.norm(phi, axis=0)
    net = IPVAENetwork(
        phi=phi, log_sigma=np.zeros(input_dim), log_bias=np.full(n_latents, -3.0),
        log_eta=0.0, u0=np.full(n_latents, -3.0), clamp_u=8.0, clamp_du=7.0,
        meta={"dataset": "planted", "seed": seed, "n_active": n_active,
              "column_norm": column_norm})
    x, codes = planted_inputs(net, n_inputs, n_active, seed)
    return net, x, codes
