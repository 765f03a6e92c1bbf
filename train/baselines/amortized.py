"""Amortised VAEs at the iP-VAE's K: a Poisson VAE and a Gaussian VAE (issue 14).

Both decode with the iP-VAE's own pieces, held by a :class:`train.model.IPVAEModel`
(``core``): its linear decoder x̂ = Φ z (Φ (D, K), same initialisation), its learned
per-pixel σ (the same soft clamp of log σ) and Gaussian NLL, and for the Poisson VAE its
latent layer (``neurons.snntorch.PoissonLatent``): the learned prior log-rates u₀ (K,),
the relaxed Poisson sampler (design §1.5) at the trainer's annealed temperature, exact
Poisson counts at temperature 0. What differs from the iP-VAE is inference: one pass of
an encoder instead of T steps of membrane dynamics.

- Poisson (the amortised P-VAE of Vafaii et al.): an MLP maps x (D,) to δu (K,), the
  posterior log-rates are u = clamp(u₀ + δu, c_u) (design §1.2's clamp), z ~ Pois(e^u)
  (relaxed in training), and the loss per input is

      NLL(x | Φ z, σ²) + β Σ_k KL(Pois(e^{u_k}) ‖ Pois(e^{u₀_k}))

  with the iP-VAE's KL (``neurons.poisson.poisson_kl``, exact form by default) and β = 1
  (the ELBO, as for the Gaussian VAE) unless given. The iP-VAE's β (8 at T_train = 16) has
  another meaning: it weighs the KL of a T_train-step path at β/16, and a climb in many
  small steps pays far less KL than the one jump from u₀ an encoder makes; at β = 8 the
  amortised code reached R² 0.38 where β = 1 reached 0.64 (40 epochs on the embedded
  digits, K = 512, the prior below). The prior's potentials start at U0_INIT ± 1 = U(−3,
  −1), as the iP-VAE's do, not at the authors' U(−6, −4): the relaxed sampler gives a
  latent that almost never fires almost no gradient, and from U(−6, −4) most of the
  encoder's latents stayed silent for good (sparsity 0.98, R² 0.41 after 40 epochs, 0.56
  after 100) where U(−3, −1) reached R² 0.64 at sparsity 0.88. Codes are spike counts drawn
  at temperature 0 from the shared uniforms of design §2.2 (input n: stream (seed, n), the
  draw the iP-VAE's step 0 uses), reconstructions Φ z: the iP-VAE's "from spikes" metrics.
  ``codes(x, rates=True)`` gives e^u instead.
- Gaussian: the MLP gives (μ, log s²) (K each), z = μ + s ε, prior N(0, I), loss
  NLL + β KL(N(μ, s²) ‖ N(0, I)) with β = 1 (the standard VAE) unless given. Codes are
  the posterior means μ, reconstructions Φ μ. A Gaussian code has no exact zeros: its
  sparsity is 0.

Training reuses the trainer's schedule (``train.trainer.schedule``, ``lr_factor``,
``init_sigma``: β warm-up, temperature annealing 1 → 0.01, clamp ramp, Adamax with
linear warm-up and cosine decay, gradient clipping) and its keyed relaxed-sampler noise
(``train.noise.training_noise``).
"""
from __future__ import annotations

import math
import time

import numpy as np

import neurons  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
import torch
from torch import nn

from networks.progress import progress_bar
from train.baselines.metrics import as_matrix, summary

KINDS = ("poisson", "gaussian")
HIDDEN = 512
"""Encoder width: D → 512 → 512 → K (Poisson) or 2K (Gaussian), SiLU."""
QUICK_N, QUICK_HIDDEN = 200, 64
INIT_SCALE = 1e-2
"""The encoder's last layer starts at this times PyTorch's usual uniform(±1/√fan_in)
scale: the posterior starts near the prior (u ≈ u₀, μ ≈ 0)."""
U0_INIT = -2.0
"""The Poisson VAE's prior log-rates u₀ start uniform in U0_INIT ± 1 (learned after): a
prior that fires, so that every latent gets a gradient (see the module docstring)."""
LOG_VAR_LIMIT = 10.0
"""|log s²| of the Gaussian posterior is soft-clamped below this (keeps e^{log s²} finite)."""


def _clamp(v: torch.Tensor, c: float) -> torch.Tensor:
    """Design §1.2: hard floor at −8, then the smooth ceiling c − softplus(c − v)."""
    from neurons.poisson import U_FLOOR

    return c - nn.functional.softplus(c - torch.clamp(v, min=U_FLOOR))


class AmortizedVAE(nn.Module):
    """An amortised VAE with the iP-VAE's decoder; see the module docstring.

    input_dim D, n_latents K, kind "poisson" | "gaussian", hidden the encoder width,
    beta β, kl_form the Poisson KL's form, seed the initialisation (and noise) seed.
    After :func:`train_amortized`, ``history`` holds the per-epoch mean loss and the
    training wall time.
    """

    def __init__(self, input_dim: int, n_latents: int, kind: str, *, input_shape=None,
                 hidden: int = HIDDEN, beta: float | None = None, kl_form: str = "exact",
                 clamp_u: float = 8.0, clamp_du: float = 7.0, seed: int = 0,
                 init_scale: float = INIT_SCALE, u0_init: float = U0_INIT):
        super().__init__()
        from train.model import IPVAEModel

        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if beta is None:
            beta = 1.0
        if not (math.isfinite(beta) and beta > 0):
            raise ValueError(f"beta must be a finite number > 0, got {beta}")
        self.kind, self.beta, self.kl_form, self.seed = kind, float(beta), kl_form, int(seed)
        self.core = IPVAEModel(input_dim, n_latents, input_shape=input_shape, decoder="linear",
                               clamp_u=clamp_u, clamp_du=clamp_du, seed=seed, u0_init=u0_init)
        self.input_dim, self.n_latents = self.core.input_dim, self.core.n_latents
        g = torch.Generator().manual_seed(int(seed) + 1)
        out = n_latents if kind == "poisson" else 2 * n_latents
        self.encoder = nn.Sequential(nn.Linear(input_dim, hidden), nn.SiLU(),
                                     nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, out))
        with torch.no_grad():
            for layer in self.encoder:
                if isinstance(layer, nn.Linear):
                    bound = 1.0 / math.sqrt(layer.in_features)
                    layer.weight.uniform_(-bound, bound, generator=g)
                    layer.bias.zero_()
            self.encoder[-1].weight.mul_(init_scale)   # small: start near the prior
        self.history = {}

    # --- the model ---------------------------------------------------------------------------
    def posterior(self, x: torch.Tensor):
        """Poisson: log-rates u (N, K); Gaussian: (μ, log s²), each (N, K)."""
        h = self.encoder(x)
        if self.kind == "poisson":
            return _clamp(self.core.latent.u0 + h, self.core.latent.clamp_u)
        mu, log_var = h.chunk(2, dim=1)
        return mu, LOG_VAR_LIMIT * torch.tanh(log_var / LOG_VAR_LIMIT)

    def forward(self, x: torch.Tensor, beta: float | None = None, noise=None) -> dict:
        """Loss of a batch x (N, D): dict(loss (), nll (N,), kl (N,), z (N, K), recon (N, D)).

        noise : Poisson: the sampler's noise (``PoissonLatent.fire``: a relaxed-noise source
        at temperature > 0, uniforms (N, K) at temperature 0, None = torch's generator);
        Gaussian: ε (N, K) or None (torch's generator).
        """
        from neurons.poisson import poisson_kl
        from train.model import LOG_2PI

        beta = self.beta if beta is None else float(beta)
        if self.kind == "poisson":
            u = self.posterior(x)
            z = self.core.latent.fire(u, noise)
            kl = poisson_kl(u, self.core.latent.u0.expand_as(u), self.kl_form).sum(1)
        else:
            mu, log_var = self.posterior(x)
            eps = torch.randn_like(mu) if noise is None else noise
            z = mu + torch.exp(0.5 * log_var) * eps
            kl = 0.5 * (mu * mu + torch.exp(log_var) - 1.0 - log_var).sum(1)
        recon = self.core.decoder(z)
        log_sigma = self.core.log_sigma
        nll = 0.5 * (((x - recon) ** 2 * torch.exp(-2.0 * log_sigma)).sum(1)
                     + (2.0 * log_sigma + LOG_2PI).sum())
        return dict(loss=(nll + beta * kl).mean(), nll=nll, kl=kl, z=z, recon=recon)

    # --- evaluation (numpy in, numpy out) ----------------------------------------------------
    def _x(self, x) -> torch.Tensor:
        return torch.as_tensor(as_matrix(x, "x", self.input_dim), dtype=torch.float32)

    @torch.no_grad()
    def codes(self, x, *, rates: bool = False, seed: int | None = None, offset: int = 0):
        """Codes (N, K) of x (N, D) as numpy float64.

        Poisson: spike counts at temperature 0 drawn from the shared uniforms (design §2.2;
        input n uses stream (seed, offset + n), seed defaulting to the model's), or with
        ``rates`` the rates e^u. Gaussian: the posterior means μ.
        """
        xt = self._x(x)
        if self.kind == "gaussian":
            return self.posterior(xt)[0].double().numpy()
        u = self.posterior(xt).double()
        if rates:
            return torch.exp(u).numpy()
        from networks.noise import shared_uniforms
        from neurons.torch_step import poisson_counts

        xi = shared_uniforms(self.seed if seed is None else int(seed), 1, xt.shape[0],
                             self.n_latents, offset)[0]
        return poisson_counts(xi, torch.exp(u)).numpy()

    @torch.no_grad()
    def decode(self, codes) -> np.ndarray:
        """x̂ = Φ z: (N, K) codes → (N, D) numpy float64."""
        z = torch.as_tensor(as_matrix(codes, "codes", self.n_latents), dtype=torch.float64)
        return (z @ self.core.decoder.phi.detach().double().T).numpy()

    def reconstruct(self, x, **code_options) -> np.ndarray:
        """x̂ (N, D) of x (N, D): Φ z of the codes (spike counts / posterior means)."""
        return self.decode(self.codes(x, **code_options))

    def metrics(self, x, **code_options) -> dict:
        """``summary`` (mse, r2, sparsity, distance) of the codes of x (N, D); the Poisson
        VAE adds ``r2_rates`` and ``mse_rates`` (x̂ = Φ e^u) and ``mean_rate``."""
        codes = self.codes(x, **code_options)
        out = summary(x, self.decode(codes), codes)
        if self.kind == "poisson":
            rates = self.codes(x, rates=True)
            s = summary(x, self.decode(rates), rates)
            out.update(r2_rates=s["r2"], mse_rates=s["mse"], mean_rate=float(rates.mean()))
        return out


def train_amortized(train_dataset, *, kind: str, latents: int, epochs: int, seed: int = 0,
                    quick: bool = False, beta: float | None = None, batch: int = 100,
                    hidden: int = HIDDEN, kl_form: str = "exact", lr: float | None = None,
                    init_scale: float = INIT_SCALE, u0_init: float = U0_INIT,
                    sigma_init: float | str | None = None,
                    time_budget: float | None = None, progress: bool = True) -> AmortizedVAE:
    """Train an amortised ``kind`` VAE with K = ``latents`` on ``train_dataset``.

    train_dataset : ``train.data.Dataset`` (x (N, D) float32). epochs : passes over it
    (the schedules span them). batch : inputs per step (the trainer's default, 100).
    beta : β (default 1, the ELBO). u0_init : the prior's potentials start in U0_INIT ± 1
    (``U0_INIT``; Poisson only). lr : peak learning
    rate (default the trainer's, 2e-3). init_scale : the encoder's last layer's initial
    scale (``INIT_SCALE``). sigma_init : the initial σ, a number or "data" (the training
    pixels' std), as ``TrainConfig.sigma_init`` (default the trainer's, 1.0). time_budget : stop
    after this many minutes (the schedules still span ``epochs``). ``quick``: at most
    200 inputs, hidden width 64, at most 2 epochs.
    Returns the trained :class:`AmortizedVAE` (float32, eval mode) with ``history``:
    ``epoch_loss`` (mean loss per epoch), ``seconds`` (training wall time), ``epochs_done``.
    """
    from train.config import TrainConfig
    from train.noise import training_noise
    from train.trainer import init_sigma, lr_factor, schedule

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    x_np = getattr(train_dataset, "x", None)
    if x_np is None:
        raise ValueError("train_dataset must be a train.data.Dataset (with .x (N, D))")
    x_np = as_matrix(x_np, "train_dataset.x")
    for name, v in (("latents", latents), ("epochs", epochs), ("batch", batch)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    if quick:
        x_np, hidden, epochs = x_np[:QUICK_N], QUICK_HIDDEN, min(int(epochs), 2)
    n, d = x_np.shape
    batch = min(int(batch), n)
    x_all = torch.as_tensor(x_np, dtype=torch.float32)
    input_shape = tuple(getattr(train_dataset, "input_shape", (d,)))
    model = AmortizedVAE(d, int(latents), kind, input_shape=input_shape, hidden=hidden,
                         beta=beta, kl_form=kl_form, seed=seed, init_scale=init_scale,
                         u0_init=u0_init)
    cfg = TrainConfig(latents=int(latents), epochs=int(epochs), batch=batch, beta=model.beta,
                      beta_t_ref=None, kl_form=kl_form, seed=seed,
                      **({} if lr is None else dict(lr=float(lr))),
                      **({} if sigma_init is None else dict(sigma_init=sigma_init)))
    cfg.check()
    init_sigma(model.core, cfg.sigma_init, x_all)
    opt = torch.optim.Adamax(model.parameters(), lr=cfg.lr, betas=tuple(cfg.adam_betas),
                             eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
    per_epoch = n // batch
    total = per_epoch * int(epochs)
    gen = torch.Generator().manual_seed(int(seed))
    history = dict(epoch_loss=[], loss=[])
    t0 = time.perf_counter()
    model.train()
    with progress_bar(total=total, desc=f"amortized {kind}", unit="batch", enabled=progress) as bar:
        for epoch in range(int(epochs)):
            order = torch.randperm(n, generator=gen)
            sums = 0.0
            for b in range(per_epoch):
                it = epoch * per_epoch + b
                s = schedule(it, total, cfg)
                model.core.set_schedule(s["temperature"], s["clamp_u"], s["clamp_du"])
                for group in opt.param_groups:
                    group["lr"] = cfg.lr * lr_factor(it, total, cfg)
                idx = order[b * batch:(b + 1) * batch]
                if kind == "poisson":
                    noise = training_noise(seed, epoch, idx, model.n_latents,
                                           model.core.latent.width).step(0)
                else:
                    noise = torch.randn(len(idx), model.n_latents, generator=gen)
                res = model(x_all[idx], beta=s["beta"], noise=noise)
                opt.zero_grad(set_to_none=True)
                res["loss"].backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                loss = float(res["loss"].detach())
                if not math.isfinite(loss):
                    raise RuntimeError(f"amortized {kind} VAE: loss became {loss} at epoch "
                                       f"{epoch + 1}, batch {b}; lower the learning rate")
                history["loss"].append(loss)
                sums += loss
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.1f}")
            history["epoch_loss"].append(sums / max(per_epoch, 1))
            if time_budget is not None and time.perf_counter() - t0 > 60.0 * time_budget:
                break
    model.core.set_schedule(0.0)                 # evaluation: exact counts, final clamps
    model.eval()
    history.update(seconds=time.perf_counter() - t0, epochs_done=len(history["epoch_loss"]),
                   n_train=n, batch=batch, beta=model.beta, hidden=hidden)
    model.history = history
    return model
