"""Shared noise (design §2.2): the uniforms ξ[t, n, k] that drive every backend.

Sample n's uniforms come from its own counter-based stream
``Generator(Philox(key=[seed, offset + n]))``, drawn in (t, k) order, so a
sample's raster depends only on the seed and its index in the data set, never
on batch size or chunking.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from neurons import kernels
from neurons.noise import check_key, sample_stream

__all__ = ["check_key", "check_noise", "noise_blocks", "sample_stream", "shared_uniforms",
           "uniform_blocks"]


def shared_uniforms(seed: int, steps: int, n: int, k: int, offset: int = 0) -> np.ndarray:
    """ξ of shape (steps, n, k), float64 in [0, 1), exactly as design §2.2 defines."""
    return next(uniform_blocks(seed, steps, n, k, offset, block=max(steps, 1)))


def uniform_blocks(seed: int, steps: int, n: int, k: int, offset: int = 0,
                   block: int = 64) -> Iterator[np.ndarray]:
    """Yield ξ a block of steps at a time: arrays (≤block, n, k), steps in order.

    Concatenated they equal ``shared_uniforms(seed, steps, n, k, offset)``; a
    long run never holds more than one block.  With the compiled kernels the
    streams are computed from their counters (``neurons.kernels.uniforms``),
    otherwise drawn with numpy; the numbers are the same.
    """
    check_key(seed, offset + max(n - 1, 0))
    streams = None if kernels.compiled() else [sample_stream(seed, offset + i)
                                               for i in range(n)]
    for start in range(0, max(steps, 1), block):
        out = np.empty((min(block, steps - start), n, k))
        if streams is None:  # the same numbers, computed from the streams' counters
            kernels.uniforms(out, seed, offset, start)
        else:
            for i, g in enumerate(streams):
                out[:, i, :] = g.random((len(out), k))
        yield out


def noise_blocks(seed: int, steps: int, n: int, k: int, offset: int = 0, noise=None,
                 block: int = 64) -> Iterator[np.ndarray]:
    """ξ blocks for a run: slices of an explicit ``noise`` (steps, n, k), else shared uniforms."""
    if noise is None:
        yield from uniform_blocks(seed, steps, n, k, offset, block)
        return
    for start in range(0, steps, block):
        yield noise[start:start + block]


def check_noise(noise, steps: int, n: int, k: int) -> np.ndarray:
    """Validate an explicit ξ array: shape (steps, n, k), finite, within [0, 1)."""
    noise = np.asarray(noise, dtype=np.float64)
    if noise.shape != (steps, n, k):
        raise ValueError(f"noise has shape {noise.shape}, expected (steps, N, K) = {(steps, n, k)}")
    if not np.all((noise >= 0) & (noise < 1)):
        raise ValueError("noise must hold uniforms in [0, 1) (found NaN or values outside)")
    return noise
