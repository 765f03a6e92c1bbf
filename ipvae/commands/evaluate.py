"""``ipvae evaluate NET.npz --data mnist --steps 1000 --out DIR``: quality of a deployed network.

Runs the network file through the reference simulator (true Poisson counts) on
a data set's test split and writes ``evaluation.json`` (curves against
inference step, runaway count, linear probe), ``curves.png`` and
``examples.png``.

Under ``torchrun --nproc_per_node P -m ipvae evaluate ...`` (and across machines)
every process simulates a contiguous index range of the test split and of the
probe's training split (each keyed by its own indices, design §2.2); rank 0
gathers them, fits the probe and writes: the same numbers as one process.
"""
import json

from ipvae.checks import finite_float, nonnegative_int, output_folder, positive_int, seed

NAME = "evaluate"
HELP = "evaluate a network file on a data set: R², MSE, sparsity, probe vs inference step"


def add_arguments(p):
    p.add_argument("network", help="network file (.npz)")
    p.add_argument("--data", default="mnist",
                   help="mnist | digits | patches | PATH (.npy or image folder); default mnist")
    p.add_argument("--data-dir", help="mnist: folder with the full MNIST IDX files")
    p.add_argument("--rotate", type=finite_float,
                   help="rotate every image by DEG degrees (OOD test)")
    p.add_argument("--data-seed", type=seed, default=0,
                   help="seed of the data set's split (default 0)")
    p.add_argument("--n", "--n-inputs", type=positive_int,
                   help="evaluate only the first N test inputs (--n-inputs under torchrun, "
                        "whose own options --nnodes, --nproc... make --n ambiguous)")
    p.add_argument("--steps", type=positive_int, default=1000,
                   help="inference steps (default 1000)")
    p.add_argument("--seed", type=seed, default=0, help="noise seed (default 0)")
    p.add_argument("--batch", type=positive_int, default=100,
                   help="inputs per simulate call (default 100)")
    p.add_argument("--probe-step", type=nonnegative_int, action="append",
                   help="step whose rates e^u feed the linear probe (repeatable; "
                        "default the final step = --steps)")
    p.add_argument("--probe-n", type=positive_int,
                   help="fit the probe on the first N training inputs (default all)")
    p.add_argument("--no-probe", action="store_true", help="skip the linear probe")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--force", action="store_true",
                   help="replace the results of an earlier run in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


OUTPUTS = ("evaluation.json", "curves.png", "examples.png")


RUN_AXES = dict(step_mse=1, step_rate_mse=1, step_zeros=1, step_rate=1, u=1, recon=1)
"""The input axis of each array ``train.evaluate.run_chunked`` returns."""


def run(args):
    from networks.distributed import lead_or_serve

    return lead_or_serve(_lead, args)


def sharded_run(net, x, steps, **kwargs):
    """``train.evaluate.run_chunked`` with x's inputs spread over the torchrun processes."""
    from networks.distributed import concat_dicts, map_shards
    from train.evaluate import run_chunked

    # whole chunks of --batch: every simulate call, hence every float, is one process's
    parts = map_shards(run_chunked, x, unit=kwargs.get("batch", 100), net=net, steps=steps,
                       **kwargs)
    out = concat_dicts(parts, RUN_AXES)
    if out["recon"] is not None:
        out["recon"] = out["recon"][:, :kwargs.get("keep_examples", 0)]
    return out


def _lead(args, world):
    from networks import load_network
    from networks.network import atomic_write
    from train.data import load_dataset
    from train.evaluate import evaluate, to_json
    from train.evaluate_plots import plot_curves, plot_examples

    from ipvae.cli import UserError

    out = output_folder(args.out, OUTPUTS, force=args.force)
    bad = [s for s in args.probe_step or () if s > args.steps]
    if bad:
        raise UserError(f"--probe-step {bad[0]} is past --steps {args.steps}")
    net = load_network(args.network)
    kw = dict(seed=args.data_seed, rotate=args.rotate, data_dir=args.data_dir)
    test = load_dataset(args.data, "test", **kw).head(args.n)
    probe_train = None
    if not args.no_probe and test.y is not None:
        probe_train = load_dataset(args.data, "train", **kw).head(args.probe_n)
        if probe_train.y is None:
            probe_train = None
    result = evaluate(net, test, steps=args.steps, seed=args.seed, probe_train=probe_train,
                      probe_step=args.probe_step, batch=args.batch,
                      progress=not args.quiet, runner=sharded_run if world > 1 else None)
    out.mkdir(parents=True, exist_ok=True)
    js = to_json(result)
    js["network"] = str(args.network)
    atomic_write(out / "evaluation.json",
                 lambda f: f.write(json.dumps(js, indent=2).encode()))
    plot_curves(result, out / "curves.png")
    plot_examples(result, out / "examples.png")

    t_last = args.steps - 1
    line = [f"R² spikes {js['r2_spikes'][str(t_last)]:.3f}",
            f"R² rates {js['r2_rates'][str(t_last)]:.3f}",
            f"sparsity {js['sparsity'][str(t_last)]:.3f}",
            f"runaway {js['runaway_any']}"]
    if js.get("probe"):
        p = js["probe"]
        line.append("probe " + ", ".join(f"t={s}: {a:.3f}" for s, a in zip(p["steps"], p["rates"]))
                    + f" (pixels {p['pixels']:.3f})")
    procs = f" over {world} processes" if world > 1 else ""
    print(f"{test.meta['name']} test, {len(test)} inputs{procs}, step {t_last}: "
          + "; ".join(line))
    print(f"wrote {out / 'evaluation.json'}, {out / 'curves.png'}, {out / 'examples.png'}")
    return 0
