"""The one interface every backend answers to: ``simulate(net, x, steps, backend=...)``.

A backend is a module with a ``run(net, x, steps, *, seed, offset, noise, record,
rate_metrics, progress, **options) -> Trace`` function (design §4.2), imported
only when asked for, so that choosing one never loads another's simulator.  Its
keyword-only parameters beyond the common ones are its options.

Everything a backend shares is validated here, once, before any work: the
backend name, ``steps``, the shared-noise key (``seed``, ``offset`` and the
last input's index), the input, explicit noise, ``record=`` and the option
names.  So the same bad input gives the same error on every backend (the
contract suite checks it).
"""
from __future__ import annotations

import importlib
import inspect
import operator

import numpy as np

from networks.noise import check_key, check_noise
from networks.trace import Trace, record_steps

BACKENDS = {
    "reference": "networks.reference",
    "lava": "networks.lava",
    "brian2": "networks.brian",
    "fixed": "hardware.emulator",
    "lava-fixed": "hardware.lava_fixed",
}
"""Backend name → module implementing ``run``."""

COMMON = ("seed", "offset", "noise", "record", "rate_metrics", "progress")
"""Keyword arguments every backend's ``run`` takes; the rest of its keywords are its options."""


def available_backends() -> list[str]:
    """Names ``simulate`` accepts (whether their simulator is installed or not)."""
    return list(BACKENDS)


def backend_options(backend: str) -> tuple[str, ...]:
    """The names of the options ``backend`` takes beyond ``simulate``'s own arguments."""
    run = _module(backend).run
    return tuple(name for name, p in inspect.signature(run).parameters.items()
                 if p.kind is p.KEYWORD_ONLY and name not in COMMON)


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
    seed, offset : the shared noise (design §2.2): input n uses the stream keyed
        (seed, offset + n); both integers, and seed, offset + N − 1 < 2**63.
    noise : optional explicit uniforms ξ (T, N, K) in [0, 1), replacing the
        shared streams.
    record : steps to keep spikes/u/recon for (default all); per-step metrics
        are always kept.
    rate_metrics : also compute the rate read-out error Φe^u each step.
    progress : show a progress bar (on a terminal only).
    options : the backend's own (:func:`backend_options`; e.g. ``topology=`` for
        lava, ``target=`` for brian2).

    Returns
    -------
    Trace

    Raises
    ------
    ValueError naming the problem, before any simulation starts.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}")
    steps = _integer("steps", steps)
    seed = _integer("seed", seed)
    offset = _integer("offset", offset)
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    x = net.check_input(x)
    check_key(seed, offset + max(x.shape[0] - 1, 0))
    if noise is not None:
        noise = check_noise(noise, steps, x.shape[0], net.n_latents)
    record = record_steps(record, steps)
    allowed = backend_options(backend)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        takes = f"its options are {', '.join(allowed)}" if allowed else "it takes no options"
        raise ValueError(f"backend {backend!r} does not take {', '.join(unknown)}; {takes}")
    return _module(backend).run(net, x, steps, seed=seed, offset=offset, noise=noise,
                                record=record, rate_metrics=bool(rate_metrics),
                                progress=bool(progress), **options)


def _module(backend: str):
    return importlib.import_module(BACKENDS[backend])


def _integer(name: str, value) -> int:
    """``value`` as a Python int (numpy integers included); ValueError for anything else."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
