"""``ipvae deploy NET.npz --target {lava-cpu,loihi2-sim,loihi2} --out DIR``: the Loihi path.

Quantizes the network (``hardware.quantize``), writes the quantized file, runs it
on the target, and reports: Loihi 2 resources (``hardware.resources``), the work
per inference measured from the run's rasters, the quantization (bits,
saturation counts) and the run's MSE against the float model's.
"""
from ipvae.cli import UserError
from ipvae.inputs import add_data_arguments, load_inputs

NAME = "deploy"
HELP = "quantize a network for Loihi 2, run it, and report resources, work and quality"


def add_arguments(p):
    p.add_argument("network", help="network file (.npz)")
    p.add_argument("--target", required=True, choices=["lava-cpu", "loihi2-sim", "loihi2"],
                   help="lava-cpu: Lava CPU float models; loihi2-sim: bit-accurate fixed_pt "
                        "models on Lava's CPU simulator; loihi2: a Loihi 2 chip")
    add_data_arguments(p)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weight-bits", type=int, default=8, help="weight mantissa bits (2..8)")
    p.add_argument("--count-bits", type=int, default=16,
                   help="graded-spike payload bits of a count (saturates above)")
    p.add_argument("--error-level", type=float,
                   help="also report the work until the mean MSE first reaches this level")
    p.add_argument("--energy-per-synop", type=float,
                   help="joules per synaptic event (energy is reported only when given)")
    p.add_argument("--energy-per-message", type=float,
                   help="joules per graded-spike message (energy only when given)")
    p.add_argument("--timeout", type=float, help="wall-clock limit of the Lava run (s)")
    p.add_argument("--out", required=True, help="folder for quantized.npz, trace.npz, report.json")


def run(args):
    from pathlib import Path

    import numpy as np

    from hardware.quantize import quantize, save_quantized
    from hardware.resources import format_table, resource_report, work_report
    from hardware.targets import TARGETS, check_loihi2
    from networks import load_network, simulate
    from networks.network import write_json

    if args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    for name in ("energy_per_synop", "energy_per_message", "error_level"):
        value = getattr(args, name)
        if value is not None and not value >= 0:
            raise UserError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    if args.target == "loihi2":
        check_loihi2()
    net = load_network(args.network)
    x, offset = load_inputs(args, net)
    out = Path(args.out)
    q = quantize(net, weight_bits=args.weight_bits, count_bits=args.count_bits)
    save_quantized(q, out / "quantized.npz")
    backend = TARGETS[args.target]
    options = {} if args.timeout is None else {"timeout": args.timeout}
    if backend == "lava-fixed":
        options["quantized"] = q
    trace = simulate(net, x, args.steps, backend=backend, seed=args.seed, offset=offset,
                     progress=True, **options)
    trace.save(out / "trace.npz")
    ref = simulate(net, x, args.steps, seed=args.seed, offset=offset)
    quant = dict(q.report)
    if backend == "lava-fixed":  # the emulator counts saturation; it must equal the run
        emu = simulate(net, x, args.steps, backend="fixed", quantized=q, seed=args.seed,
                       offset=offset)
        quant["saturation"] = emu.info["saturation"]
        quant["emulator_bit_identical"] = bool(np.array_equal(emu.spikes, trace.spikes)
                                               and np.array_equal(emu.u, trace.u))
    late = slice(args.steps // 2, args.steps)
    mse_run, mse_float = float(trace.mse()[late].mean()), float(ref.mse()[late].mean())
    resources = resource_report(q)
    report = dict(
        network=str(args.network), target=args.target, backend=backend, steps=args.steps,
        inputs=int(x.shape[0]), offset=offset, seed=args.seed, resources=resources,
        work=work_report(trace, q, error_level=args.error_level,
                         energy_per_synop=args.energy_per_synop,
                         energy_per_message=args.energy_per_message),
        quantization=quant,
        quality=dict(steps_averaged=[late.start, late.stop], mse=mse_run, mse_float=mse_float,
                     mse_ratio=mse_run / mse_float if mse_float > 0 else None,
                     mse_curve=trace.mse().tolist(), mse_float_curve=ref.mse().tolist()),
        timing={k: trace.info[k] for k in ("compile_s", "run_s", "cpu_s") if k in trace.info})
    write_json(out / "report.json", report)
    print(format_table(resources))
    w = report["work"]["per_step"]
    print(f"work per step and input: {w['messages']:.1f} messages, {w['spikes']:.1f} spikes, "
          f"{w['synaptic_events']:.0f} synaptic events")
    if "energy_j" in report["work"]:
        print(f"energy per inference: {report['work']['energy_j']['per_inference']:.3g} J")
    print(f"MSE (steps {late.start}-{late.stop - 1}): {mse_run:.4g} on {args.target}, "
          f"{mse_float:.4g} float (x{report['quality']['mse_ratio']:.3f})")
    if "saturation" in quant:
        print(f"saturation: {quant['saturation']}; emulator bit-identical: "
              f"{quant['emulator_bit_identical']}")
    print(f"wrote {out}/report.json, quantized.npz, trace.npz")
    return 0
