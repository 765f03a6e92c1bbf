"""One inference step of the latent neurons in torch, with hand-written derivatives (design §1.1).

The one place where torch computes

    u_{t+1} = clamp_u(u_t + clamp_du(η (fb − b)))          (:func:`membrane`)
    z_{t+1} = counts at rate e^{u_{t+1}}                    (:func:`spikes`)
    KL_t    = KL(Pois(e^{u_{t+1}}) ‖ Pois(e^{u_t}))         (:func:`step_forward`)

Each function runs without autograd and returns, beside its values, the local
derivatives (the clamps' slopes, dz/du, ∂KL/∂u); the autograd Functions
:class:`Integrate` (the neuron's ``integrate``) and :class:`LatentStep` (one
fused step) and ``train.model``'s unrolled BPTT chain them by
:func:`step_backward`, a few multiplies instead of autograd replaying ~40
elementwise operations.  Clamps: hard floor ``neurons.poisson.U_FLOOR``, then
the soft ceiling c − softplus(c − x) (design §1.2).

Shapes: fb, u (N, K) (any leading shape works; b broadcasts over the last
axis), η a 0-d tensor, b (K,).  Units: u in log-rate (e^u spikes/step).
"""
from __future__ import annotations

import numpy as np
import torch

from neurons.poisson import U_FLOOR, poisson_icdf
from neurons.relaxed import relaxed_forward

KL_FORMS = ("exact", "posterior")


class single_thread:
    """Run elementwise work on one thread, then restore torch's thread count.

    The per-step tensors are small ((N,K) ≈ 50k floats): splitting them over
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


def clamp_with_slope(x: torch.Tensor, c: float):
    """(clamp(x, c), d clamp / dx): hard floor at U_FLOOR, then c − softplus(c − x).

    softplus(y) = log(1 + e^y) with y = c − max(x, U_FLOOR) ≤ c − U_FLOOR (no
    overflow; log of 1 + e^y rather than log1p: one fast log, and the absolute
    error, ~1 ulp of 1, is far below that of u near the ceiling); the slope is
    sigmoid(y) = e^y / (1 + e^y) above the floor and 0 below it.  On CPU the
    floor's mask is a multiply by numpy's boolean compare (34 µs for 100×512
    where torch's compare + masked fill took 158 µs here).
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


def membrane(fb, u, eta, bias, clamp_u: float, clamp_du: float):
    """u_{t+1} = clamp_u(u + clamp_du(η (fb − b))) and its local derivatives; no autograd.

    Returns (u_next, (a, d1, d2)): a = η (fb − b), d1 = d clamp_du / da,
    d2 = d clamp_u / d(u + clamp_du(a)), all shaped like u.
    """
    a = (fb - bias).mul_(eta)
    du, d1 = clamp_with_slope(a, clamp_du)
    u_next, d2 = clamp_with_slope(du.add_(u), clamp_u)
    return u_next, (a, d1, d2)


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


def spikes(rate, temperature: float, noise, tail: bool):
    """Counts at rate e^u and dz/du; no autograd.

    rate (N, K) = e^u.  temperature 0: ``noise`` is uniforms ξ (N, K), the counts
    are exact (``poisson_counts``) and dz/du is None; temperature > 0: ``noise``
    is a noise source (``neurons.relaxed``) and the counts are relaxed.
    Returns (z, dz/du) in ``rate``'s dtype.
    """
    if temperature <= 0:
        return poisson_counts(noise, rate).to(rate.dtype), None
    with single_thread():
        z, dz = relaxed_forward(rate, temperature, noise, tail)
    return z, dz.mul_(rate)                                        # dz/du = dz/dr · r


def step_forward(fb, u, eta, bias, rate, clamp_u, clamp_du, temperature, noise, tail,
                 kl_form="exact"):
    """One membrane update + spikes + KL without autograd, keeping the local derivatives.

    fb (N,K) feedback current, u (N,K) potential u_t, eta () and bias (K,) (η, b),
    rate (N,K) = e^{u_t}; ``noise`` a noise source (temperature > 0) or uniforms ξ
    (temperature 0).  Returns (u_{t+1}, z_{t+1}, KL_t (N,) summed over neurons,
    e^{u_{t+1}}, saved) where ``saved`` feeds :func:`step_backward`.
    KL: the exact e^{u_t}(1 + e^δ(δ − 1)), δ = u_{t+1} − u_t, or ``"posterior"``:
    e^δ times it (design §1.3).
    """
    with single_thread():
        u_next, (a, d1, d2) = membrane(fb, u, eta, bias, clamp_u, clamp_du)
        r_next = torch.exp(u_next)
        delta = u_next - u
        kl = r_next * (delta - 1.0) + rate                          # e^u (1 + e^δ (δ − 1))
        k1 = r_next * delta                                         # ∂KL/∂u_{t+1}
        k0 = rate - r_next                                          # ∂KL/∂u_t
        if kl_form == "posterior":                                  # e^δ · KL
            ed = torch.exp(delta)
            kl = kl.mul_(ed)
            k1 = (k1 * ed).add_(kl)
            k0 = (k0 * ed).sub_(kl)
    z, dz = spikes(r_next, temperature, noise, tail)
    return u_next, z, kl.sum(-1), r_next, (a, d1, d2, dz, k1, k0, eta)


def step_backward(saved, g_u, g_z=None, g_kl=None, need_eta=True, need_bias=True):
    """Gradients (fb, u_t, η, b) of one step from those of (u_{t+1}, z_{t+1}, KL_t).

    saved : from :func:`step_forward` (or ``(a, d1, d2, None, None, None, eta)`` from
    :func:`membrane` alone).  g_u, g_z : (N,K) or None; g_kl : (N,) tensor, a float
    (the same for every input) or None.  Returns (g_fb (N,K), g_u_t (N,K),
    g_η () or None, g_b (K,) or None).
    """
    with single_thread():
        a, d1, d2, dz, k1, k0, eta = saved
        g = torch.zeros_like(a) if g_u is None else g_u.clone()
        if g_z is not None and dz is not None:
            g.addcmul_(g_z, dz)
        if isinstance(g_kl, torch.Tensor):
            g_kl = g_kl.unsqueeze(-1)
            g.addcmul_(g_kl, k1)
        elif g_kl is not None:
            g.add_(k1, alpha=float(g_kl))
        g_v = g.mul_(d2)                                            # through clamp_u
        if isinstance(g_kl, torch.Tensor):
            g_uprev = torch.addcmul(g_v, g_kl, k0)
        elif g_kl is not None:
            g_uprev = torch.add(g_v, k0, alpha=float(g_kl))
        else:
            g_uprev = g_v
        g_a = g_v * d1                                              # through clamp_du
        g_fb = g_a * eta
        g_eta = (g_a * a).sum() / eta if need_eta else None         # ∂a/∂η = a/η
        g_bias = g_fb.reshape(-1, g_fb.shape[-1]).sum(0).neg_() if need_bias else None
    return g_fb, g_uprev, g_eta, g_bias


class Integrate(torch.autograd.Function):
    """The membrane update alone as one autograd node: apply(fb, u, eta, bias, clamp_u,
    clamp_du) → u_{t+1} (shaped like u; fb and u broadcast to a common shape)."""

    @staticmethod
    def forward(ctx, fb, u, eta, bias, clamp_u, clamp_du):
        fb, u = torch.broadcast_tensors(fb, u)
        u_next, (a, d1, d2) = membrane(fb, u, eta, bias, clamp_u, clamp_du)
        ctx.save_for_backward(a, d1, d2, eta)
        return u_next

    @staticmethod
    def backward(ctx, g_u):
        a, d1, d2, eta = ctx.saved_tensors
        g_fb, g_uprev, g_eta, g_bias = step_backward(
            (a, d1, d2, None, None, None, eta), g_u,
            need_eta=ctx.needs_input_grad[2], need_bias=ctx.needs_input_grad[3])
        return g_fb, g_uprev, g_eta, g_bias, None, None


class LatentStep(torch.autograd.Function):
    """One fused membrane update + spikes + KL with hand-written derivatives.

    apply(fb (N,K), u (N,K), eta (), bias (K,), rate (N,K) = e^{u_t} (a cache, no
    gradient), clamp_u, clamp_du, temperature, noise, tail, kl_form) →
    (u_{t+1}, z_{t+1}, KL_t (N,) summed over neurons, e^{u_{t+1}} (no gradient)).
    The forward keeps only the local derivatives (a handful of (N,K) tensors).
    """

    @staticmethod
    def forward(ctx, fb, u, eta, bias, rate, clamp_u, clamp_du, temperature, noise, tail,
                kl_form):
        u_next, z, kl, r_next, saved = step_forward(
            fb, u, eta, bias, rate, clamp_u, clamp_du, temperature, noise, tail, kl_form)
        ctx.save_for_backward(*saved)
        ctx.mark_non_differentiable(r_next)
        if saved[3] is None:
            ctx.mark_non_differentiable(z)
        return u_next, z, kl, r_next

    @staticmethod
    def backward(ctx, g_u, g_z, g_kl, _g_r):
        g_fb, g_u_prev, g_eta, g_bias = step_backward(
            ctx.saved_tensors, g_u, g_z, g_kl, ctx.needs_input_grad[2], ctx.needs_input_grad[3])
        return g_fb, g_u_prev, g_eta, g_bias, None, None, None, None, None, None, None
