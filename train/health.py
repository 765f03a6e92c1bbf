"""Collapse detection: is the model learning? Measured on a held-out batch each epoch.

A collapsed iP-VAE has silent latents or a reconstruction no better than the
input's mean, while the training loss may still fall (σ absorbs the error:
pixels that are always 0 drive log σ to its floor).  :func:`held_out_health`
runs the model as deployed (true Poisson counts, temperature 0) for T_train
steps on held-out inputs and reports:

- ``active``: the share of latents that fire at least once (any input, any step);
- ``r2``: R² from spikes at the last step, averaged over inputs (design §7);
- ``sigma_floor``: the share of pixels whose log σ is at its lower limit;
- ``flat``: the reconstruction's spread relative to the input's (mean over
  inputs of var(x̂)/var(x) across pixels);

and ``collapsed`` with the ``reasons``: no latent fires, R² ≤ 0, or σ at its
floor on most pixels with a flat reconstruction.
"""
from __future__ import annotations

import numpy as np
import torch

from networks.network import LOG_SIGMA_LIMIT
from networks.noise import shared_uniforms

SIGMA_FLOOR_MARGIN = 0.1
"""log σ within this of −LOG_SIGMA_LIMIT counts as at the floor."""
MOST_PIXELS = 0.5
FLAT = 0.01
"""A reconstruction whose spread is below this share of the input's is flat."""


def held_out_health(model, x: torch.Tensor, steps: int, seed: int = 0) -> dict:
    """Health of ``model`` on held-out inputs x (N, D) over ``steps`` inference steps.

    Runs with exact counts from the shared uniforms of ``seed`` and restores the
    model's sampler temperature.  Returns a dict of plain numbers: active, r2,
    zeros (share of zero counts at the last step), sigma_floor, flat, collapsed
    (bool), reasons (list of str).
    """
    lat = model.latent
    saved = (lat.temperature, lat.clamp_u, lat.clamp_du)
    n, k = x.shape[0], model.n_latents
    xi = torch.as_tensor(shared_uniforms(seed, steps + 1, n, k))
    try:
        model.set_schedule(0.0, lat.clamp_u, lat.clamp_du)
        with torch.no_grad():
            out = model(x, steps, xi, r2_steps="last", keep_trajectory=True)
            recon = model.decoder(out["z"][-1])
            log_sigma = model.log_sigma
    finally:
        model.set_schedule(*saved)
    z = out["z"][1:]
    active = float((z > 0.5).any(dim=0).any(dim=0).double().mean())
    r2 = float(out["r2"][-1].mean())
    zeros = float(out["zeros"][-1].mean())
    floor = float((log_sigma <= -LOG_SIGMA_LIMIT + SIGMA_FLOOR_MARGIN).double().mean())
    var_x = x.double().var(dim=1).clamp_min(1e-12)
    flat = float((recon.double().var(dim=1) / var_x).mean())
    reasons = []
    if active == 0.0:
        reasons.append("no latent fires")
    if not r2 > 0.0:
        reasons.append(f"held-out R² {r2:.3f} ≤ 0")
    if floor > MOST_PIXELS and flat < FLAT:
        reasons.append(f"σ at its floor on {100 * floor:.0f}% of pixels with a flat "
                       f"reconstruction")
    return dict(active=active, r2=r2, zeros=zeros, sigma_floor=floor, flat=flat,
                collapsed=bool(reasons), reasons=reasons)


def describe(h: dict) -> str:
    """One line: 'held-out R² 0.412, 37% of latents fire' (+ 'COLLAPSED: reasons')."""
    line = f"held-out R² {h['r2']:.3f}, {100 * h['active']:.0f}% of latents fire"
    if h["collapsed"]:
        line += " — COLLAPSED: " + "; ".join(h["reasons"])
    return line


def held_out_inputs(test, n: int) -> torch.Tensor:
    """The first n inputs of a data set as a float32 (n', D) tensor (n' ≤ n)."""
    return torch.as_tensor(np.asarray(test.x[:n], dtype=np.float32))
