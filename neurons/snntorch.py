"""The iP-VAE latent neuron as an snntorch neuron (DESIGN.md §1).

``PoissonLatent`` is a subclass of :class:`snntorch.SpikingNeuron` following
snntorch's conventions: ``forward(input_, mem=None) -> (spk, mem)``, hidden
state held on the module when ``init_hidden=True`` and reset with
``reset_mem()`` / ``reset_hidden()``.  Differences from a LIF neuron:

- the membrane potential ``mem`` is a log-rate u (spikes/step = e^u);
- the input current is the decoder feedback Φᵀ e_t (e_t = (x − x̂_t)/σ²), and the
  membrane integrates it with step size η against a leak b:
  ``u ← clamp_u(u + clamp_du(η (input − b)))`` (clamps: floor −8, soft ceiling);
- the output is a Poisson spike *count* drawn at rate e^u: an integer count at
  ``temperature == 0`` (the shared inverse CDF ``neurons.poisson.poisson_icdf``,
  float64, so the same uniforms give exactly the reference simulator's counts),
  a relaxed, differentiable count at ``temperature > 0`` (training);
- the hidden state resets to the learned prior u₀, not to zero.

Relaxed counts (DESIGN.md §1): arrival times S_j = Σ_{i≤j} E_i / r with
E_i ~ Exp(1); z̃ = Σ_{j≤W} sigmoid((1 − S_j)/temperature).  The width W is
fixed, so the cost does not grow with the largest rate.  Where W arrivals all
land before time 1 (count ≥ W; rare at W = 10 for sparse codes) the remaining
count on [S_W, 1] is added from its conditional law Poisson(r (1 − S_W)), by
its reparametrised Gaussian approximation m + √m·g (m = r(1 − S_W)), clipped at 0.
Its mean is exact and its variance matches the Poisson, so the sampler stays
unbiased at any rate while costing O(N·K·W).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from snntorch import SpikingNeuron

from neurons.poisson import U_FLOOR, poisson_icdf

DEFAULT_WIDTH = 10
"""Relaxed-sampler width W (arrival times per neuron per step); the authors start at 10."""


def clamp(x: torch.Tensor, c: float) -> torch.Tensor:
    """The authors' clamp in torch: hard floor at −8, then c − softplus(c − x)."""
    return c - torch.nn.functional.softplus(c - torch.clamp(x, min=U_FLOOR))


def poisson_counts(xi, rate) -> torch.Tensor:
    """Exact Poisson counts by the shared float64 inverse CDF (no gradient).

    xi : uniforms in [0, 1), any shape broadcasting with ``rate`` (spikes/step).
    Returns float64 counts on ``rate``'s device, identical to
    ``neurons.poisson.poisson_icdf`` (it is called on the same float64 values).
    """
    r = torch.as_tensor(rate)
    xi_np = xi.detach().cpu().double().numpy() if torch.is_tensor(xi) else np.asarray(xi, float)
    counts = poisson_icdf(xi_np, r.detach().cpu().double().numpy())
    return torch.from_numpy(counts.astype(np.float64)).to(r.device)


def relaxed_poisson(rate: torch.Tensor, temperature: float, exp_noise, tail_noise=None,
                    *, tail: bool = True) -> torch.Tensor:
    """Differentiable relaxed Poisson counts at fixed width W.

    rate : (...,) rates r > 0 (spikes/step); temperature > 0.
    exp_noise : a tensor (..., W) of standard exponentials E (inter-arrival times
        at rate 1), or a noise source with ``exponentials(flat_index, j0, j1)``
        and ``normals(flat_index)`` (e.g. :class:`KeyedNoise`), which lets only
        the needed draws be made.
    tail_noise : (...,) standard normals for the count beyond W (tensor form);
        with a tensor ``exp_noise`` and no ``tail_noise`` the tail is left out.
    Returns (...,) z̃ = Σ_j sigmoid((1 − S_j)/temperature) + tail, S_j = cumsum(E)_j / r.

    Only the first arrival is computed for every neuron; arrivals 2 … W only
    where S_1 < 1 + 20·temperature (elsewhere each later term is below
    sigmoid(−20) ≈ 2e-9), so the cost is ~ N·K + (active neurons)·W, not N·K·W.
    As temperature → 0 the count tends to the exact Poisson count, mean r.
    """
    if temperature <= 0:
        raise ValueError(f"relaxed sampling needs temperature > 0, got {temperature}")
    if torch.is_tensor(exp_noise):
        source = DenseNoise(exp_noise, tail_noise)
        tail = tail and tail_noise is not None
    else:
        source = exp_noise
    width = source.width
    flat = rate.reshape(-1)
    all_idx = None
    s1 = source.exponentials(all_idx, 0, 1, flat)[:, 0] / flat
    z = torch.sigmoid((1.0 - s1) / temperature)
    if width == 1 and not tail:
        return z.reshape(rate.shape)
    with torch.no_grad():
        idx = torch.nonzero(s1 < 1.0 + 20.0 * temperature).squeeze(1)
    if idx.numel() == 0:
        return z.reshape(rate.shape)
    r = flat[idx]
    arrivals = s1[idx].unsqueeze(1)
    if width > 1:
        rest = s1[idx].unsqueeze(1) + torch.cumsum(source.exponentials(idx, 1, width, flat), 1) \
            / r.unsqueeze(1)
        arrivals = torch.cat([arrivals, rest], 1)
        extra = torch.sigmoid((1.0 - rest) / temperature).sum(1)
    else:
        extra = torch.zeros_like(r)
    if tail:
        m = r * torch.relu(1.0 - arrivals[:, -1])
        active = m > 0
        if bool(active.any()):
            g = source.normals(idx).to(r.dtype)
            safe = torch.where(active, m, torch.ones_like(m))
            extra = extra + torch.where(active, torch.relu(m + torch.sqrt(safe) * g),
                                        torch.zeros_like(m))
    return z.index_add(0, idx, extra).reshape(rate.shape)


class DenseNoise:
    """Noise source over explicit tensors: E (..., W) exponentials, g (...,) normals."""

    def __init__(self, exp_noise: torch.Tensor, tail_noise: torch.Tensor | None = None):
        self.e = exp_noise.reshape(-1, exp_noise.shape[-1])
        self.g = None if tail_noise is None else tail_noise.reshape(-1)
        self.width = exp_noise.shape[-1]

    def exponentials(self, idx, j0, j1, like=None):
        """(M, j1 − j0) exponentials of arrivals j0 … j1−1 at flat indices idx (None: all)."""
        e = self.e[:, j0:j1] if idx is None else self.e[idx, j0:j1]
        return e if like is None else e.to(like.dtype)

    def normals(self, idx):
        if self.g is None:
            raise ValueError("this noise source has no tail normals")
        return self.g[idx]


# --- keyed, lazily drawn noise (a counter-based hash: SplittableRandom / splitmix64) --------
_M64 = 1 << 64


def _s64(v: int) -> int:
    v %= _M64
    return v - _M64 if v >= 1 << 63 else v


_GAMMA, _C1, _C2 = _s64(0x9E3779B97F4A7C15), _s64(0xBF58476D1CE4E5B9), _s64(0x94D049BB133111EB)


def _srl(z, k):
    return (z >> k) & ((1 << (64 - k)) - 1)


def _mix64(z: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 tensors (wrapping arithmetic)."""
    z = (z ^ _srl(z, 30)) * _C1
    z = (z ^ _srl(z, 27)) * _C2
    return z ^ _srl(z, 31)


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


def hashed_uniforms(key: int, counter: torch.Tensor) -> torch.Tensor:
    """Uniforms in (0, 1), float64, one per int64 ``counter``, from the stream ``key``."""
    h = _mix64(counter * _GAMMA + key)
    return (_srl(h, 11).to(torch.float64) + 0.5) * 2.0 ** -53


class KeyedNoise:
    """Relaxed-sampler noise for one step of a batch, drawn only where asked.

    The draw for (sample, neuron k, arrival j) is a hash of (key, index in the
    data set, k, j): it does not depend on the batch, the split across
    processes, or which other draws were made.  ``key`` identifies
    (seed, epoch, step); ``indices`` (N,) are the batch's data-set indices.
    """

    def __init__(self, key: int, indices: torch.Tensor, n_latents: int, width: int):
        self.key, self.k, self.width = int(key), int(n_latents), int(width)
        self.indices = torch.as_tensor(indices, dtype=torch.int64)
        self.slots = self.width + 2  # W exponentials, then 2 uniforms for a normal

    def _counter(self, idx, j):
        if idx is None:
            idx = torch.arange(len(self.indices) * self.k)
        n, k = idx // self.k, idx % self.k
        return (self.indices[n] * self.k + k) * self.slots, idx

    def exponentials(self, idx, j0, j1, like=None):
        base, _ = self._counter(idx, None)
        c = base.unsqueeze(1) + torch.arange(j0, j1)
        e = -torch.log(hashed_uniforms(self.key, c))
        return e if like is None else e.to(like.dtype)

    def normals(self, idx):
        base, _ = self._counter(idx, None)
        u1 = hashed_uniforms(self.key, base + self.width)
        u2 = hashed_uniforms(self.key, base + self.width + 1)
        return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)


class KeyedNoiseSteps:
    """Per-step :class:`KeyedNoise` for a batch: ``noise.step(t)`` for spiking event t."""

    def __init__(self, seed: int, epoch: int, indices, n_latents: int, width: int):
        self.seed, self.epoch = int(seed), int(epoch)
        self.indices = torch.as_tensor(list(indices) if not torch.is_tensor(indices) else indices,
                                       dtype=torch.int64)
        if (self.indices < 0).any():
            raise ValueError("sample indices must be non-negative")
        self.k, self.width = int(n_latents), int(width)

    def step(self, t: int) -> KeyedNoise:
        return KeyedNoise(stream_key(self.seed, self.epoch, t), self.indices, self.k, self.width)


def width_needed(max_rate: float, tail: float = 1e-3) -> int:
    """DESIGN §1's width rule: least n with P(count > n; max_rate) < ``tail``."""
    from scipy.stats import poisson

    return int(poisson.ppf(1.0 - tail, max(float(max_rate), 1e-12))) + 1


class PoissonLatent(SpikingNeuron):
    """K Poisson latent neurons with learnable leak b, step size η and prior u₀.

    Parameters
    ----------
    n_latents : K.
    log_bias, log_eta : initial log leak (scalar or (K,)) and log step size; the
        authors' initialisation is log b = −3, log η = 0.
    u0 : (K,) initial potentials (prior log-rates); default U(−6, −4) with ``generator``.
    clamp_u, clamp_du : soft ceilings of u and du (may be changed during training).
    temperature : 0 → exact integer counts; > 0 → relaxed counts.
    width : relaxed-sampler width W.  tail : add the beyond-W tail term.
    init_hidden, output : snntorch conventions (state kept on the module).
    learn : make log_bias, log_eta, u0 ``nn.Parameter`` (else buffers).

    ``forward(input_, mem=None, noise=None)``: input_ (N, K) is the feedback
    current Φᵀe; mem (N, K) the potential u_t; returns (spk, mem) = (z_{t+1},
    u_{t+1}).  ``noise``: uniforms ξ (N, K) at temperature 0; at temperature > 0
    a pair (E (N, K, W) exponentials, g (N, K) normals) — or None to draw from
    torch's global generator.
    """

    def __init__(self, n_latents: int, *, log_bias=-3.0, log_eta=0.0, u0=None,
                 clamp_u: float = 8.0, clamp_du: float = 7.0, temperature: float = 0.0,
                 width: int = DEFAULT_WIDTH, tail: bool = True, init_hidden: bool = False,
                 output: bool = False, learn: bool = True, generator=None,
                 dtype=torch.float32):
        super().__init__(init_hidden=init_hidden, output=output, reset_mechanism="none")
        if n_latents < 1:
            raise ValueError(f"n_latents must be >= 1, got {n_latents}")
        if width < 1:
            raise ValueError(f"relaxed-sampler width must be >= 1, got {width}")
        k = int(n_latents)
        if u0 is None:
            u0 = torch.empty(k, dtype=dtype).uniform_(-6.0, -4.0, generator=generator)
        u0 = torch.as_tensor(u0, dtype=dtype).reshape(k).clone()
        log_bias = torch.as_tensor(log_bias, dtype=dtype).expand(k).clone()
        log_eta = torch.as_tensor(log_eta, dtype=dtype).reshape(()).clone()
        for name, value in (("u0", u0), ("log_bias", log_bias), ("log_eta", log_eta)):
            if learn:
                setattr(self, name, torch.nn.Parameter(value))
            else:
                self.register_buffer(name, value)
        self.n_latents = k
        self.clamp_u, self.clamp_du = float(clamp_u), float(clamp_du)
        self.temperature, self.width, self.tail = float(temperature), int(width), bool(tail)
        self.register_buffer("mem", torch.zeros(0, dtype=dtype), persistent=False)

    # --- snntorch hidden-state conventions -------------------------------------------------
    def reset_mem(self, batch_size: int | None = None) -> torch.Tensor:
        """Reset the hidden state to the prior u₀, (batch_size, K) (or (K,) if None)."""
        u0 = self.u0
        self.mem = u0 if batch_size is None else u0.expand(batch_size, self.n_latents)
        return self.mem

    def init_poisson(self, batch_size: int | None = None) -> torch.Tensor:
        """snntorch-style initialiser: the hidden state at the prior u₀."""
        return self.reset_mem(batch_size)

    @classmethod
    def reset_hidden(cls):
        """Reset every PoissonLatent instance's hidden state to its prior u₀."""
        for layer in SpikingNeuron.instances:
            if isinstance(layer, cls):
                n = layer.mem.shape[0] if layer.mem.dim() == 2 else None
                layer.reset_mem(n)

    @classmethod
    def detach_hidden(cls):
        """Detach the hidden states from the graph (truncated BPTT)."""
        for layer in SpikingNeuron.instances:
            if isinstance(layer, cls):
                layer.mem = layer.mem.detach()

    # --- dynamics ---------------------------------------------------------------------------
    @property
    def bias(self) -> torch.Tensor:
        """(K,) leak b = e^{log b}."""
        return torch.exp(self.log_bias)

    @property
    def eta(self) -> torch.Tensor:
        """Step size η = e^{log η}."""
        return torch.exp(self.log_eta)

    def integrate(self, input_: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
        """u_{t+1} = clamp_u(u_t + clamp_du(η (input − b))), (N, K)."""
        du = self.eta * (input_ - self.bias)
        return clamp(mem + clamp(du, self.clamp_du), self.clamp_u)

    def fire(self, mem: torch.Tensor, noise=None) -> torch.Tensor:
        """Spike counts at rate e^mem: exact (temperature 0) or relaxed (> 0), (N, K)."""
        rate = torch.exp(mem)
        if self.temperature <= 0:
            xi = torch.rand(mem.shape, dtype=torch.float64) if noise is None else noise
            return poisson_counts(xi, rate).to(mem.dtype)
        if noise is None:
            e = -torch.log1p(-torch.rand(*mem.shape, self.width, dtype=mem.dtype,
                                         device=mem.device))
            g = torch.randn_like(mem)
        elif isinstance(noise, tuple):
            e, g = noise
            if e.shape[-1] != self.width:
                raise ValueError(f"exponential noise has width {e.shape[-1]}, "
                                 f"neuron width is {self.width}")
        else:
            if noise.width != self.width:
                raise ValueError(f"noise source has width {noise.width}, "
                                 f"neuron width is {self.width}")
            return relaxed_poisson(rate, self.temperature, noise, tail=self.tail)
        g = g if self.tail else None
        return relaxed_poisson(rate, self.temperature, e, g)

    def forward(self, input_: torch.Tensor, mem: torch.Tensor | None = None, noise=None):
        """One step: integrate the feedback current, then spike; returns (spk, mem)."""
        if self.init_hidden and mem is not None:
            raise TypeError("`mem` should not be passed as an argument while `init_hidden=True`")
        if mem is None:
            mem = self.mem
            if mem.shape != input_.shape:
                mem = self.u0.expand_as(input_)
        if input_.shape[-1] != self.n_latents:
            raise ValueError(f"input has {input_.shape[-1]} channels, expected K = {self.n_latents}")
        mem = self.integrate(input_, mem)
        spk = self.fire(mem, noise)
        if self.init_hidden:
            self.mem = mem
            return (spk, mem) if self.output else spk
        return spk, mem


def exponential_from_uniform(u: torch.Tensor) -> torch.Tensor:
    """Standard exponentials −log(1 − U) from uniforms U in [0, 1)."""
    return -torch.log1p(-u)


def normal_from_uniform(u1: torch.Tensor, u2: torch.Tensor) -> torch.Tensor:
    """Standard normals by Box–Muller from two uniform tensors in [0, 1)."""
    return torch.sqrt(-2.0 * torch.log1p(-u1)) * torch.cos(2.0 * math.pi * u2)
