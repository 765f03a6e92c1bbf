"""Fixed point (the Loihi path) beside its float counterparts, same run, D=784, K=512.

Rows:

- the integer emulator (``simulate(backend="fixed")``) against the float reference
  (``backend="reference"``): sample-steps/s at N = 64 inputs and steps/s at N = 1,
  planted input; the quantization is done once, outside the timing.  Target:
  emulator ≥ 0.5× the reference's sample-steps/s.
- Lava fixed_pt: iP-VAE ``simulate(backend="lava-fixed")`` against Lava's own
  fixed_pt ``RingBuffer → Dense(784→512) → LIF(512)`` of the same sizes (and
  the floating_pt iP-VAE for scale), timed as ``bench_lava`` times its rows
  (run time after compile + start).  Target: lava-fixed ≥ 0.7× fixed_pt Dense+LIF.

Best of ``REPEATS`` interleaved runs (the machine is shared).
"""
from __future__ import annotations

import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from common import lava_backend_run, lava_summary, load_average, pick, run_json, times

D, K, ACTIVE = pick(784, 32), pick(512, 24), pick(20, 3)
N_BATCH, T_EMU = pick(64, 4), pick(64, 4)
LAVA_STEPS = pick(1000, 200)
REPEATS = pick(2, 1)
LAVA_ROWS = pick(("dense_lif_fixed", "lava-fixed", "lava"), ("dense_lif_fixed", "lava-fixed"))

DENSE_LIF_FIXED = textwrap.dedent("""
    import json, sys
    import numpy as np
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.source import RingBuffer
    from lava.proc.lif.process import LIF
    from hardware.quantize import load_quantized
    from neurons.fixed import input_payload

    q = load_quantized(sys.argv[1])
    steps = int(sys.argv[2])
    x = np.load(sys.argv[1] + ".x.npy")
    src = RingBuffer(data=input_payload(x[None], q.x_frac)[0][0][:, None].astype(np.int32))
    dense = Dense(weights=q.w_ff.astype(np.int32), weight_exp=q.ff_exp - q.x_frac,
                  num_weight_bits=q.weight_bits, num_message_bits=24)
    lif = LIF(shape=(K,), du=400, dv=400, vth=100, bias_mant=0)
    src.s_out.connect(dense.s_in)
    dense.a_out.connect(lif.a_in)
    lif.s_out.flag_external_pipe(256)  # read by the host, as simulate reads its states
    cfg = Loihi2SimCfg(select_tag="fixed_pt")
    from benchmarks.common import timed_lava_run
    from networks.lava_child import cpu_seconds
    print(json.dumps(timed_lava_run(lif, steps, [lif.s_out], cfg, cpu_seconds)))
""").replace("(K,)", f"({K},)")


def _emulator_rows(net, x1, xb, q) -> list[tuple[str, float, float]]:
    from networks import simulate

    runs = {("reference", 1): [], ("reference", N_BATCH): [], ("fixed", 1): [],
            ("fixed", N_BATCH): []}
    for backend in ("reference", "fixed"):  # warm-up (compiled kernels, tables)
        simulate(net, x1, 2, backend=backend, **({"quantized": q} if backend == "fixed" else {}))
    for _ in range(REPEATS + 1):
        for (backend, n) in runs:
            x = x1 if n == 1 else xb
            opts = {"quantized": q} if backend == "fixed" else {}
            t = time.perf_counter()
            simulate(net, x, T_EMU, backend=backend, record=[T_EMU - 1], **opts)
            runs[(backend, n)].append(n * T_EMU / (time.perf_counter() - t))
    return {key: max(v) for key, v in runs.items()}


def _dense_lif_fixed(q_path: str) -> dict:
    return run_json(["-c", DENSE_LIF_FIXED, q_path, str(LAVA_STEPS + 1)],
                    "fixed_pt Dense+LIF bench", timeout=600)


def bench() -> str:
    from hardware.quantize import quantize, save_quantized
    from networks import planted_inputs, planted_network

    net, x1, _ = planted_network(D, K, ACTIVE, seed=0, n_inputs=1)
    xb, _ = planted_inputs(net, N_BATCH, ACTIVE, seed=1)
    t = time.perf_counter()
    q = quantize(net)
    quantize_s = time.perf_counter() - t
    emu = _emulator_rows(net, x1, xb, q)

    lava = {name: [] for name in LAVA_ROWS}
    with tempfile.TemporaryDirectory(prefix="ipvae-bench-fixed-") as tmp:
        q_path = str(save_quantized(q, Path(tmp) / "q.npz"))
        np.save(q_path + ".x.npy", x1[0])
        runs = {"dense_lif_fixed": lambda: _dense_lif_fixed(q_path),
                "lava-fixed": lambda: lava_backend_run(net, x1, LAVA_STEPS, "lava-fixed",
                                                       quantized=q),
                "lava": lambda: lava_backend_run(net, x1, LAVA_STEPS, "lava")}
        for _ in range(REPEATS):
            for name in lava:
                lava[name].append(runs[name]())

    def best(name):
        return lava_summary(lava[name], cpu="min")

    base, _, base_cpu = best("dense_lif_fixed")
    ratio_b = emu[("fixed", N_BATCH)] / emu[("reference", N_BATCH)]
    ratio_1 = emu[("fixed", 1)] / emu[("reference", 1)]
    lava_ratio = best("lava-fixed")[0] / base
    lines = [
        f"## Fixed point beside float (D={D}, K={K}, planted input, {ACTIVE} active units)",
        "",
        f"Best of {REPEATS + 1} (emulator) / {REPEATS} (Lava) interleaved runs; quantization "
        f"(8 bits) took {quantize_s:.2f} s, once.",
        "",
        "| run | sample-steps/s | × float counterpart |",
        "| --- | ---: | ---: |",
        f"| reference (float64), N = {N_BATCH} | {emu[('reference', N_BATCH)]:,.0f} | 1 |",
        f"| integer emulator, N = {N_BATCH} | {emu[('fixed', N_BATCH)]:,.0f} | {ratio_b:.2f} |",
        f"| reference (float64), N = 1 | {emu[('reference', 1)]:,.0f} | 1 |",
        f"| integer emulator, N = 1 | {emu[('fixed', 1)]:,.0f} | {ratio_1:.2f} |",
        "",
        "| Lava network | Lava steps/s | × fixed_pt Dense+LIF | CPU µs / Lava step "
        "| CPU × Dense+LIF | compile + start (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    labels = {"dense_lif_fixed": f"Lava fixed_pt RingBuffer → Dense({D}→{K}) → LIF({K}), "
                                 "spikes read by an external pipe",
              "lava-fixed": "iP-VAE folded, simulate(backend='lava-fixed')",
              "lava": "iP-VAE folded, simulate(backend='lava') (floating_pt)"}
    for name in lava:
        label = labels[name]
        rate, comp, cpu_us = best(name)
        lines.append(f"| {label} | {rate:,.0f} | {rate / base:.2f} | {cpu_us:,.0f} | "
                     f"{times(cpu_us, base_cpu)} | {comp:.2f} |")
    lines += ["", f"Emulator at {ratio_b:.2f}× the reference's sample-steps/s (N = {N_BATCH}; "
              f"target 0.5× {'met' if ratio_b >= 0.5 else 'NOT met'}); lava-fixed at "
              f"{lava_ratio:.2f}× fixed_pt Dense+LIF (target 0.7× "
              f"{'met' if lava_ratio >= 0.7 else 'NOT met'}); {load_average()}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(bench())
