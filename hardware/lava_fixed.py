"""The Lava fixed_pt backend: ``simulate(net, x, steps, backend="lava-fixed")``.

Quantizes the network (or takes ``quantized=``), writes the quantized file and
runs the Lava backend (``networks.lava``, isolated in its child process) with
``Loihi2SimCfg(select_tag="fixed_pt")``: the bit-accurate latent model
(``neurons.lava.poisson_latent``) and Lava's own fixed_pt Dense.  Under the same
seed (or explicit noise) it emits the integer emulator's (``backend="fixed"``)
spikes and potentials bit for bit.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from hardware.emulator import as_quantized
from hardware.quantize import save_quantized


def run(net, x, steps, *, seed=0, offset=0, noise=None, record=None, rate_metrics=False,
        progress=False, quantized=None, weight_bits=8, timeout=None):
    """Run the fixed-point network in Lava's CPU simulator; see ``networks.simulate``.

    Options: ``quantized`` (QuantizedNetwork or file; default ``net`` quantized at
    ``weight_bits``), ``timeout`` (s).  The topology is the folded one.
    """
    from networks import lava

    lava.check_lava()
    q = as_quantized(net, quantized, weight_bits)
    with tempfile.TemporaryDirectory(prefix="ipvae-lava-fixed-") as tmp:
        path = save_quantized(q, Path(tmp) / "quantized.npz")
        trace = lava.run(net, x, steps, seed=seed, offset=offset, noise=noise, record=record,
                         rate_metrics=rate_metrics, progress=progress, topology="folded",
                         timeout=timeout, fixed=path)
    trace.info.update(weight_bits=q.weight_bits, quantization=q.report,
                      noise="integer counter-based (neurons.fixed)")
    return trace
