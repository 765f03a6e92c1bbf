"""Loihi 2 resource report and the work per inference measured from a run's rasters.

``resource_report(q)`` counts what the folded fixed-point network occupies on
Loihi 2: neurons, synapses, synaptic memory, cores and chips, under the
assumptions in :data:`LOIHI2` (published per-chip figures; stated in the report).
``work_report(trace, q)`` counts what one inference costs, from the run's own
spike rasters: graded-spike messages, spikes, synaptic events, per step and up
to a given error level; energy only from per-event figures the user supplies.
"""
from __future__ import annotations

import math

import numpy as np

LOIHI2 = dict(
    cores_per_chip=128,
    neurons_per_core=8192,
    synaptic_memory_kib_per_core=128,
    neurons_per_chip=1_048_576,
    synapses_per_chip=120_000_000,
)
"""Loihi 2 limits the report assumes: 128 neuro-cores per chip, up to 8,192 neurons per
core (1M per chip), 120M synapses per chip, and the lower published per-core memory
figure (128 KiB) all given to synaptic weights."""

ASSUMPTIONS = (
    "Loihi 2: 128 neuro-cores per chip, <= 8,192 neurons per core, <= 120M synapses per "
    "chip; 128 KiB of synaptic memory per core (the lower published figure)",
    "dense weight storage: each stored synapse costs its mantissa bits, no index overhead; "
    "a synapse lives in the core of its post-synaptic latent, so a latent's whole fan-in "
    "(K - 1 recurrent + D feed-forward + 1 self) sits in its core",
    "the input x enters once per inference as D graded spikes (the drive is then constant: "
    "its synaptic events are counted once per input, not per step)",
    "one graded-spike message per latent and step with a nonzero count (payload = the count)",
)


def resource_report(q, *, limits: dict | None = None) -> dict:
    """Resources of the quantized network ``q`` (``hardware.quantize.QuantizedNetwork``).

    Returns a dict: neurons, input channels, synapses (recurrent, self, feed-forward,
    total, and nonzero), synaptic memory bits, latents per core, cores, chips,
    the limits and the assumptions.  Raises ValueError if one latent's fan-in does
    not fit one core's synaptic memory.
    """
    lim = dict(LOIHI2, **(limits or {}))
    k, d = q.n_latents, q.input_dim
    wb, sb = int(q.weight_bits), int(q.self_bits)
    syn = dict(recurrent=k * (k - 1), self_term=k, feedforward=k * d)
    syn["total"] = sum(syn.values())
    nonzero = dict(recurrent=int(np.count_nonzero(q.w_rec)),
                   self_term=int(np.count_nonzero(q.self_weights)),
                   feedforward=int(np.count_nonzero(q.w_ff)))
    nonzero["total"] = sum(nonzero.values())
    fan_in_bits = (k - 1) * wb + d * wb + sb
    memory_bits = syn["recurrent"] * wb + syn["feedforward"] * wb + syn["self_term"] * sb
    core_bits = lim["synaptic_memory_kib_per_core"] * 1024 * 8
    if fan_in_bits > core_bits:
        raise ValueError(f"one latent's fan-in ({fan_in_bits} bits) exceeds a core's synaptic "
                         f"memory ({core_bits} bits)")
    per_core = min(lim["neurons_per_core"], core_bits // fan_in_bits)
    cores = math.ceil(k / per_core)
    chips = max(math.ceil(cores / lim["cores_per_chip"]),
                math.ceil(syn["total"] / lim["synapses_per_chip"]),
                math.ceil(k / lim["neurons_per_chip"]))
    return dict(neurons=k, input_channels=d, synapses=syn, nonzero_synapses=nonzero,
                weight_bits=wb, self_bits=sb, count_bits=int(q.count_bits),
                synaptic_memory_bits=memory_bits,
                synaptic_memory_kib=memory_bits / 8 / 1024,
                fan_in_bits_per_latent=fan_in_bits, latents_per_core=per_core, cores=cores,
                chips=chips, limits=lim, assumptions=list(ASSUMPTIONS))


def first_step_at(mse: np.ndarray, level: float):
    """The first step t whose mean MSE is ≤ ``level`` (None if never)."""
    hit = np.flatnonzero(np.asarray(mse) <= level)
    return int(hit[0]) if hit.size else None


def work_report(trace, q, *, error_level: float | None = None,
                energy_per_synop: float | None = None,
                energy_per_message: float | None = None) -> dict:
    """Work per inference from ``trace``'s rasters (all of its steps must be recorded).

    Per step and input: messages (latents with a nonzero count), spikes (Σ counts),
    synaptic events (each message reaches K − 1 recurrent synapses and the self-term:
    K per message); per input: D input messages and K·D feed-forward events once.
    ``error_level`` : also the work up to the first step whose mean MSE ≤ it.
    Energy (joules) only when per-event figures are given.
    """
    if len(trace.steps) != trace.n_steps:
        raise ValueError("the work report needs every step recorded (record=None)")
    k, d = q.n_latents, q.input_dim
    z = trace.spikes
    messages = (z > 0).sum(axis=2).astype(np.float64)   # (T, N)
    spikes = z.sum(axis=2, dtype=np.int64).astype(np.float64)
    synops = messages * k
    per_step = dict(messages=float(messages.mean()), spikes=float(spikes.mean()),
                    synaptic_events=float(synops.mean()))
    once = dict(input_messages=d, feedforward_events=k * d)
    steps = trace.n_steps
    total = dict(messages=float(messages.sum(0).mean()) + d,
                 spikes=float(spikes.sum(0).mean()),
                 synaptic_events=float(synops.sum(0).mean()) + k * d)
    out = dict(steps=steps, inputs=int(z.shape[1]), per_step=per_step, per_inference_once=once,
               per_inference=total)
    if error_level is not None:
        t = first_step_at(trace.mse(), error_level)
        out["error_level"] = dict(level=float(error_level), step=t)
        if t is not None:
            out["error_level"].update(
                messages=float(messages[:t + 1].sum(0).mean()) + d,
                synaptic_events=float(synops[:t + 1].sum(0).mean()) + k * d)
    if energy_per_synop is not None or energy_per_message is not None:
        e_syn = energy_per_synop or 0.0
        e_msg = energy_per_message or 0.0
        out["energy_j"] = dict(
            per_step=per_step["synaptic_events"] * e_syn + per_step["messages"] * e_msg,
            per_inference=total["synaptic_events"] * e_syn + total["messages"] * e_msg,
            per_synop=energy_per_synop, per_message=energy_per_message)
    return out


def format_table(resources: dict) -> str:
    """The resource report as a printable table."""
    syn = resources["synapses"]
    rows = [
        ("neurons (latents)", f"{resources['neurons']:,}"),
        ("input channels", f"{resources['input_channels']:,}"),
        ("synapses recurrent / self / feed-forward",
         f"{syn['recurrent']:,} / {syn['self_term']:,} / {syn['feedforward']:,}"),
        ("synapses total (nonzero)",
         f"{syn['total']:,} ({resources['nonzero_synapses']['total']:,})"),
        ("weight bits / self bits / count bits",
         f"{resources['weight_bits']} / {resources['self_bits']} / {resources['count_bits']}"),
        ("synaptic memory", f"{resources['synaptic_memory_bits']:,} bits "
                            f"({resources['synaptic_memory_kib']:.1f} KiB)"),
        ("latents per core", f"{resources['latents_per_core']:,}"),
        ("cores", f"{resources['cores']:,}"),
        ("chips", f"{resources['chips']:,}"),
    ]
    width = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{width}}  {b}" for a, b in rows)
