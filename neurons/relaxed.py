"""Relaxed (differentiable) Poisson counts for training (design §1.5).

Arrival times S_j = Σ_{i≤j} E_i / r with E_i ~ Exp(1) (r the rate, spikes/step);
the relaxed count is z̃ = Σ_{j≤W} sigmoid((1 − S_j)/τ) at temperature τ > 0.
The width W is fixed, so the cost does not grow with the largest rate.  Where
all W arrivals land before time 1 (count ≥ W; rare at W = 10 for sparse codes)
the remaining count on [S_W, 1] is added from its conditional law
Poisson(r (1 − S_W)) by its reparametrised Gaussian approximation m + √m·g
(m = r (1 − S_W)), clipped at 0: its mean is exact and its variance the
Poisson's, so the sampler stays unbiased at any rate.

Noise comes from a *source* with ``width`` and the methods
``exponentials_t(idx, j0, j1, like)`` and ``normals(idx)``, so that only the
draws the sampler reaches are made: :class:`DenseNoise` wraps explicit
tensors; ``train.noise.KeyedNoise`` hashes them on demand.
"""
from __future__ import annotations

import numpy as np
import torch

DEFAULT_WIDTH = 10
"""Relaxed-sampler width W (arrival times per neuron per step); the authors start at 10."""

REACH = 20.0
"""Arrivals are walked while S_j < 1 + REACH·τ: every later term is below
sigmoid(−REACH) ≈ 2e-9, and so is the sum of the skipped ones to float precision."""


def relaxed_poisson(rate: torch.Tensor, temperature: float, exp_noise, tail_noise=None,
                    *, tail: bool = True) -> torch.Tensor:
    """Differentiable relaxed Poisson counts at fixed width W.

    rate : (...,) rates r > 0 (spikes/step); temperature > 0.
    exp_noise : a tensor (..., W) of standard exponentials E (inter-arrival times
        at rate 1), or a noise source (see the module docstring).
    tail_noise : (...,) standard normals for the count beyond W (tensor form);
        with a tensor ``exp_noise`` and no ``tail_noise`` the tail is left out.
    Returns (...,) z̃ = Σ_j sigmoid((1 − S_j)/temperature) + tail, S_j = cumsum(E)_j / r,
    one autograd node (dz̃/dr is computed alongside the forward).  As temperature
    → 0 the count tends to the exact Poisson count, mean r.
    """
    if temperature <= 0:
        raise ValueError(f"relaxed sampling needs temperature > 0, got {temperature}")
    if torch.is_tensor(exp_noise):
        source = DenseNoise(exp_noise, tail_noise)
        tail = tail and tail_noise is not None
    else:
        source = exp_noise
    return RelaxedPoisson.apply(rate, float(temperature), source, bool(tail))


class RelaxedPoisson(torch.autograd.Function):
    """z̃(r) with the derivative dz̃/dr kept by the forward (see :func:`relaxed_poisson`).

    apply(rate (...,), temperature, source, tail) → z̃ (...,).
    """

    @staticmethod
    def forward(ctx, rate, temperature, source, tail):
        z, dzdr = relaxed_forward(rate.detach(), temperature, source, tail)
        ctx.save_for_backward(dzdr)
        return z

    @staticmethod
    def backward(ctx, grad):
        dzdr, = ctx.saved_tensors
        return grad * dzdr, None, None, None


def _below(v: torch.Tensor, limit: float) -> torch.Tensor:
    """Indices (int64) of the entries of a 1-D CPU tensor below ``limit`` (numpy's compare
    and flatnonzero are several times faster than torch's on CPU)."""
    return torch.from_numpy(np.flatnonzero(v.numpy() < limit))


def saturation(dtype) -> tuple[float, float]:
    """(lo, hi): torch's sigmoid is exactly 0 at x ≤ lo and exactly 1 at x ≥ hi in ``dtype``.

    Clamping a sigmoid's argument to [lo, hi] first changes no result bit but keeps it
    off huge arguments, on which torch's CPU sigmoid runs ~2x slower (at τ = 0.01 a
    silent neuron's (1 − S)/τ is ~ −10⁶).  A test checks the identity.
    """
    return (-110.0, 20.0) if dtype == torch.float32 else (-750.0, 40.0)


def relaxed_forward(rate: torch.Tensor, temperature: float, source, tail: bool):
    """(z̃, dz̃/dr), both shaped like ``rate``; no autograd.

    rate : (...,) CPU rates (spikes/step), detached; source : a noise source of width W.

    Arrivals are walked one block at a time (2–3, 4–7, 8–15, …), each only for the
    neurons whose previous arrival came before 1 + REACH·τ, so the cost is
    ~ N·K + Σ (arrivals before 1 + REACH·τ), not N·K·W.
    With y_j = sigmoid((1 − S_j)/τ) and S_j = Γ_j / r: dy_j/dr = y_j (1 − y_j) S_j / (τ r).
    Tail (when S_W < 1): m = r (1 − S_W) = r − Γ_W, extra = relu(m + √m g), so
    d extra/dr = 1 + g / (2√m) where extra > 0.
    """
    shape, dtype = rate.shape, rate.dtype
    r = rate.reshape(-1)
    width = source.width
    inv_t = 1.0 / temperature
    limit = 1.0 + REACH * temperature
    s = source.exponentials_t(None, 0, 1, r).reshape(-1) / r            # S_1, (M,)
    z = torch.rsub(s, 1.0).mul_(inv_t).clamp_(*saturation(dtype)).sigmoid_()  # y_1, then Σ_j y_j
    acc = (1.0 - z).mul_(z).mul_(s)                                    # Σ_j y_j (1 − y_j) S_j
    idx = None
    if width > 1 or tail:
        idx = _below(s, limit)
        s, ra = s.index_select(0, idx), r.index_select(0, idx)
    j0 = 1
    while j0 < width and idx.numel() > 0:
        j1 = min(width, 2 * j0 + 1)
        e = source.exponentials_t(idx, j0, j1, ra)                    # (j1 − j0, A)
        arr = torch.cumsum(e, 0).div_(ra).add_(s)                     # S_j, (j1 − j0, A)
        y = arr.mul(-inv_t).add_(inv_t).sigmoid_()
        z.index_add_(0, idx, y.sum(0))
        y.sub_(y * y).mul_(arr)                                       # y (1 − y) S
        acc.index_add_(0, idx, y.sum(0))
        s = arr[-1]
        j0 = j1
        if j0 >= width:                    # the tail keeps only S_W < 1 < limit itself
            break
        if float(s.amax()) >= limit:
            keep = _below(s, limit)
            idx, s, ra = idx.index_select(0, keep), s.index_select(0, keep), \
                ra.index_select(0, keep)
    dzdr = acc.mul_(inv_t).div_(r)
    if tail and idx is not None and idx.numel() > 0:
        m = ra * (1.0 - s)
        live = _below(-m, 0.0)
        if live.numel() > 0:
            idx, m = idx.index_select(0, live), m.index_select(0, live)
            g = source.normals(idx).reshape(-1).to(dtype)
            sq = torch.sqrt(m)
            extra = m + sq * g
            pos = extra > 0
            z.index_add_(0, idx, torch.where(pos, extra, torch.zeros_like(extra)))
            dzdr.index_add_(0, idx, torch.where(pos, 1.0 + g / (2.0 * sq),
                                                torch.zeros_like(extra)))
    return z.reshape(shape), dzdr.reshape(shape)


class DenseNoise:
    """Noise source over explicit tensors: E (..., W) exponentials, g (...,) normals (or None)."""

    def __init__(self, exp_noise: torch.Tensor, tail_noise: torch.Tensor | None = None):
        self.e = exp_noise.reshape(-1, exp_noise.shape[-1])
        self.g = None if tail_noise is None else tail_noise.reshape(-1)
        self.width = exp_noise.shape[-1]

    def exponentials(self, idx, j0, j1, like=None):
        """(M, j1 − j0) exponentials of arrivals j0 … j1−1 at flat indices idx (None: all)."""
        e = self.e[:, j0:j1] if idx is None else self.e[:, j0:j1].index_select(0, idx)
        return e if like is None else e.to(like.dtype)

    def exponentials_t(self, idx, j0, j1, like=None):
        """(j1 − j0, M): ``exponentials`` transposed (arrival-major)."""
        return self.exponentials(idx, j0, j1, like).T

    def normals(self, idx):
        if self.g is None:
            raise ValueError("this noise source has no tail normals")
        return self.g.index_select(0, idx)


def noise_source(noise, like: torch.Tensor, width: int, tail: bool = True):
    """A noise source of width W for rates shaped like ``like`` (N, K).

    noise : None (draw from torch's global generator), a pair (E (N, K, W)
    exponentials, g (N, K) normals or None), or a source with a ``width``.
    Returns (source, tail): ``tail`` is False when no tail normals are available.
    """
    if noise is None:
        e = torch.empty(*like.shape, width, dtype=like.dtype, device=like.device).exponential_()
        return DenseNoise(e, torch.randn_like(like) if tail else None), tail
    if isinstance(noise, tuple):
        e, g = noise
        if e.shape[-1] != width:
            raise ValueError(f"exponential noise has width {e.shape[-1]}, neuron width is {width}")
        tail = tail and g is not None
        return DenseNoise(e, g if tail else None), tail
    if noise.width != width:
        raise ValueError(f"noise source has width {noise.width}, neuron width is {width}")
    return noise, tail


def width_needed(max_rate: float, tail: float = 1e-3) -> int:
    """Design §1.5's width rule: least n with P(count > n; max_rate) < ``tail``."""
    from scipy.stats import poisson

    return int(poisson.ppf(1.0 - tail, max(float(max_rate), 1e-12))) + 1
