"""Lava floating_pt speed at D=784, K=512: the iP-VAE network vs Lava's own Dense+LIF.

Every Lava network runs in its own child process (Lava's runtime is never
imported here) and is timed the same way: a non-blocking ``run`` of S Lava
steps (its return = compile + start), then the host drains its outputs
(external pipes or Extractors) every step until the run ends (steps/s = S / that
time), and the CPU time (user + system) of the child and of all its Lava
processes over the run.  Rows:

- Lava ``RingBuffer(x) → Dense(784→512) → LIF(512)``, the baseline, with BLAS
  limited to one thread as the iP-VAE backend runs it
  (``networks.lava_child.BLAS_THREADS``): the anchor reads LIF's spikes through an
  external pipe (``flag_external_pipe``, Lava's host channel, as ``simulate`` reads
  its states), a second row through an Extractor process, a third with numpy's
  default threads;
- iP-VAE ``folded`` through ``simulate(backend="lava")`` (constant drive from the
  input file, Dense(−ΦᵀΦ/σ²) recurrence run event-driven by
  ``neurons.lava.dense_events``, ``state_out`` read by an external pipe), on the
  planted input (20 active units at ~50–150 spikes/step) and on a low-rate input
  (the same scaled by ``LOW_RATE_SCALE``);
- iP-VAE ``folded`` in a user's graph: ``RingBuffer(x) → IPVAENet.x_in`` (so a
  Dense(Φᵀ/σ²) computes the drive every step, like the baseline's Dense) with an
  Extractor each on ``s_out`` and ``u_out``, Lava's own Dense models throughout;
- iP-VAE ``error-units`` through ``simulate`` (2 Lava steps per inference step).

Each configuration runs ``REPEATS`` times, interleaved (a round runs every row
once); the best rate and the median CPU time per step are kept (the machine is
shared: the CPU time is the steadier figure, and its median the steadier
statistic).  The verdict reads the *paired* ratio: in each round a row's rate over
the anchor's rate of the same round, the median over the rounds (a slow spell of
the machine then slows both sides of a ratio, where a ratio of two bests compares
the luckiest run of each).  A second table
splits the CPU time per step by Lava process (the profile) for the baseline and
for the graph ``simulate`` builds (``folded_file``: ``IPVAENet`` with its
inputs from a file and ``state_out`` read by an external pipe).
"""
from __future__ import annotations

import statistics
import tempfile
import textwrap
from pathlib import Path

import numpy as np
from common import blas, lava_backend_run, lava_summary, load_average, pick, run_json, times

D, K = pick(784, 32), pick(512, 24)
STEPS = pick(2000, 200)
"""Inference steps per timed run (error-units: half, i.e. the same number of Lava steps)."""
REPEATS = pick(9, 1)
KINDS = pick(("dense_lif_pipe", "folded", "dense_lif", "dense_lif_default", "folded_low",
              "folded_file", "folded_port", "error-units"),
             ("dense_lif_pipe", "folded", "folded_file"))
"""The rows run (quick mode: the baseline, simulate's folded network and its graph's profile)."""
LOW_RATE_SCALE = 0.05
"""The second folded row scales the planted input by this (active rates ~3–8 spikes/step
instead of ~50–150), since the inverse CDF's cost grows with the counts."""

GRAPH_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import multiprocessing as mp
    import numpy as np
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.magma.runtime.message_infrastructure.multiprocessing import MultiProcessing
    from lava.proc.dense.process import Dense
    from lava.proc.io.extractor import Extractor, PyLoihiExtractorModel
    from lava.proc.io.source import RingBuffer
    from lava.proc.lif.process import LIF

    kind, net_path, steps, blas = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if blas:
        from threadpoolctl import threadpool_limits
        threadpool_limits(blas, user_api="blas")  # inherited by Lava's forked processes

    # Name each Lava process after its ProcessModel (or runtime service) for the profile.
    names = {}
    build_actor = MultiProcessing.build_actor
    def named_build_actor(self, target_fn, builder, exception_q=None):
        actor = build_actor(self, target_fn, builder, exception_q)
        model = getattr(builder, "proc_model", None) or getattr(builder, "rs_class", None)
        names[actor.pid] = getattr(model, "__name__", type(builder).__name__)
        return actor
    MultiProcessing.build_actor = named_build_actor

    def cpu_by_process():
        tick, cpu = os.sysconf("SC_CLK_TCK"), {}
        for child in mp.active_children():
            try:
                with open(f"/proc/{child.pid}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            name = names.get(child.pid, "other")
            cpu[name] = cpu.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
        cpu["host (drains the outputs)"] = sum(os.times()[:2])
        return cpu

    from networks import load_network
    net = load_network(net_path)
    x = np.load(net_path + ".x.npy")
    outs = []
    if kind in ("dense_lif", "dense_lif_pipe"):
        src = RingBuffer(data=x[:, None])
        dense = Dense(weights=(net.phi / net.sigma2[:, None]).T, num_message_bits=24)
        lif = LIF(shape=(net.n_latents,), du=0.1, dv=0.1, vth=1.0)
        src.s_out.connect(dense.s_in)
        dense.a_out.connect(lif.a_in)
        if kind == "dense_lif_pipe":  # the host reads LIF's spikes itself, as simulate does
            lif.s_out.flag_external_pipe(256)
            outs.append(lif.s_out)
        else:
            outs.append(Extractor(shape=(net.n_latents,), buffer_size=256))
            lif.s_out.connect(outs[0].in_port)
        top, n_steps = lif, steps
    elif kind == "folded_port":
        from neurons.lava.ipvae_net.process import IPVAENet
        src = RingBuffer(data=x[:, None])
        top = IPVAENet(net, steps=steps - 1, topology="folded", seed=0)
        src.s_out.connect(top.x_in)
        outs = [Extractor(shape=(net.n_latents,), buffer_size=256) for _ in range(2)]
        top.s_out.connect(outs[0].in_port)
        top.u_out.connect(outs[1].in_port)
        n_steps = top.period
    else:  # folded_file: the graph networks.lava_child builds
        from neurons.lava.ipvae_net.process import IPVAENet
        np.save(net_path + ".x1.npy", x[None])
        top = IPVAENet(net, steps=steps - 1, topology="folded", seed=0,
                       inputs_path=net_path + ".x1.npy")
        top.state_out.flag_external_pipe(256)
        outs = [top.receive_state]
        n_steps = top.period
    models = {Extractor: PyLoihiExtractorModel}
    if kind == "folded_file":  # and the event-driven recurrent Dense, as in simulate
        from neurons.lava.dense_events import PyDenseEventModelFloat
        models[Dense] = PyDenseEventModelFloat
    cfg = Loihi2SimCfg(select_tag="floating_pt", select_sub_proc_model=True,
                       exception_proc_model_map=models)
    from benchmarks.common import timed_lava_run
    print(json.dumps(timed_lava_run(top, n_steps, outs, cfg, cpu_by_process)))
""")


def _graph(kind: str, net_path: str, steps: int, blas_threads: int) -> dict:
    """Run one graph of GRAPH_SCRIPT in a child; blas_threads 0 leaves numpy's default."""
    return run_json(["-c", GRAPH_SCRIPT, kind, net_path, str(steps), str(blas_threads)],
                    f"{kind} bench", timeout=600)


def _profile(runs_by_kind: dict, labels: dict) -> list[str]:
    """Markdown table: CPU µs per Lava step of each Lava process, for the run of each
    kind with the median total."""
    best = {kind: sorted(runs, key=lambda r: r["cpu_s"] / r["lava_steps"])[len(runs) // 2]
            for kind, runs in runs_by_kind.items()}
    names = sorted({name for r in best.values() for name in r["by_process"]},
                   key=lambda name: (name.startswith("host"), name))
    lines = ["| process | " + " | ".join(labels[k] for k in best) + " |",
             "| --- |" + " ---: |" * len(best)]
    for name in names:
        cells = []
        for r in best.values():
            cpu = r["by_process"].get(name)
            cells.append("" if cpu is None else f"{1e6 * cpu / r['lava_steps']:,.0f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    totals = [f"**{1e6 * r['cpu_s'] / r['lava_steps']:,.0f}**" for r in best.values()]
    lines.append("| **total** | " + " | ".join(totals) + " |")
    return lines


def bench() -> str:
    from networks import planted_network, save_network
    from networks.lava_child import BLAS_THREADS

    net, x, _ = planted_network(D, K, 20, seed=0, n_inputs=1)
    runs = {
        "dense_lif_pipe": lambda: _graph("dense_lif_pipe", net_path, STEPS + 1, BLAS_THREADS),
        "dense_lif": lambda: _graph("dense_lif", net_path, STEPS + 1, BLAS_THREADS),
        "folded": lambda: lava_backend_run(net, x, STEPS, "lava", topology="folded"),
        "dense_lif_default": lambda: _graph("dense_lif", net_path, STEPS + 1, 0),
        "folded_low": lambda: lava_backend_run(net, LOW_RATE_SCALE * x, STEPS, "lava",
                                               topology="folded"),
        "folded_file": lambda: _graph("folded_file", net_path, STEPS + 1, BLAS_THREADS),
        "folded_port": lambda: _graph("folded_port", net_path, STEPS + 1, BLAS_THREADS),
        "error-units": lambda: lava_backend_run(net, x, STEPS // 2, "lava",
                                                topology="error-units"),
    }
    rows = {name: [] for name in runs if name in KINDS}
    with tempfile.TemporaryDirectory(prefix="ipvae-bench-lava-") as tmp:
        net_path = str(Path(tmp) / "net.npz")
        save_network(net, net_path)
        np.save(net_path + ".x.npy", x[0])
        for _ in range(REPEATS):
            for name in rows:
                rows[name].append(runs[name]())

    def best(name):
        return lava_summary(rows[name], cpu="median")

    def paired(name):
        """(median, least, largest) over the rounds of the row's rate / the anchor's."""
        r = sorted((a["lava_steps"] / a["run_s"]) / (b["lava_steps"] / b["run_s"])
                   for a, b in zip(rows[name], rows["dense_lif_pipe"]))
        return statistics.median(r), r[0], r[-1]

    base, _, base_cpu = best("dense_lif_pipe")
    labels = {
        "dense_lif_pipe": f"Lava Dense({D}→{K}) + LIF({K}), RingBuffer source, spikes read "
                          f"by an external pipe, BLAS {BLAS_THREADS} thread (the anchor)",
        "dense_lif": f"Lava Dense({D}→{K}) + LIF({K}), spikes read by an Extractor, "
                     f"BLAS {BLAS_THREADS} thread",
        "dense_lif_default": f"Lava Dense({D}→{K}) + LIF({K}), numpy's default BLAS threads",
        "folded": "iP-VAE folded, simulate(backend='lava'), planted input",
        "folded_low": f"iP-VAE folded, simulate(backend='lava'), input × {LOW_RATE_SCALE}",
        "folded_file": "iP-VAE folded, simulate's graph built directly (inputs file, "
                       "state_out), planted input",
        "folded_port": "iP-VAE folded, user graph RingBuffer → IPVAENet (s_out, u_out), "
                       "planted input",
        "error-units": "iP-VAE error-units, simulate(backend='lava'), planted input",
    }
    lines = [
        f"## Lava floating_pt (D={D}, K={K})",
        "",
        f"{REPEATS} interleaved runs of ~{STEPS + 1} Lava steps each, one input: the best "
        "steps/s (excluding compile + start), the median CPU time, and the paired ratio: "
        "the median over the rounds of a row's rate over the anchor's in the same round "
        "(the verdict's figure; a ratio of two bests compares each side's luckiest run). "
        f"numpy BLAS: {blas()}; every row but the third runs with BLAS limited to "
        f"{BLAS_THREADS} thread, as `simulate(backend='lava')` does "
        "(`networks.lava_child.BLAS_THREADS`). Target: folded ≥ 1.0× Dense+LIF (same BLAS).",
        "",
        "CPU µs/step: user + system time of all the run's processes per Lava step "
        "(less sensitive than wall time to other jobs on the machine).",
        "",
        "| network | Lava steps/s | inference steps/s | × Dense+LIF (bests) | × Dense+LIF, "
        "paired: median (range) | CPU µs / Lava step | CPU × Dense+LIF | compile + start (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in rows:
        rate, comp, cpu_us = best(name)
        per_iter = rate / (2 if name == "error-units" else 1)
        mid, lo, hi = paired(name)
        lines.append(f"| {labels[name]} | {rate:,.0f} | {per_iter:,.0f} | "
                     f"{rate / base:.2f} | {mid:.2f} ({lo:.2f}–{hi:.2f}) | {cpu_us:,.0f} | "
                     f"{times(cpu_us, base_cpu)} | {comp:.2f} |")
    folded = [paired(name)[0] for name in ("folded", "folded_low") if name in rows]
    cpu_folded = max(best(name)[2] for name in ("folded", "folded_low") if name in rows)
    met = min(folded) >= 1.0 and cpu_folded <= base_cpu
    lines += ["", "Folded (simulate) at " + " and ".join(f"{r:.2f}×" for r in folded)
              + f" (planted{', low-rate' if len(folded) > 1 else ''}) Dense+LIF steps/s "
              f"(paired median of {REPEATS} rounds), "
              f"{times(cpu_folded, base_cpu)}× its median CPU time per step "
              f"at most: target 1.0× {'met' if met else 'NOT met'} "
              f"({load_average()}).", "",
              "### CPU µs per Lava step, by process", "",
              "The run with the median total of each graph; the host is the process that "
              "runs the network and drains its outputs.", ""]
    lines += _profile({k: rows[k] for k in ("dense_lif_pipe", "dense_lif", "folded_file",
                                            "folded_port") if k in rows},
                      {"dense_lif_pipe": "Dense+LIF (pipe)", "dense_lif": "Dense+LIF (Extractor)",
                       "folded_file": "iP-VAE folded (simulate's graph)",
                       "folded_port": "iP-VAE folded (user graph)"})
    return "\n".join(lines + [""])


if __name__ == "__main__":
    print(bench())
