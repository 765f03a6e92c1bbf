"""Keyed relaxed-sampler noise for training (design §1.5, §1.4).

A training draw for (sample, neuron k, arrival slot j) at spiking event t of
epoch e is a hash of (seed, e, t, the sample's index in the data set, k, j):
it does not depend on the batch, on the split across processes, or on which
other draws were made, so a run is the same whatever the number of processes
and a resumed run is the same as an uninterrupted one.  Only the draws the
sampler reaches (``neurons.relaxed``) are made.

``training_noise(seed, epoch, indices, K, W)`` is what the trainer uses: a
:class:`KeyedNoiseSteps` whose ``step(t)`` is a :class:`KeyedNoise` noise
source for spiking event t, drawn ahead on a helper thread.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch


# --- keyed, lazily drawn noise ----------------------------------------------------------------
# 64-bit keys (seed, epoch, step, sample index) are mixed with splitmix64's finaliser on a few
# values per step; the per-neuron, per-arrival draws use a 32-bit counter hash (splitmix32-style:
# state + j·golden, then the "lowbias32" finaliser) on numpy uint32 arrays: native wrapping
# 32-bit vector arithmetic, several times cheaper than emulating 64-bit mixing in torch.
_M64 = 1 << 64


def _s64(v: int) -> int:
    v %= _M64
    return v - _M64 if v >= 1 << 63 else v


def _py_mix64(z: int) -> int:
    z %= _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % _M64
    return z ^ (z >> 31)


def stream_key(*keys: int) -> int:
    """A signed 64-bit stream key from non-negative integers (e.g. seed, epoch, step)."""
    h = 0x243F6A8885A308D3
    for k in keys:
        h = _py_mix64(h ^ _py_mix64(int(k) + 0x9E3779B97F4A7C15))
    return _s64(h)


_G32 = np.uint32(0x9E3779B9)
_M1, _M2 = np.uint32(0x21F0AAAD), np.uint32(0x735A2D97)


def _np_mix32(x: np.ndarray) -> np.ndarray:
    """The "lowbias32" finaliser (a bijection of 32-bit words) on uint32 arrays, in place."""
    t = x >> np.uint32(16)                                 # one temporary, reused
    x ^= t
    x *= _M1
    np.right_shift(x, np.uint32(15), out=t)
    x ^= t
    x *= _M2
    np.right_shift(x, np.uint32(15), out=t)
    x ^= t
    return x


def _np_unit(h: np.ndarray) -> np.ndarray:
    """Uniforms in (0, 1), float32 (23-bit: (m + ½)·2⁻²³), from uint32 hashes."""
    u = (h >> np.uint32(9)).astype(np.float32)
    u *= np.float32(2.0 ** -23)
    u += np.float32(2.0 ** -24)
    return u


class KeyedNoise:
    """Relaxed-sampler noise for one step of a batch, drawn only where asked.

    The draw for (sample, neuron k, slot j) is a hash of (key, index in the data
    set, k, j): it does not depend on the batch, the split across processes, or
    which other draws were made.  ``key`` identifies (seed, epoch, step);
    ``indices`` (N,) are the batch's data-set indices.  Slots 0 … W−1 are the
    exponential inter-arrival times, W and W+1 the two uniforms of the tail's
    normal.  Draws are float32 (23-bit uniforms, so exponentials ≤ 16.6).

    Hashing (numpy uint32, wrapping): per sample two words (lo, hi) of a 64-bit
    splitmix64 mix of (key, index); per neuron the state mix32(k·γ ⊕ lo) + hi;
    slot 0 is the state itself, slot j > 0 is mix32(state + j·γ) (γ = 0x9E3779B9,
    mix32 = the "lowbias32" finaliser).
    """

    PRECOMPUTED = 3
    """Slots 0 … PRECOMPUTED−1 are drawn for every neuron when the source is made (on
    :class:`KeyedNoiseSteps`'s helper thread, ahead of use); later slots on demand."""

    def __init__(self, key: int, indices, n_latents: int, width: int):
        self.key, self.k, self.width = int(key), int(n_latents), int(width)
        idx = np.asarray(torch.as_tensor(indices, dtype=torch.int64).numpy(), dtype=np.uint64)
        with np.errstate(over="ignore"):
            h = _np_mix64(_np_mix64(idx * np.uint64(0x9E3779B97F4A7C15)
                                    + np.uint64(self.key % _M64)) ^ np.uint64(self.key % _M64))
        lo = (h & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        hi = (h >> np.uint64(32)).astype(np.uint32)
        st = np.arange(self.k, dtype=np.uint32) * _G32
        st = st[None, :] ^ lo[:, None]
        _np_mix32(st)
        st += hi[:, None]
        self.state = st.reshape(-1)                        # (N·K,) uint32
        self._pre = None
        self._pre = self.exponentials_t(None, 0, min(self.width, self.PRECOMPUTED))

    def _hash(self, idx, j0, j1):
        """(j1 − j0, M) uint32 hashes of slots j0 … j1−1 at flat indices idx (None: all)."""
        st = self.state if idx is None else self.state[idx.numpy()]
        h = st[None, :] + np.arange(j0, j1, dtype=np.uint32)[:, None] * _G32
        _np_mix32(h[1:] if j0 == 0 else h)                 # slot 0 is the state itself
        return h

    def exponentials_t(self, idx, j0, j1, like=None):
        """(j1 − j0, M) standard exponentials of slots j0 … j1−1 at flat indices idx
        (flat = sample·K + neuron; None: all), arrival-major."""
        pre = self._pre
        if pre is not None and j1 <= pre.shape[0]:             # drawn ahead: gather
            e = pre[j0:j1] if idx is None else pre[j0:j1].index_select(1, idx)
            return e if like is None else e.to(like.dtype)
        u = _np_unit(self._hash(idx, j0, j1))
        e = torch.from_numpy(np.negative(np.log(u, out=u), out=u))
        return e if like is None else e.to(like.dtype)

    def exponentials(self, idx, j0, j1, like=None):
        """(M, j1 − j0) standard exponentials (``exponentials_t`` transposed)."""
        return self.exponentials_t(idx, j0, j1, like).T

    def normals(self, idx):
        """(M,) standard normals (Box–Muller from slots W, W+1) at flat indices idx."""
        u = _np_unit(self._hash(idx, self.width, self.width + 2))
        g = np.sqrt(np.float32(-2.0) * np.log(u[0])) * np.cos(np.float32(2.0 * math.pi) * u[1])
        return torch.from_numpy(g)


def _np_mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64 arrays (wrapping)."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class KeyedNoiseSteps:
    """Per-step :class:`KeyedNoise` for a batch: ``noise.step(t)`` for spiking event t."""

    def __init__(self, seed: int, epoch: int, indices, n_latents: int, width: int,
                 stream: int = 0):
        self.seed, self.epoch, self.stream = int(seed), int(epoch), int(stream)
        self.indices = torch.as_tensor(list(indices) if not torch.is_tensor(indices) else indices,
                                       dtype=torch.int64)
        if (self.indices < 0).any():
            raise ValueError("sample indices must be non-negative")
        self.k, self.width = int(n_latents), int(width)

    prefetch = True
    """Draw step t+1's noise on a helper thread while step t runs (numpy releases the
    GIL; the per-step tensor work runs on one thread, so a core is otherwise idle)."""

    def _make(self, t: int) -> KeyedNoise:
        key = (stream_key(self.seed, self.epoch, t) if self.stream == 0 else
               stream_key(self.seed, self.epoch, t, self.stream))
        return KeyedNoise(key, self.indices, self.k, self.width)

    def step(self, t: int) -> KeyedNoise:
        """The noise source of spiking event t."""
        ahead = getattr(self, "_ahead", None)
        noise = ahead[1].result() if ahead is not None and ahead[0] == t else self._make(t)
        if self.prefetch:
            self._ahead = (t + 1, _prefetch_pool().submit(self._make, t + 1))
        return noise


_POOL = None


def _prefetch_pool() -> ThreadPoolExecutor:
    """One helper thread per process (a forked child makes its own)."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="ipvae-noise"))
    return _POOL[1]


def training_noise(seed: int, epoch: int, indices, n_latents: int, width: int,
                   stream: int = 0) -> KeyedNoiseSteps:
    """Relaxed-sampler noise for a batch, each sample's keyed by its index in the data set.

    indices : (N,) the samples' indices in the data set.  stream : 0 for the draws
    that feed back (and, by default, are scored by the loss); another value keys an
    independent set (the loss's own draws with ``separate_draws``).  Returns a lazy source whose
    ``step(t)`` serves spiking event t (t = 0 … T); draws are made only where needed.
    """
    return KeyedNoiseSteps(seed, epoch, indices, n_latents, width, stream)
