"""The trainable iP-VAE (design §1): decoder, latent neurons, unrolled inference.

``IPVAEModel`` holds Φ (or a nonlinear decoder), log σ, and a
:class:`neurons.snntorch.PoissonLatent` layer that owns log b, log η and u₀.
``forward(x, noise)`` unrolls T inference steps from u₀:

    z_0 = spikes(u_0)
    for t in 0 … T−1:
        e_t     = (x − dec(z_t)) / σ²                 # prediction error, (N, D)
        fb_t    = J_dec(z_t)ᵀ e_t                     # = Φᵀ e_t for the linear decoder
        u_{t+1} = clamp_u(u_t + clamp_du(η (fb_t − b)))
        z_{t+1} = spikes(u_{t+1})                     # posterior sample of step t
        loss_t  = NLL(x | dec(z_{t+1}), σ²) + β Σ_k KL(Pois(e^{u_{t+1}}) ‖ Pois(e^{u_t}))

and returns the loss averaged over steps and inputs, the per-step losses and
the trajectory.  z_t for t < T are exactly the spikes the reference simulator
emits at step t (same recurrence, same order).

Speed (``fused=True``, the default): the linear model runs the whole unroll as one
autograd node (``_LinearUnroll``) in the folded form fb_t = Φᵀx/σ² − (ΦᵀΦ/σ²) z_t with
a hand-written BPTT (one (N,K)×(K,K) product per step each way instead of two
(N,D)×(D,K)); nonlinear decoders chain ``PoissonLatent.step`` (one node per step).
Both run the one torch step of ``neurons.torch_step`` (the neuron's ``integrate``
and ``fire`` run it too).  ``fused=False`` composes the neuron's ``forward``, the
decoder and ``poisson_kl`` under autograd; a test checks both give the same loss
and gradients.
"""
from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
import torch
from torch import nn

from networks.network import LOG_SIGMA_LIMIT, IPVAENetwork
from neurons.poisson import poisson_kl
from neurons.relaxed import DEFAULT_WIDTH
from neurons.snntorch import PoissonLatent
from neurons.torch_step import spikes, step_backward, step_forward
from train.config import DECODERS, KL_FORMS, LOSS_STEPS

LOG_2PI = math.log(2.0 * math.pi)


class LinearDecoder(nn.Module):
    """x̂ = Φ z with Φ (D, K) ~ N(0, 1e-4²) (authors' initialisation)."""

    def __init__(self, n_latents, input_dim, generator=None, dtype=torch.float32):
        super().__init__()
        self.phi = nn.Parameter(torch.randn(input_dim, n_latents, generator=generator,
                                            dtype=dtype) * 1e-4)

    def forward(self, z):
        """(N, K) counts → (N, D) reconstruction."""
        return z @ self.phi.T

    def feedback(self, z, recon, err):
        """Φᵀ e: (N, D) error → (N, K) current."""
        return err @ self.phi


class _JacobianFeedback(nn.Module):
    """Nonlinear decoders: the feedback is J(z)ᵀ e, the decoder Jacobian's transpose
    times the weighted error (a vector–Jacobian product, kept in the graph for BPTT)."""

    def feedback(self, z, recon, err):
        grad, = torch.autograd.grad(recon, z, grad_outputs=err, create_graph=torch.is_grad_enabled()
                                    and any(p.requires_grad for p in self.parameters()))
        return grad


class MLPDecoder(_JacobianFeedback):
    """x̂ = W₂ silu(W₁ z + c₁) + c₂, hidden width ``hidden``."""

    def __init__(self, n_latents, input_dim, hidden=512, generator=None, dtype=torch.float32):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_latents, hidden, dtype=dtype), nn.SiLU(),
                                 nn.Linear(hidden, input_dim, dtype=dtype))
        if generator is not None:
            with torch.no_grad():
                for p in self.parameters():
                    p.copy_(torch.randn(p.shape, generator=generator, dtype=dtype)
                            * (1.0 / math.sqrt(p.shape[-1])))

    def forward(self, z):
        return self.net(z)


class ConvDecoder(_JacobianFeedback):
    """z → linear → (C, ⌈H/4⌉, ⌈W/4⌉) → two stride-2 transposed convolutions → crop to (H, W)."""

    def __init__(self, n_latents, input_shape, channels=32, generator=None, dtype=torch.float32):
        super().__init__()
        shape = tuple(input_shape)
        if len(shape) == 2:
            shape = (1,) + shape
        if len(shape) != 3:
            raise ValueError(f"conv decoder needs an image input_shape (H, W) or (C, H, W), "
                             f"got {input_shape}")
        self.out_shape = shape
        c, h, w = shape
        self.h0, self.w0, self.channels = -(-h // 4), -(-w // 4), channels
        self.fc = nn.Linear(n_latents, channels * self.h0 * self.w0, dtype=dtype)
        self.up = nn.Sequential(
            nn.SiLU(),
            nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1, dtype=dtype), nn.SiLU(),
            nn.ConvTranspose2d(channels, c, 4, stride=2, padding=1, dtype=dtype))

    def forward(self, z):
        n = z.shape[0]
        c, h, w = self.out_shape
        y = self.up(self.fc(z).reshape(n, self.channels, self.h0, self.w0))
        return y[:, :, :h, :w].reshape(n, c * h * w)


class IPVAEModel(nn.Module):
    """Trainable iP-VAE.

    Parameters
    ----------
    input_dim : D.  n_latents : K.  input_shape : image shape (product D).
    decoder : "linear" (exportable) | "mlp" | "conv".
    clamp_u, clamp_du : final soft ceilings (the trainer ramps them up from 2).
    width : relaxed-sampler width.  seed : initialisation seed.
    u0_init : the prior's potentials u₀ start uniform in u0_init ± 1 (the authors' −5:
    U(−6, −4), the latent's own draw, shifted to the range asked for).
    dtype : torch.float32 for training, float64 for exact comparisons.
    """

    def __init__(self, input_dim: int, n_latents: int = 512, *, input_shape=None,
                 decoder: str = "linear", clamp_u: float = 8.0, clamp_du: float = 7.0,
                 width: int = DEFAULT_WIDTH, seed: int = 0, hidden: int = 512,
                 u0_init: float = -5.0, dtype=torch.float32):
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; expected one of {DECODERS}")
        if input_dim < 1 or n_latents < 1:
            raise ValueError(f"input_dim and n_latents must be >= 1, got {input_dim}, {n_latents}")
        if not -8.0 <= u0_init <= 5.0:
            raise ValueError(f"u0_init must be in [-8, 5], got {u0_init}")
        g = torch.Generator().manual_seed(int(seed))
        self.input_dim, self.n_latents, self.decoder_kind = int(input_dim), int(n_latents), decoder
        self.input_shape = tuple(input_shape) if input_shape is not None else (int(input_dim),)
        if int(np.prod(self.input_shape)) != self.input_dim:
            raise ValueError(f"input_shape {self.input_shape} does not hold D = {input_dim}")
        if decoder == "linear":
            self.decoder = LinearDecoder(n_latents, input_dim, g, dtype)
        elif decoder == "mlp":
            self.decoder = MLPDecoder(n_latents, input_dim, hidden, g, dtype)
        else:
            self.decoder = ConvDecoder(n_latents, self.input_shape, generator=g, dtype=dtype)
        self.log_sigma_raw = nn.Parameter(torch.zeros(input_dim, dtype=dtype))
        self.latent = PoissonLatent(n_latents, log_bias=-3.0, log_eta=0.0, clamp_u=clamp_u,
                                    clamp_du=clamp_du, width=width, generator=g, dtype=dtype)
        if u0_init != -5.0:
            with torch.no_grad():
                self.latent.u0.add_(float(u0_init) + 5.0)
        self.final_clamp_u, self.final_clamp_du = float(clamp_u), float(clamp_du)

    # --- parameters -------------------------------------------------------------------------
    @property
    def log_sigma(self) -> torch.Tensor:
        """(D,) log σ, soft-clamped to |log σ| < 3.45."""
        return LOG_SIGMA_LIMIT * torch.tanh(self.log_sigma_raw / LOG_SIGMA_LIMIT)

    def set_schedule(self, temperature: float, clamp_u: float | None = None,
                     clamp_du: float | None = None):
        """Set the sampler temperature and the current clamp ceilings."""
        self.latent.temperature = float(temperature)
        self.latent.clamp_u = self.final_clamp_u if clamp_u is None else float(clamp_u)
        self.latent.clamp_du = self.final_clamp_du if clamp_du is None else float(clamp_du)

    # --- inference --------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, steps: int, noise=None, beta: float = 1.0,
                kl_form: str = "exact", keep_trajectory: bool = False,
                fused: bool = True, r2_steps: str = "all", loss_noise=None,
                loss_steps: str = "mean") -> dict:
        """Unroll ``steps`` inference steps on x (N, D).

        noise : per spiking event t = 0 … steps (steps + 1 events): at temperature 0
            uniforms ξ (steps+1, N, K); at temperature > 0 a pair (E (steps+1, N, K, W),
            g (steps+1, N, K)) or a keyed source with ``step(t)`` (``training_noise``);
            None draws from torch's global generator.
        fused : run each step's membrane update, spikes and KL as one autograd node with
            hand-written derivatives (``PoissonLatent.step``); False composes the
            neuron's ``forward`` and ``poisson_kl`` under autograd (same numbers; kept
            as the readable reference and for comparisons).
        r2_steps : "all" (``r2`` for every step) or "last" (only the final step's, which
            is all training logs; saves the linear model two (K,K)-sized products).
        loss_noise : None (one sample z_{t+1} both feeds back at step t+1 and is
            scored by the loss at step t), or a second noise source like ``noise``:
            the loss at step t scores its own draw at the same rate e^{u_{t+1}} (the
            authors' separate draws; ``r2`` then describes the loss draws, ``zeros``
            and the trajectory the feedback draws).
            Runs the step-by-step composition (not the fused unroll).
        loss_steps : the weights a_t of the steps' NLL in the loss (``step_weights``):
            "mean" (all 1), "linear" (∝ t + 1) or "last" (the last step only); they
            average to 1, and the KL keeps weight 1 at every step.
        Returns a dict: ``loss`` scalar (mean over steps and inputs of a_t·NLL + β·KL),
        ``nll``, ``kl`` (steps,) per-step means (nats per input), ``r2`` (steps+1, N)
        (or (1, N) with ``r2_steps="last"``) R² of dec(z_t) per input, ``zeros``
        (steps+1, N) fraction of counts < 0.5,
        ``max_u`` (steps+1,) largest potential; with ``keep_trajectory`` also
        ``u`` (steps+1, N, K) and ``z`` (steps+1, N, K).
        """
        if kl_form not in KL_FORMS:
            raise ValueError(f"unknown KL form {kl_form!r}; expected one of {KL_FORMS}")
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"x has shape {tuple(x.shape)}, expected (N, {self.input_dim})")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if r2_steps not in ("all", "last"):
            raise ValueError(f"r2_steps must be 'all' or 'last', got {r2_steps!r}")
        weights = step_weights(loss_steps, steps, x.dtype)
        n = x.shape[0]
        lat = self.latent
        nonlinear = self.decoder_kind != "linear"
        log_sigma = self.log_sigma
        inv_var = torch.exp(-2.0 * log_sigma)
        nll_const = (2.0 * log_sigma + LOG_2PI).sum()
        with torch.no_grad():
            xc = x - x.mean(dim=1, keepdim=True)
            x_ss = (xc * xc).sum(dim=1).clamp_min(1e-12)

        def event(t):
            if noise is None:
                return None
            if hasattr(noise, "step"):
                return noise.step(t)
            if lat.temperature <= 0:
                return noise[t]
            return noise[0][t], noise[1][t]

        if fused and not nonlinear and loss_noise is None:
            shape = x.new_empty(n, self.n_latents)

            def source(t):  # a noise source (temperature > 0) or uniforms ξ (temperature 0)
                ev = event(t)
                if lat.temperature <= 0:
                    return torch.rand(shape.shape, dtype=torch.float64) if ev is None else ev
                return lat.noise_source(shape, ev)[0]

            cfg = dict(steps=steps, event=source, beta=float(beta), temperature=lat.temperature,
                       tail=lat.tail and not (isinstance(noise, tuple) and noise[1] is None),
                       clamp_u=lat.clamp_u, clamp_du=lat.clamp_du, kl_form=kl_form,
                       r2_all=r2_steps == "all", weights=weights)
            loss, nll_t, kl_t, sq, z_all, u_all = _LinearUnroll.apply(
                x, self.decoder.phi, log_sigma, lat.eta, lat.bias, lat.u0, cfg)
            out = dict(loss=loss, nll=nll_t.mean(1), kl=kl_t.mean(1), r2=1.0 - sq / x_ss,
                       zeros=(z_all < 0.5).to(x.dtype).mean(dim=2), max_u=u_all.amax(dim=(1, 2)))
            if keep_trajectory:
                out["u"], out["z"] = u_all, z_all
            return out

        def grad_ready(z):
            if nonlinear and not z.requires_grad:
                z = z.detach().requires_grad_(True)
            return z

        u = lat.u0.expand(n, self.n_latents)
        rate = torch.exp(u.detach())
        with torch.enable_grad() if nonlinear else nullcontext():
            z = grad_ready(lat.fire(u, event(0)))
            recon = self.decoder(z)
        nll, kl, sq_raw, us, zs = [], [], [], [u], [z]
        diff = x - recon
        with torch.no_grad():
            sq_raw.append((diff * diff).sum(dim=1))
        def loss_event(t):
            return loss_noise.step(t) if hasattr(loss_noise, "step") else loss_noise[t]

        for t in range(steps):
            err = diff * inv_var
            with torch.enable_grad() if nonlinear else nullcontext():
                fb = self.decoder.feedback(z, recon, err)
                if fused:
                    z, u_next, kl_t, rate = lat.step(fb, u, rate, event(t + 1), kl_form)
                else:
                    u_next = lat.integrate(fb, u)
                    z = lat.fire(u_next, event(t + 1))
                    kl_t = poisson_kl(u_next, u, kl_form).sum(dim=1)
                z = grad_ready(z)
                recon = self.decoder(z)
                if loss_noise is not None:                 # the loss scores its own draw
                    recon_loss = self.decoder(lat.fire(u_next, loss_event(t + 1)))
            diff = x - recon
            if loss_noise is not None:
                diff_fb, diff = diff, x - recon_loss
            nll.append(0.5 * ((diff * diff * inv_var).sum(dim=1) + nll_const))
            kl.append(kl_t)
            with torch.no_grad():
                sq_raw.append((diff * diff).sum(dim=1))
            if loss_noise is not None:
                diff = diff_fb
            u = u_next
            us.append(u)
            zs.append(z)
        nll_t = torch.stack(nll)          # (steps, N)
        kl_t = torch.stack(kl)
        loss = (nll_t * weights.unsqueeze(1) + beta * kl_t).mean()
        with torch.no_grad():
            z_all = torch.stack([z.detach() for z in zs])
            u_all = torch.stack([u.detach() for u in us])
            out = dict(loss=loss, nll=nll_t.detach().mean(1), kl=kl_t.detach().mean(1),
                       r2=1.0 - torch.stack(sq_raw if r2_steps == "all" else sq_raw[-1:]) / x_ss,
                       zeros=(z_all < 0.5).to(x.dtype).mean(dim=2),
                       max_u=u_all.amax(dim=(1, 2)))
        if keep_trajectory:
            out["u"], out["z"] = u_all, z_all
        return out

    # --- export -----------------------------------------------------------------------------
    def to_network(self, meta: dict | None = None) -> IPVAENetwork:
        """The network file every backend reads (linear decoder only).

        Exported clamps are the final (post-ramp) ceilings.
        """
        if self.decoder_kind != "linear":
            raise ValueError(f"cannot export a {self.decoder_kind!r} decoder: only linear "
                             "decoders map onto the spiking backends (the feedback must be "
                             "Φᵀe with fixed synaptic weights)")
        d = lambda t: t.detach().cpu().double().numpy()  # noqa: E731
        return IPVAENetwork(phi=d(self.decoder.phi), log_sigma=d(self.log_sigma),
                            log_bias=d(self.latent.log_bias), log_eta=float(d(self.latent.log_eta)),
                            u0=d(self.latent.u0), clamp_u=self.final_clamp_u,
                            clamp_du=self.final_clamp_du, input_shape=self.input_shape,
                            meta=meta or {})

    @classmethod
    def from_network(cls, net: IPVAENetwork, dtype=torch.float64, width=DEFAULT_WIDTH):
        """A linear model holding a network file's parameters (e.g. for fine-tuning)."""
        m = cls(net.input_dim, net.n_latents, input_shape=net.input_shape, clamp_u=net.clamp_u,
                clamp_du=net.clamp_du, width=width, dtype=dtype)
        lim = LOG_SIGMA_LIMIT
        if np.any(np.abs(net.log_sigma) >= lim):
            raise ValueError(f"log_sigma outside the trainable range |log σ| < {lim}")
        with torch.no_grad():
            m.decoder.phi.copy_(torch.as_tensor(net.phi))
            m.log_sigma_raw.copy_(torch.as_tensor(lim * np.arctanh(net.log_sigma / lim)))
            m.latent.log_bias.copy_(torch.as_tensor(net.log_bias))
            m.latent.log_eta.fill_(net.log_eta)
            m.latent.u0.copy_(torch.as_tensor(net.u0))
        return m


def step_weights(loss_steps: str, steps: int, dtype=torch.float32) -> torch.Tensor:
    """(steps,) weights a_t of each unrolled step's reconstruction term, averaging to 1.

    "mean": all 1 (the authors'); "linear": ∝ t + 1, so later steps count more; "last":
    ``steps`` on the last step and 0 before it.
    """
    if loss_steps not in LOSS_STEPS:
        raise ValueError(f"loss_steps must be one of {LOSS_STEPS}, got {loss_steps!r}")
    if loss_steps == "mean":
        return torch.ones(steps, dtype=dtype)
    if loss_steps == "linear":
        a = torch.arange(1, steps + 1, dtype=torch.float64)
    else:
        a = torch.zeros(steps, dtype=torch.float64)
        a[-1] = 1.0
    return (a * (steps / a.sum())).to(dtype)


class _LinearUnroll(torch.autograd.Function):
    """The whole unrolled forward of the linear-decoder model, with a hand-written BPTT.

    Same recurrence and loss as the step-by-step autograd composition (a test compares
    the two in float64), computed in the folded form of design §1.1: with
    M = Φᵀ diag(1/σ²) Φ (K,K) and c = Φᵀ x/σ² (N,K),

        fb_t = Φᵀ (x − Φ z_t)/σ² = c − z_t M
        ‖x − Φ z_t‖²_{1/σ²} = xᵀx/σ² − 2 z_t·c + z_t·(z_t M)

    so each step costs one (N,K)×(K,K) product forward and one backward (instead of two
    (N,D)×(D,K) products each way), and no reconstruction is formed.  Each step keeps
    only its local derivatives (``neurons.torch_step.step_forward``); the
    gradients of M (hence Φ and σ) are summed over all steps by one product at the end.

    forward(x (N,D), phi (D,K), log_sigma (D,), eta (), bias (K,), u0 (K,), cfg)
    -> (loss (), nll (T,N), kl (T,N), sq (T+1,N) ‖x − Φ z_t‖², z (T+1,N,K),
    u (T+1,N,K)); only ``loss`` is differentiable.
    """

    @staticmethod
    def forward(ctx, x, phi, log_sigma, eta, bias, u0, cfg):
        steps, event, beta = cfg["steps"], cfg["event"], cfg["beta"]
        temperature, tail = cfg["temperature"], cfg["tail"]
        n, k = x.shape[0], phi.shape[1]
        inv_var = torch.exp(-2.0 * log_sigma)
        phi_w = phi * inv_var.unsqueeze(1)                 # diag(1/σ²) Φ, (D,K)
        gram = phi.T @ phi_w                               # M, (K,K)
        gram = 0.5 * (gram + gram.T)                       # exactly symmetric
        drive = x @ phi_w                                  # c, (N,K)
        xx = (x * x) @ inv_var                             # xᵀx/σ², (N,)
        nll_const = float((2.0 * log_sigma + LOG_2PI).sum())
        z_all = x.new_empty(steps + 1, n, k)
        u_all = x.new_empty(steps + 1, n, k)
        fb_all = x.new_empty(steps + 1, n, k)
        u = u0.expand(n, k)
        rate = torch.exp(u)
        u_all[0] = u
        z_all[0], dz0 = spikes(rate, temperature, event(0), tail)
        torch.addmm(drive, z_all[0], gram, alpha=-1.0, out=fb_all[0])   # c − z M
        saved, kl = [], []
        for t in range(steps):
            u, z, kl_t, rate, sv = step_forward(
                fb_all[t], u, eta, bias, rate, cfg["clamp_u"], cfg["clamp_du"], temperature,
                event(t + 1), tail, cfg["kl_form"])
            saved.append(sv)
            z_all[t + 1], u_all[t + 1] = z, u
            torch.addmm(drive, z, gram, alpha=-1.0, out=fb_all[t + 1])
            kl.append(kl_t)
        kl = torch.stack(kl)
        # ‖x − Φz_t‖²/σ² = xx − 2 z_t·c + z_t·z_t M = xx − z_t·(c + fb_t), t = 1 … T
        nll = (xx - (z_all[1:] * (fb_all[1:] + drive)).sum(2)).add_(nll_const).mul_(0.5)
        a = cfg["weights"]                                 # (T,) NLL weights, mean 1
        loss = (nll * a.unsqueeze(1) + beta * kl).mean()
        with torch.no_grad():                              # unweighted ‖x − Φ z_t‖²
            if cfg["r2_all"]:                              # every t: one (K,K) product
                zp = (z_all.reshape(-1, k) @ (phi.T @ phi)).reshape(z_all.shape)
                sq = ((x * x).sum(1) - (z_all * (2.0 * (x @ phi) - zp)).sum(2)).clamp_min_(0.0)
            else:                                          # the last t only
                d = x - z_all[-1] @ phi.T
                sq = (d * d).sum(1).unsqueeze(0)
        ctx.cfg = dict(steps=steps, beta=beta, n=n, weights=[float(v) for v in a])
        ctx.saved_steps = saved
        ctx.dz0 = dz0
        ctx.save_for_backward(x, phi, inv_var, gram, z_all, fb_all)
        ctx.mark_non_differentiable(nll, kl, sq, z_all, u_all)
        return loss, nll, kl, sq, z_all, u_all

    @staticmethod
    def backward(ctx, g_loss, *_):
        x, phi, inv_var, gram, z_all, fb_all = ctx.saved_tensors
        steps, beta, n = ctx.cfg["steps"], ctx.cfg["beta"], ctx.cfg["n"]
        saved, dz0 = ctx.saved_steps, ctx.dz0
        if saved is None:
            raise RuntimeError("the fused model's graph was already used by a backward pass; "
                               "run the forward again (or use fused=False with retain_graph)")
        w = g_loss / (steps * n)                 # d loss / d (each input's per-step loss)
        wf = float(w)
        a = ctx.cfg["weights"]                   # NLL_t weighs wf·a[t]; the KL wf·β
        g_fb_all = torch.zeros_like(fb_all)      # dL/d fb_t (t = T stays 0)
        g_u = g_eta = g_bias = None
        for t in range(steps, -1, -1):
            if t == steps:                                            # NLL_{T−1} only
                g_z = fb_all[t] * (-wf * a[t - 1])
            else:                                # NLL_{t−1} (t ≥ 1) and fb_t = c − z_t M
                g_z = torch.addmm(fb_all[t], g_fb_all[t], gram,
                                  beta=-wf * a[t - 1] if t >= 1 else 0.0, alpha=-1.0)
            if t == 0:                                                # z_0 = spikes(u_0)
                if dz0 is not None:
                    g_u = g_u.addcmul(g_z, dz0)
                break
            g_fb, g_u, ge, gb = step_backward(saved[t - 1], g_u, g_z, wf * beta)
            g_fb_all[t - 1] = g_fb
            g_eta = ge if g_eta is None else g_eta + ge
            g_bias = gb if g_bias is None else g_bias + gb
        # M: Σ_t z_tᵀ (½ w a_{t−1} z_t [t ≥ 1] − g_fb_t);  c: Σ_t g_fb_t − w Σ_{t≥1} a_{t−1} z_t;
        # xx: ½ w Σ a = ½ w T
        az = z_all[1:] * torch.as_tensor(a, dtype=z_all.dtype).view(-1, 1, 1)
        g_drive = g_fb_all[:steps].sum(0).sub_(az.sum(0), alpha=wf)
        h = g_fb_all.neg_()
        h[1:].add_(az, alpha=0.5 * wf)
        k = phi.shape[1]
        g_gram = z_all.reshape(-1, k).T @ h.reshape(-1, k)
        g_gram = g_gram + g_gram.T                                    # M symmetric
        # M = Φᵀ diag(iv) Φ, c = x diag(iv) Φ, xx = (x∘x) iv
        phi_s = phi @ g_gram                                          # (D,K)
        xg = x.T @ g_drive                                            # (D,K)
        g_phi = (phi_s + xg).mul_(inv_var.unsqueeze(1))
        g_iv = (0.5 * (phi_s * phi).sum(1) + (xg * phi).sum(1)
                + (x * x).sum(0) * (0.5 * wf * steps))
        g_log_sigma = g_iv.mul_(-2.0 * inv_var).add_(g_loss)          # iv = e^{−2 log σ}; const
        ctx.saved_steps = None
        return None, g_phi, g_log_sigma, g_eta, g_bias, g_u.sum(0), None

