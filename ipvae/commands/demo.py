"""``ipvae demo``: the main job end to end on embedded data (what ``make demo`` runs).

1. train an iP-VAE for a few minutes on the embedded MNIST digits → ``train/model.npz``;
2. evaluate the exported network on held-out digits with true Poisson counts,
   far past the training horizon → ``evaluate/`` (curves, reconstructions, probe);
3. run the same held-out digits on the reference simulator, Lava and Brian2 under
   shared noise and compare their spike rasters → ``compare/`` (report, rasters, MSE).

A second run reuses the trained network (or resumes an interrupted training).
"""
from pathlib import Path

from ipvae.checks import positive_float, positive_int, seed

NAME = "demo"
HELP = "train briefly on embedded MNIST, evaluate, and cross-check reference, Lava and Brian2"


def add_arguments(p):
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--minutes", type=positive_float, default=3.0,
                   help="training time budget (default 3)")
    p.add_argument("--latents", type=positive_int, default=256, help="K (default 256)")
    p.add_argument("--eval-steps", type=positive_int, default=300,
                   help="inference steps of the evaluation (default 300; T_train is 16)")
    p.add_argument("--eval-n", type=positive_int, default=200,
                   help="held-out digits evaluated (default 200)")
    p.add_argument("--probe-n", type=positive_int, default=1000,
                   help="training digits the linear probe is fit on (default 1000)")
    p.add_argument("--backends", default="reference,lava,brian2",
                   help="backends cross-checked (default reference,lava,brian2)")
    p.add_argument("--compare-steps", type=positive_int, default=64,
                   help="inference steps of the cross-check (default 64)")
    p.add_argument("--seed", type=seed, default=0, help="training and noise seed (default 0)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars or per-epoch lines; the stage lines stay")


def run(args):
    from ipvae.cli import UserError
    from networks import load_network
    from networks.simulate import available_backends
    from networks.network import write_json
    from networks.compare import run_comparison
    from train.data import load_dataset
    from train.evaluate import evaluate, summary, to_json
    from train.evaluate_plots import plot_curves, plot_examples
    from train.config import TrainConfig
    from train.trainer import CHECKPOINT, train

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in backends if b not in available_backends()]
    if unknown or len(set(backends)) < 2 or len(set(backends)) != len(backends):
        raise UserError(f"--backends needs at least two different backends of "
                        f"{', '.join(available_backends())}; got {args.backends!r}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    model_path = out / "train" / "model.npz"
    if model_path.exists():
        print(f"[1/3] reusing the trained network {model_path} (delete it to retrain)")
    else:
        resume = (out / "train" / CHECKPOINT).exists()
        print(f"[1/3] {'resuming' if resume else 'training'} on embedded MNIST "
              f"(K={args.latents}, T_train=16, {args.minutes:g} min budget)")
        cfg = TrainConfig(data="mnist", latents=args.latents, t_train=16, epochs=200,
                          time_budget=args.minutes, eval_steps=0, seed=args.seed,
                          progress=not args.quiet)
        train(cfg, out / "train", resume=resume)
    net = load_network(model_path)

    print(f"[2/3] evaluating on {args.eval_n} held-out digits for {args.eval_steps} steps")
    test = load_dataset("mnist", "test", seed=args.seed).head(args.eval_n)
    probe = load_dataset("mnist", "train", seed=args.seed).head(args.probe_n)
    res = evaluate(net, test, steps=args.eval_steps, seed=args.seed, probe_train=probe,
                   probe_step=[args.eval_steps], progress=not args.quiet)
    write_json(out / "evaluate" / "evaluation.json", to_json(res))
    plot_curves(res, out / "evaluate" / "curves.png", title="held-out MNIST digits")
    plot_examples(res, out / "evaluate" / "examples.png")
    s = summary(res)
    r2 = s["r2_spikes"]
    print("      R² from spikes " + ", ".join(f"t={t}: {v:.3f}" for t, v in r2.items())
          + f"; sparsity {s['sparsity'][str(args.eval_steps - 1)]:.3f}")

    print(f"[3/3] cross-checking {', '.join(backends)} on 4 held-out digits, "
          f"{args.compare_steps} steps, shared noise")
    report = run_comparison(net, test.x[:4], args.compare_steps, backends, out / "compare",
                            seed=args.seed, progress=not args.quiet,
                            network_path=str(model_path))
    for pair, r in report["pairs"].items():
        print(f"      {pair.replace('|', ' vs ')}: {r['identical_share']:.4%} identical counts, "
              f"max |Δu| {r['max_abs_du']:.2g}")
    print(f"wrote {out}/train (model.npz, PNGs), {out}/evaluate, {out}/compare")
    return 0 if report["passed"] else 1
