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

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
D, K, ACTIVE = 784, 512, 20
N_BATCH, T_EMU = 64, 64
LAVA_STEPS = int(os.environ.get("IPVAE_BENCH_LAVA_STEPS", 1000))
REPEATS = int(os.environ.get("IPVAE_BENCH_REPEATS", 2))

DENSE_LIF_FIXED = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.dense.process import Dense
    from lava.proc.io.extractor import Extractor, PyLoihiExtractorModel
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
    out = Extractor(shape=(K,), buffer_size=256)
    lif.s_out.connect(out.in_port)
    cfg = Loihi2SimCfg(select_tag="fixed_pt",
                       exception_proc_model_map={Extractor: PyLoihiExtractorModel})
    from networks.lava_child import cpu_seconds
    t0 = time.perf_counter()
    try:
        lif.run(condition=RunSteps(num_steps=steps, blocking=False), run_cfg=cfg)
        t1 = time.perf_counter()
        c1 = cpu_seconds()
        spikes = 0.0
        for _ in range(steps):
            spikes += out.receive().sum()
        lif.wait()
        t2 = time.perf_counter()
        c2 = cpu_seconds()
    finally:
        lif.stop()
    print(json.dumps(dict(compile_s=t1 - t0, run_s=t2 - t1, cpu_s=c2 - c1, lava_steps=steps,
                          spikes=float(spikes))))
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
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", DENSE_LIF_FIXED, q_path, str(LAVA_STEPS + 1)],
                          env=env, capture_output=True, text=True, timeout=600,
                          start_new_session=True)
    if done.returncode != 0:
        raise RuntimeError(f"fixed_pt Dense+LIF bench failed: "
                           f"{done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _lava_backend(net, x, backend: str, q=None) -> dict:
    from networks import simulate

    opts = {"quantized": q} if backend == "lava-fixed" else {}
    trace = simulate(net, x, LAVA_STEPS, backend=backend, seed=0, **opts)
    return dict(compile_s=trace.info["compile_s"], run_s=trace.info["run_s"],
                cpu_s=trace.info["cpu_s"], lava_steps=LAVA_STEPS + 1)


def bench() -> str:
    from hardware.quantize import quantize, save_quantized
    from networks import planted_inputs, planted_network

    net, x1, _ = planted_network(D, K, ACTIVE, seed=0, n_inputs=1)
    xb, _ = planted_inputs(net, N_BATCH, ACTIVE, seed=1)
    t = time.perf_counter()
    q = quantize(net)
    quantize_s = time.perf_counter() - t
    emu = _emulator_rows(net, x1, xb, q)

    lava = {"dense_lif_fixed": [], "lava-fixed": [], "lava": []}
    with tempfile.TemporaryDirectory(prefix="ipvae-bench-fixed-") as tmp:
        q_path = str(save_quantized(q, Path(tmp) / "q.npz"))
        np.save(q_path + ".x.npy", x1[0])
        for _ in range(REPEATS):
            lava["dense_lif_fixed"].append(_dense_lif_fixed(q_path))
            lava["lava-fixed"].append(_lava_backend(net, x1, "lava-fixed", q))
            lava["lava"].append(_lava_backend(net, x1, "lava"))

    def best(name):
        return max(r["lava_steps"] / r["run_s"] for r in lava[name]), \
            min(r["compile_s"] for r in lava[name]), \
            min(r["cpu_s"] / r["lava_steps"] for r in lava[name]) * 1e6

    base, _, base_cpu = best("dense_lif_fixed")
    ratio_b = emu[("fixed", N_BATCH)] / emu[("reference", N_BATCH)]
    ratio_1 = emu[("fixed", 1)] / emu[("reference", 1)]
    lava_ratio = best("lava-fixed")[0] / base
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
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
    labels = {"dense_lif_fixed": "Lava fixed_pt RingBuffer → Dense(784→512) → LIF(512)",
              "lava-fixed": "iP-VAE folded, simulate(backend='lava-fixed')",
              "lava": "iP-VAE folded, simulate(backend='lava') (floating_pt)"}
    for name, label in labels.items():
        rate, comp, cpu_us = best(name)
        lines.append(f"| {label} | {rate:,.0f} | {rate / base:.2f} | {cpu_us:,.0f} | "
                     f"{cpu_us / base_cpu:.2f} | {comp:.2f} |")
    lines += ["", f"Emulator at {ratio_b:.2f}× the reference's sample-steps/s (N = {N_BATCH}; "
              f"target 0.5× {'met' if ratio_b >= 0.5 else 'NOT met'}); lava-fixed at "
              f"{lava_ratio:.2f}× fixed_pt Dense+LIF (target 0.7× "
              f"{'met' if lava_ratio >= 0.7 else 'NOT met'}); 1-min load average {load:.1f} "
              f"on {os.cpu_count()} cores.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(bench())
