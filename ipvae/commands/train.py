"""``ipvae train``: train an iP-VAE offline (PyTorch + snntorch) and export the network file.

Runs single-process, or under ``torchrun --nproc_per_node P -m ipvae train ...``
(gloo, each process its shard of every batch; only rank 0 writes).
"""
from ipvae.checks import finite_float, nonnegative_int, positive_float, positive_int, seed

NAME = "train"
HELP = "train an iP-VAE and write runs/NAME/{model.npz, metrics.json, *.png}"


def add_arguments(p):
    from train.config import TrainConfig

    d = TrainConfig()
    p.add_argument("--data", default=d.data,
                   help="mnist | digits | patches | a .npy file or image folder (default mnist)")
    p.add_argument("--data-dir", help="mnist: folder with the full MNIST IDX files")
    p.add_argument("--rotate", type=finite_float, help="rotate every image by DEG degrees")
    p.add_argument("--n-train", type=positive_int, help="use only the first N training inputs")
    p.add_argument("--latents", type=positive_int, default=d.latents,
                   help=f"K (default {d.latents})")
    p.add_argument("--t-train", type=positive_int, default=d.t_train,
                   help=f"inference steps unrolled in training (default {d.t_train})")
    p.add_argument("--beta", type=finite_float, default=d.beta,
                   help=f"KL weight (default {d.beta})")
    p.add_argument("--beta-t-ref", type=_beta_t_ref, default=d.beta_t_ref,
                   help=f"scale the KL weight by (T_train / this)², so that β keeps its "
                        f"meaning at other T_train; 'none': no scaling (default "
                        f"{d.beta_t_ref:g})")
    p.add_argument("--kl", dest="kl_form", default=d.kl_form, choices=["exact", "posterior"],
                   help=f"Poisson KL form (default {d.kl_form})")
    p.add_argument("--decoder", default=d.decoder, choices=["linear", "mlp", "conv"],
                   help="linear (exportable) | mlp | conv (Jacobian feedback)")
    p.add_argument("--epochs", type=positive_int, default=d.epochs,
                   help=f"passes over the training set (default {d.epochs})")
    p.add_argument("--batch", type=positive_int, default=d.batch,
                   help=f"global batch size (default {d.batch})")
    p.add_argument("--lr", type=positive_float, default=d.lr,
                   help=f"peak learning rate of Adamax (default {d.lr:g})")
    p.add_argument("--width", type=positive_int, default=d.width,
                   help=f"relaxed-sampler width W (default {d.width})")
    p.add_argument("--clamp-u", type=finite_float, default=d.clamp_u,
                   help=f"upper soft clamp of u (default {d.clamp_u:g})")
    p.add_argument("--clamp-du", type=finite_float, default=d.clamp_du,
                   help=f"upper soft clamp of du (default {d.clamp_du:g})")
    p.add_argument("--sigma-init", type=_sigma_init, default=d.sigma_init,
                   help=f"initial decoder σ: a number or 'data' (the training set's std; "
                        f"default {d.sigma_init})")
    p.add_argument("--sigma-warmup", type=finite_float, default=d.sigma_warmup,
                   help=f"fraction of iterations with σ held at its initial value "
                        f"(default {d.sigma_warmup:g})")
    p.add_argument("--seed", type=seed, default=d.seed,
                   help=f"seed of initialisation, batches and noise (default {d.seed})")
    p.add_argument("--threads", type=positive_int, help="torch.set_num_threads per process")
    p.add_argument("--time-budget", type=positive_float,
                   help="minutes: fit the epochs (at most --epochs) to this budget and stop by it")
    p.add_argument("--eval-steps", type=nonnegative_int, default=d.eval_steps,
                   help=f"inference steps of the final evaluation on the held-out split "
                        f"(0: none; default {d.eval_steps})")
    p.add_argument("--stop-after", type=positive_int,
                   help="run at most N epochs now (resume later)")
    p.add_argument("--out", required=True, help="run folder, e.g. runs/NAME")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    p.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true",
                   help="no progress bars or per-epoch lines")
    p.add_argument("--allow-collapse", action="store_true",
                   help="exit 0 even if the model collapsed (no latent fires or held-out "
                        "R² <= 0 after the last epoch; exit 1 otherwise)")
    # unset settings stay None, so that --resume takes them from the saved run
    p.set_defaults(**{k: None for k in FIELDS})


FIELDS = ("data", "data_dir", "rotate", "n_train", "latents", "t_train", "beta", "kl_form",
          "decoder", "epochs", "batch", "lr", "width", "clamp_u", "clamp_du", "seed",
          "threads", "time_budget", "eval_steps", "sigma_init", "sigma_warmup", "beta_t_ref")


def _beta_t_ref(text: str):
    """'none' or a positive number (argparse type)."""
    return "none" if text.lower() == "none" else positive_float(text)


def _sigma_init(text: str):
    """'data' or a positive number (argparse type)."""
    if text == "data":
        return text
    return positive_float(text)


def run(args):
    import sys

    from train.trainer import TrainConfig, resume_config, train

    from ipvae.checks import run_folder

    run_folder(args.out)
    given = {k: getattr(args, k) for k in FIELDS if getattr(args, k) is not None}
    if given.get("beta_t_ref") == "none":
        given["beta_t_ref"] = None
    given["progress"] = not args.quiet
    cfg = resume_config(args.out, **given) if args.resume else TrainConfig(**given)
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
    if m.get("collapsed"):
        line += "; COLLAPSED: " + "; ".join(m["collapse_reasons"])
    print(line)
    if m.get("collapsed") and not args.allow_collapse:
        print(f"training collapsed (see 'held_out' in {args.out}/metrics.json; a lower --beta "
              "often helps, docs/training-ablation.md); pass --allow-collapse to accept it",
              file=sys.stderr)
        return 1
    return 0
