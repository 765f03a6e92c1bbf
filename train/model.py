"""The trainable iP-VAE (DESIGN.md §1): decoder, latent neurons, unrolled inference.

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
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from networks.network import LOG_SIGMA_LIMIT, IPVAENetwork
from neurons.poisson import poisson_kl
from neurons.snntorch import DEFAULT_WIDTH, KeyedNoiseSteps, PoissonLatent
from train.config import DECODERS, KL_FORMS

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
    dtype : torch.float32 for training, float64 for exact comparisons.
    """

    def __init__(self, input_dim: int, n_latents: int = 512, *, input_shape=None,
                 decoder: str = "linear", clamp_u: float = 8.0, clamp_du: float = 7.0,
                 width: int = DEFAULT_WIDTH, seed: int = 0, hidden: int = 512,
                 dtype=torch.float32):
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; expected one of {DECODERS}")
        if input_dim < 1 or n_latents < 1:
            raise ValueError(f"input_dim and n_latents must be >= 1, got {input_dim}, {n_latents}")
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
                kl_form: str = "exact", keep_trajectory: bool = False) -> dict:
        """Unroll ``steps`` inference steps on x (N, D).

        noise : per spiking event t = 0 … steps (steps + 1 events): at temperature 0
            uniforms ξ (steps+1, N, K); at temperature > 0 a pair (E (steps+1, N, K, W),
            g (steps+1, N, K)) or a keyed source with ``step(t)`` (``training_noise``);
            None draws from torch's global generator.
        Returns a dict: ``loss`` scalar (mean over steps and inputs of NLL + β·KL),
        ``nll``, ``kl`` (steps,) per-step means (nats per input), ``r2`` (steps+1, N)
        R² of dec(z_t) per input, ``zeros`` (steps+1, N) fraction of counts < 0.5,
        ``max_u`` (steps+1,) largest potential; with ``keep_trajectory`` also
        ``u`` (steps+1, N, K) and ``z`` (steps+1, N, K).
        """
        if kl_form not in KL_FORMS:
            raise ValueError(f"unknown KL form {kl_form!r}; expected one of {KL_FORMS}")
        if x.dim() != 2 or x.shape[1] != self.input_dim:
            raise ValueError(f"x has shape {tuple(x.shape)}, expected (N, {self.input_dim})")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        n = x.shape[0]
        lat = self.latent
        nonlinear = self.decoder_kind != "linear"
        log_sigma = self.log_sigma
        inv_var = torch.exp(-2.0 * log_sigma)
        nll_const = (2.0 * log_sigma + LOG_2PI).sum()
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

        def spikes(u, t):
            z = lat.fire(u, event(t))
            if nonlinear and not z.requires_grad:
                z = z.detach().requires_grad_(True)
            return z

        u = lat.u0.expand(n, self.n_latents)
        with torch.enable_grad() if nonlinear else _null():
            z = spikes(u, 0)
            recon = self.decoder(z)
        nll, kl, r2, zeros, max_u, us, zs = [], [], [], [], [], [u], [z]

        def record(z, recon, u):
            with torch.no_grad():
                sq = ((x - recon) ** 2).sum(dim=1)
                r2.append(1.0 - sq / x_ss)
                zeros.append((z < 0.5).to(x.dtype).mean(dim=1))
                max_u.append(u.max())

        record(z, recon, u)
        for t in range(steps):
            err = (x - recon) * inv_var
            with torch.enable_grad() if nonlinear else _null():
                fb = self.decoder.feedback(z, recon, err)
                u_next = lat.integrate(fb, u)
                z = spikes(u_next, t + 1)
                recon = self.decoder(z)
            sq = ((x - recon) ** 2 * inv_var).sum(dim=1)
            nll.append(0.5 * (sq + nll_const))
            kl.append(poisson_kl(u_next, u, kl_form).sum(dim=1))
            u = u_next
            record(z, recon, u)
            if keep_trajectory:
                us.append(u)
                zs.append(z)
        nll_t = torch.stack(nll)          # (steps, N)
        kl_t = torch.stack(kl)
        loss = (nll_t + beta * kl_t).mean()
        out = dict(loss=loss, nll=nll_t.detach().mean(1), kl=kl_t.detach().mean(1),
                   r2=torch.stack(r2), zeros=torch.stack(zeros), max_u=torch.stack(max_u))
        if keep_trajectory:
            out["u"], out["z"] = torch.stack(us), torch.stack(zs)
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


class _null:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def training_noise(seed: int, epoch: int, indices, n_latents: int, width: int):
    """Relaxed-sampler noise for a batch, each sample's keyed by its index in the data set.

    indices : the samples' indices in the data set, so a sample's draws depend only
    on (seed, epoch, index, step, neuron, arrival), never on the batch or on how
    the data set is split across processes.  Returns a lazy source whose
    ``step(t)`` serves spiking event t; draws are made only where needed.
    """
    return KeyedNoiseSteps(seed, epoch, indices, n_latents, width)
