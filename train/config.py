"""``TrainConfig``: everything that defines a training run, importable without torch.

Kept apart from the trainer so that the command line can build its parser
(and ``ipvae simulate`` can start) without loading torch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

DECODERS = ("linear", "mlp", "conv")
KL_FORMS = ("exact", "posterior")
RUN_INDEPENDENT = ("progress", "threads", "eval_steps", "eval_n")
"""Settings that do not change the trained parameters (free to differ on ``--resume``)."""


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in the checkpoint and the network file)."""

    data: str = "mnist"
    data_dir: str | None = None
    rotate: float | None = None
    n_train: int | None = None          # use only the first n training inputs
    latents: int = 512
    t_train: int = 16
    beta: float = 24.0
    kl_form: str = "exact"               # chosen by held-out stability (see train/trainer.py doc)
    decoder: str = "linear"
    epochs: int = 50
    batch: int = 100
    lr: float = 2e-3
    lr_min: float = 1e-5
    weight_decay: float = 3e-4
    adam_betas: tuple = (0.9, 0.999)
    adam_eps: float = 1e-8
    warmup: float = 0.05                # fraction of iterations of linear lr warm-up
    grad_clip: float = 500.0
    beta_warmup: float = 0.1            # fraction of iterations over which β ramps 0 → β
    temp_start: float = 1.0
    temp_stop: float = 0.01
    temp_anneal: float = 0.5            # fraction of iterations of the temperature ramp
    clamp_u: float = 8.0
    clamp_du: float = 7.0
    clamp_start: float = 2.0
    clamp_anneal: float = 0.1
    width: int = 10                     # relaxed-sampler width W
    sigma_init: float | str = 1.0       # initial σ, or "data": the training set's pixel std
    sigma_warmup: float = 0.0           # fraction of iterations with σ held at its initial value
    u0_init: float = -5.0               # prior potentials start uniform in u0_init ± 1
    beta_t_ref: float | None = 16.0     # β is scaled by (t_train / beta_t_ref)² (None: not)
    seed: int = 0
    threads: int | None = None          # torch.set_num_threads
    time_budget: float | None = None    # minutes: fit the epochs to it, stop at it
    eval_steps: int = 1000              # 0: no evaluation at the end
    eval_n: int | None = None           # evaluate only the first n held-out inputs
    progress: bool = True

    def check(self):
        """Raise ValueError naming the first bad setting."""
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {self.decoder!r}")
        if self.kl_form not in KL_FORMS:
            raise ValueError(f"kl_form must be one of {KL_FORMS}, got {self.kl_form!r}")
        for name in ("latents", "t_train", "epochs", "batch", "width"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("beta", "lr", "grad_clip", "temp_stop", "temp_start"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not (self.sigma_init == "data" or (isinstance(self.sigma_init, (int, float))
                                              and 0 < self.sigma_init < 30)):
            raise ValueError(f"sigma_init must be 'data' or a number in (0, 30), "
                             f"got {self.sigma_init!r}")
        if self.beta_t_ref is not None and not self.beta_t_ref > 0:
            raise ValueError(f"beta_t_ref must be > 0 (or None), got {self.beta_t_ref}")
        if not -8.0 <= self.u0_init <= 5.0:
            raise ValueError(f"u0_init must be in [-8, 5], got {self.u0_init}")
        if not 0 <= self.sigma_warmup <= 1:
            raise ValueError(f"sigma_warmup must be a fraction in [0, 1], got {self.sigma_warmup}")
        if self.time_budget is not None and self.time_budget <= 0:
            raise ValueError(f"time_budget must be > 0 minutes, got {self.time_budget}")
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["adam_betas"] = list(self.adam_betas)
        return d
