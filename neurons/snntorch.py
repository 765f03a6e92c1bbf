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
unbiased at any rate while costing at most O(N·K·W), in practice
O(N·K + arrivals before 1 + 20·temperature) (:func:`relaxed_poisson`).

Training speed: ``PoissonLatent.step`` (and :func:`latent_step_forward` /
:func:`latent_step_backward`, which ``train.model`` chains over the unrolled
steps) runs one membrane update, the spikes and the Poisson KL as a single
autograd node whose backward uses the local derivatives kept by the forward
(the clamps' slopes, dz̃/du, ∂KL/∂u), instead of autograd replaying ~40
elementwise operations.  A test checks it against ``forward`` + ``poisson_kl``.
Keyed training noise (:class:`KeyedNoise`) is a counter hash evaluated with
numpy's uint32 arithmetic, only for the draws the sampler asks for.  Two CPU
slow paths are avoided without changing a result bit: the sigmoid's argument is
clamped where the sigmoid is already exactly 0 or 1 (measured: torch's sigmoid
runs ~2x slower on huge arguments), and the clamp's floor mask is a numpy
compare and multiply (~5x cheaper than torch's compare + masked fill on CPU).
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

    Arrivals are walked one at a time, each only for the neurons whose previous
    arrival came before 1 + 20·temperature (every later term is then below
    sigmoid(−20) ≈ 2e-9, and so is the sum of the skipped ones' terms to float
    precision), so the cost is ~ N·K + Σ (arrivals before 1 + 20·temperature), not
    N·K·W.  The gradient is computed alongside (dz̃/dr, one (…,) tensor kept for
    the backward pass), so autograd sees one node.  As temperature → 0 the count
    tends to the exact Poisson count, mean r.
    """
    if temperature <= 0:
        raise ValueError(f"relaxed sampling needs temperature > 0, got {temperature}")
    if torch.is_tensor(exp_noise):
        source = DenseNoise(exp_noise, tail_noise)
        tail = tail and tail_noise is not None
    else:
        source = exp_noise
    return _RelaxedPoisson.apply(rate, float(temperature), source, bool(tail))


class _RelaxedPoisson(torch.autograd.Function):
    """z̃(r) and dz̃/dr in one pass (see :func:`relaxed_poisson`)."""

    @staticmethod
    def forward(ctx, rate, temperature, source, tail):
        z, dzdr = _relaxed_forward(rate.detach(), temperature, source, tail)
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


def _saturation(dtype) -> tuple[float, float]:
    """(lo, hi): torch's sigmoid is exactly 0 at x ≤ lo and exactly 1 at x ≥ hi in ``dtype``.

    Clamping a sigmoid's argument to [lo, hi] first changes no result bit but keeps it
    off huge arguments, on which torch's CPU sigmoid runs ~2x slower (at τ = 0.01 a
    silent neuron's (1 − S)/τ is ~ −10⁶).  A test checks the identity.
    """
    return (-110.0, 20.0) if dtype == torch.float32 else (-750.0, 40.0)


def _relaxed_forward(rate, temperature, source, tail):
    """(z̃, dz̃/dr), both shaped like ``rate``.

    With y_j = sigmoid((1 − S_j)/τ) and S_j = Γ_j / r: dy_j/dr = y_j (1 − y_j) S_j / (τ r).
    Tail (when S_W < 1): m = r (1 − S_W) = r − Γ_W, extra = relu(m + √m g), so
    d extra/dr = 1 + g / (2√m) where extra > 0.
    """
    shape, dtype = rate.shape, rate.dtype
    r = rate.reshape(-1)
    width = source.width
    inv_t = 1.0 / temperature
    limit = 1.0 + 20.0 * temperature
    s = source.exponentials(None, 0, 1, r).reshape(-1) / r             # S_1, (M,)
    z = torch.rsub(s, 1.0).mul_(inv_t).clamp_(*_saturation(dtype)).sigmoid_()  # y_1, then Σ_j y_j
    acc = (1.0 - z).mul_(z).mul_(s)                                    # Σ_j y_j (1 − y_j) S_j
    idx = None
    if width > 1 or tail:
        idx = _below(s, limit)
        s, ra = s.index_select(0, idx), r.index_select(0, idx)
    j0 = 1
    while j0 < width and idx.numel() > 0:  # arrivals in blocks 2–3, 4–7, 8–15, …: few passes
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
    """Noise source over explicit tensors: E (..., W) exponentials, g (...,) normals."""

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

    def __init__(self, seed: int, epoch: int, indices, n_latents: int, width: int):
        self.seed, self.epoch = int(seed), int(epoch)
        self.indices = torch.as_tensor(list(indices) if not torch.is_tensor(indices) else indices,
                                       dtype=torch.int64)
        if (self.indices < 0).any():
            raise ValueError("sample indices must be non-negative")
        self.k, self.width = int(n_latents), int(width)

    prefetch = True
    """Draw step t+1's noise on a helper thread while step t runs (numpy releases the
    GIL; the per-step tensor work runs on one thread, so a core is otherwise idle)."""
    _pool = None

    def _make(self, t: int) -> KeyedNoise:
        return KeyedNoise(stream_key(self.seed, self.epoch, t), self.indices, self.k, self.width)

    def step(self, t: int) -> KeyedNoise:
        ahead = getattr(self, "_ahead", None)
        noise = ahead[1].result() if ahead is not None and ahead[0] == t else self._make(t)
        if self.prefetch:
            import os

            pool = KeyedNoiseSteps._pool
            if pool is None or pool[0] != os.getpid():  # (a forked child needs its own thread)
                from concurrent.futures import ThreadPoolExecutor

                pool = (os.getpid(), ThreadPoolExecutor(1, thread_name_prefix="ipvae-noise"))
                KeyedNoiseSteps._pool = pool
            self._ahead = (t + 1, pool[1].submit(self._make, t + 1))
        return noise

class _single_thread:
    """Run elementwise work on one thread, then restore torch's thread count.

    The per-step tensors here are small ((N,K) ≈ 50k floats): splitting them over
    OpenMP threads costs more than it saves (waking passive workers per op), while
    the matrix products around them still use every thread.
    """

    def __enter__(self):
        self.n = torch.get_num_threads()
        if self.n > 1:
            torch.set_num_threads(1)

    def __exit__(self, *exc):
        if self.n > 1:
            torch.set_num_threads(self.n)
        return False


def _clamp_with_slope(x: torch.Tensor, c: float):
    """(clamp(x, c), d clamp / dx): hard floor at −8, then c − softplus(c − x).

    softplus(y) = log(1 + e^y) with y = c − max(x, −8) ≤ c + 8 (no overflow; log of
    1 + e^y rather than log1p: one fast log, and the absolute error, ~1 ulp of 1,
    is far below that of u near the ceiling); the slope is sigmoid(y) =
    e^y / (1 + e^y) above the floor and 0 below it.  Two new tensors; on CPU the
    floor's mask is a multiply by numpy's boolean compare (34 µs for 100×512 where
    torch's compare + masked fill took 158 µs here).
    """
    e = torch.clamp(x, min=U_FLOOR).neg_().add_(c).exp_()          # e^y
    one_e = e + 1.0
    slope = e.div_(one_e)
    out = one_e.log_().neg_().add_(c)                              # c − log(1 + e^y)
    if float(x.amin()) < U_FLOOR:
        if x.device.type == "cpu":
            sn = slope.detach().numpy()
            np.multiply(sn, x.detach().numpy() >= U_FLOOR, out=sn)
        else:
            slope.masked_fill_(x < U_FLOOR, 0.0)
    return out, slope


def latent_step_forward(fb, u, eta, bias, rate, clamp_u, clamp_du, temperature, noise, tail,
                        kl_form="exact"):
    """One membrane update + spike + KL without autograd, keeping the local derivatives.

    fb (N,K) feedback current, u (N,K) potential u_t, eta () and bias (K,) (η, b),
    rate (N,K) = e^{u_t}; ``noise`` a noise source (temperature > 0) or uniforms ξ
    (temperature 0).  Returns (u_{t+1}, z_{t+1}, KL_t (N,) summed over neurons,
    e^{u_{t+1}}, saved) where ``saved`` feeds :func:`latent_step_backward`.
    """
    with _single_thread():
        return _latent_step_forward(fb, u, eta, bias, rate, clamp_u, clamp_du, temperature,
                                    noise, tail, kl_form)


def _latent_step_forward(fb, u, eta, bias, rate, clamp_u, clamp_du, temperature, noise, tail,
                         kl_form):
    a = (fb - bias).mul_(eta)                                      # η (fb − b)
    du, d1 = _clamp_with_slope(a, clamp_du)
    u_next, d2 = _clamp_with_slope(u + du, clamp_u)
    r_next = torch.exp(u_next)
    if temperature <= 0:
        z = poisson_counts(noise, r_next).to(u.dtype)
        dz = None
    else:
        z, dz = _relaxed_forward(r_next, temperature, noise, tail)
        dz.mul_(r_next)                                            # dz/du = dz/dr · r
    delta = u_next - u
    kl = r_next * (delta - 1.0) + rate                              # e^u (1 + e^δ (δ − 1))
    k1 = r_next * delta                                            # ∂KL/∂u_{t+1}
    k0 = rate - r_next                                             # ∂KL/∂u_t
    if kl_form == "posterior":                                     # e^δ · KL
        ed = torch.exp(delta)
        kl = kl.mul_(ed)
        k1 = (k1 * ed).add_(kl)
        k0 = (k0 * ed).sub_(kl)
    return u_next, z, kl.sum(-1), r_next, (a, d1, d2, dz, k1, k0, eta)


def latent_step_backward(saved, g_u, g_z, g_kl, need_eta=True, need_bias=True):
    """Gradients (fb, u_t, η, b) of one step from those of (u_{t+1}, z_{t+1}, KL_t).

    g_u, g_z : (N,K) or None; g_kl : (N,) tensor, a float (same for every input) or None.
    """
    with _single_thread():
        return _latent_step_backward(saved, g_u, g_z, g_kl, need_eta, need_bias)


def _latent_step_backward(saved, g_u, g_z, g_kl, need_eta, need_bias):
    a, d1, d2, dz, k1, k0, eta = saved
    g = torch.zeros_like(a) if g_u is None else g_u.clone()
    if g_z is not None and dz is not None:
        g.addcmul_(g_z, dz)
    if isinstance(g_kl, torch.Tensor):
        g_kl = g_kl.unsqueeze(-1)
        g.addcmul_(g_kl, k1)
    elif g_kl is not None:
        g.add_(k1, alpha=float(g_kl))
    g_v = g.mul_(d2)                                               # through clamp_u
    if isinstance(g_kl, torch.Tensor):
        g_uprev = torch.addcmul(g_v, g_kl, k0)
    elif g_kl is not None:
        g_uprev = torch.add(g_v, k0, alpha=float(g_kl))
    else:
        g_uprev = g_v
    g_a = g_v * d1                                                 # through clamp_du
    g_fb = g_a * eta
    g_eta = (g_a * a).sum() / eta if need_eta else None            # ∂a/∂η = a/η
    g_bias = g_fb.reshape(-1, g_fb.shape[-1]).sum(0).neg_() if need_bias else None
    return g_fb, g_uprev, g_eta, g_bias


class _LatentStep(torch.autograd.Function):
    """One fused membrane update + spike + KL with hand-written derivatives.

    Inputs: fb (N,K) feedback current, u (N,K) potential u_t, eta (), bias (K,),
    rate (N,K) = e^{u_t} (no gradient; a cache), then settings.  Outputs:
    u_{t+1}, z_{t+1}, KL_t (N,) summed over neurons, and e^{u_{t+1}} (no gradient).
    The forward keeps only the local derivatives (a handful of (N,K) tensors), so
    the backward is a few multiplies instead of replaying ~40 elementwise ops.
    """

    @staticmethod
    def forward(ctx, fb, u, eta, bias, rate, clamp_u, clamp_du, temperature, noise, tail,
                kl_form):
        u_next, z, kl, r_next, saved = latent_step_forward(
            fb, u, eta, bias, rate, clamp_u, clamp_du, temperature, noise, tail, kl_form)
        ctx.save_for_backward(*saved)
        ctx.mark_non_differentiable(r_next)
        if saved[3] is None:
            ctx.mark_non_differentiable(z)
        return u_next, z, kl, r_next

    @staticmethod
    def backward(ctx, g_u, g_z, g_kl, _g_r):
        g_fb, g_u_prev, g_eta, g_bias = latent_step_backward(
            ctx.saved_tensors, g_u, g_z, g_kl, ctx.needs_input_grad[2], ctx.needs_input_grad[3])
        return g_fb, g_u_prev, g_eta, g_bias, None, None, None, None, None, None, None


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

    def step(self, input_: torch.Tensor, mem: torch.Tensor, rate: torch.Tensor | None = None,
             noise=None, kl_form: str = "exact"):
        """One fused training step: (spk, mem, kl, rate) = (z_{t+1}, u_{t+1}, KL_t, e^{u_{t+1}}).

        The same mathematics as ``forward`` followed by ``neurons.poisson.poisson_kl``
        (KL(Pois(e^{u_{t+1}}) ‖ Pois(e^{u_t})) summed over neurons, (N,)), computed
        with hand-written derivatives (one autograd node).  input_ (N, K) is the
        feedback current, mem (N, K) the potential u_t, rate its e^{u_t} if already
        known (a cache; no gradient flows through it).  ``noise`` as for ``forward``.
        """
        if kl_form not in ("exact", "posterior"):
            raise ValueError(f"unknown KL form {kl_form!r}; expected 'exact' or 'posterior'")
        if input_.shape[-1] != self.n_latents:
            raise ValueError(f"input has {input_.shape[-1]} channels, expected K = {self.n_latents}")
        if rate is None:
            rate = torch.exp(mem.detach())
        if self.temperature <= 0:
            source = torch.rand(mem.shape, dtype=torch.float64) if noise is None else noise
            tail = False
        else:
            source = self._relaxed_source(mem, noise)
            tail = self.tail and getattr(source, "g", True) is not None
        u, z, kl, r = _LatentStep.apply(input_, mem, self.eta, self.bias, rate.detach(),
                                        self.clamp_u, self.clamp_du, self.temperature, source,
                                        tail, kl_form)
        return z, u, kl, r

    def _relaxed_source(self, mem, noise):
        """A noise source for the relaxed sampler from ``noise`` (see ``forward``)."""
        if noise is None:
            e = -torch.log1p(-torch.rand(*mem.shape, self.width, dtype=mem.dtype,
                                         device=mem.device))
            return DenseNoise(e, torch.randn_like(mem) if self.tail else None)
        if isinstance(noise, tuple):
            e, g = noise
            if e.shape[-1] != self.width:
                raise ValueError(f"exponential noise has width {e.shape[-1]}, "
                                 f"neuron width is {self.width}")
            return DenseNoise(e, g if self.tail else None)
        if noise.width != self.width:
            raise ValueError(f"noise source has width {noise.width}, "
                             f"neuron width is {self.width}")
        return noise

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
