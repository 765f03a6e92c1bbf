"""The one interface every backend answers to: ``simulate(net, x, steps, backend=...)``.

Backends are modules with a ``run(net, x, steps, *, seed, offset, noise,
record, rate_metrics, progress, **options) -> Trace`` function, imported only
when asked for, so that choosing one never loads another's simulator.
"""
from __future__ import annotations

import importlib
import operator

from networks.noise import check_noise
from networks.trace import Trace

BACKENDS = {
    "reference": "networks.reference",
    "lava": "networks.lava",
    "brian2": "networks.brian",
}
"""Backend name → module implementing ``run``."""


def available_backends() -> list[str]:
    """Names ``simulate`` accepts (whether their simulator is installed or not)."""
    return list(BACKENDS)


def simulate(net, x, steps: int, backend: str = "reference", seed: int = 0, offset: int = 0,
             noise=None, record=None, rate_metrics: bool = False, progress: bool = False,
             **options) -> Trace:
    """Run spiking inference of ``net`` on inputs ``x`` for ``steps`` steps.

    Parameters
    ----------
    net : IPVAENetwork.
    x : (N, D), (D,) or (N, *input_shape) inputs.
    steps : T, number of inference steps.
    backend : one of :func:`available_backends`.
    seed, offset : the shared noise (DESIGN.md §2): sample n uses the stream
        keyed by (seed, offset + n).
    noise : optional explicit uniforms ξ (T, N, K) in [0, 1), replacing the
        shared streams.
    record : steps to keep spikes/u/recon for (default all); per-step metrics
        are always kept.
    rate_metrics : also compute the rate read-out error Φe^u each step.
    progress : show a tqdm progress bar.
    options : backend-specific (e.g. ``topology=`` for lava, ``target=`` for brian2).

    Returns
    -------
    Trace
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}")
    try:
        steps = operator.index(steps)
        seed, offset = operator.index(seed), operator.index(offset)
    except TypeError:
        raise ValueError("steps, seed and offset must be integers") from None
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if seed < 0 or offset < 0:
        raise ValueError("seed and offset must be non-negative")
    x = net.check_input(x)
    if noise is not None:
        noise = check_noise(noise, steps, x.shape[0], net.n_latents)
    module = importlib.import_module(BACKENDS[backend])
    return module.run(net, x, steps, seed=seed, offset=offset, noise=noise, record=record,
                      rate_metrics=rate_metrics, progress=progress, **options)
