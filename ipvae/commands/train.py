"""``ipvae train``: train an iP-VAE offline (PyTorch + snntorch) and export the network file.

Runs single-process, or under ``torchrun --nproc_per_node P -m ipvae train ...``
(gloo, each process its shard of every batch; only rank 0 writes).
"""
NAME = "train"
HELP = "train an iP-VAE and write runs/NAME/{model.npz, metrics.json, *.png}"


def add_arguments(p):
    from train.config import TrainConfig

    d = TrainConfig()
    p.add_argument("--data", default=d.data,
                   help="mnist | digits | patches | a .npy file or image folder (default mnist)")
    p.add_argument("--data-dir", help="mnist: folder with the full MNIST IDX files")
    p.add_argument("--rotate", type=float, help="rotate every image by DEG degrees")
    p.add_argument("--n-train", type=int, help="use only the first N training inputs")
    p.add_argument("--latents", type=int, default=d.latents, help="K (default 512)")
    p.add_argument("--t-train", type=int, default=d.t_train,
                   help="inference steps unrolled in training (default 16)")
    p.add_argument("--beta", type=float, default=d.beta, help=f"KL weight (default {d.beta})")
    p.add_argument("--kl", dest="kl_form", default=d.kl_form, choices=["exact", "posterior"],
                   help=f"Poisson KL form (default {d.kl_form})")
    p.add_argument("--decoder", default=d.decoder, choices=["linear", "mlp", "conv"],
                   help="linear (exportable) | mlp | conv (Jacobian feedback)")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch", type=int, default=d.batch, help="global batch size")
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--width", type=int, default=d.width, help="relaxed-sampler width W")
    p.add_argument("--clamp-u", type=float, default=d.clamp_u)
    p.add_argument("--clamp-du", type=float, default=d.clamp_du)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, help="torch.set_num_threads per process")
    p.add_argument("--time-budget", type=float,
                   help="minutes: fit the epochs (at most --epochs) to this budget and stop by it")
    p.add_argument("--eval-steps", type=int, default=d.eval_steps,
                   help="inference steps of the final evaluation on the held-out split (0: none)")
    p.add_argument("--stop-after", type=int, help="run at most N epochs now (resume later)")
    p.add_argument("--out", required=True, help="run folder, e.g. runs/NAME")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    p.add_argument("--no-progress", action="store_true")


def run(args):
    from train.trainer import TrainConfig, train

    fields = ("data", "data_dir", "rotate", "n_train", "latents", "t_train", "beta", "kl_form",
              "decoder", "epochs", "batch", "lr", "width", "clamp_u", "clamp_du", "seed",
              "threads", "time_budget", "eval_steps")
    cfg = TrainConfig(**{k: getattr(args, k) for k in fields}, progress=not args.no_progress)
    res = train(cfg, args.out, resume=args.resume, stop_after=args.stop_after)
    m = res["metrics"]
    if not m["finished"]:
        print(f"stopped after epoch {m['epochs_done']}/{m['epochs_planned']}; "
              f"continue with --resume --out {args.out}")
        return 0
    line = (f"wrote {args.out}: {m['epochs_done']} epochs, {m['train_seconds'] / 60:.1f} min, "
            f"train loss {m['final_train_loss']:.2f}")
    ev = m.get("evaluation")
    if ev:
        r2 = ev["r2_spikes"]
        line += ", held-out R² (spikes) " + ", ".join(f"t={t}: {v:.3f}" for t, v in r2.items())
        if ev.get("probe"):
            line += f", probe {ev['probe']['rates'][-1]:.3f} (pixels {ev['probe']['pixels']:.3f})"
    print(line)
    return 0
