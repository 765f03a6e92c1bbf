"""The training checkpoint: saved atomically, loaded as data only, validated.

``checkpoint.pt`` is a ``torch.save`` of plain data: the model's and the
optimizer's state dicts (tensors, numbers, lists), the epoch counters, the
config as a dict and the history as lists of numbers.  It is read with
``torch.load(weights_only=True)``, which refuses any pickled object other than
tensors and plain containers, so loading a crafted file runs no code.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from networks.network import atomic_write
from train.config import RUN_INDEPENDENT, TrainConfig

CHECKPOINT = "checkpoint.pt"
KEYS = {"model": dict, "optimizer": dict, "epoch": int, "total_epochs": int, "config": dict,
        "history": dict, "train_seconds": float}


def save_checkpoint(path: Path, state: dict):
    """torch.save to a temporary file beside ``path``, then rename (atomic)."""
    atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path) -> dict:
    """The checkpoint at ``path`` as a dict with the keys of ``KEYS``; ValueError (one line,
    naming the file) when it is not a readable checkpoint of this trainer."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupted, not a torch file, or holds non-data objects
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: not a readable checkpoint ({first[:200]})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a training checkpoint (holds a {type(state).__name__}, "
                         "not a dict)")
    missing = [k for k in KEYS if k not in state]
    if missing:
        raise ValueError(f"{path}: not a training checkpoint (missing {', '.join(missing)})")
    for key, kind in KEYS.items():
        ok = isinstance(state[key], (int, float)) if kind is float else isinstance(state[key], kind)
        if not ok or isinstance(state[key], bool):
            raise ValueError(f"{path}: checkpoint entry {key!r} is a "
                             f"{type(state[key]).__name__}, expected {kind.__name__}")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(state["config"]) - fields)
    if unknown:
        raise ValueError(f"{path}: checkpoint config has unknown settings {unknown}")
    return state


def saved_config(state: dict, path) -> TrainConfig:
    """The TrainConfig a checkpoint was written with (ValueError naming the file if invalid)."""
    saved = dict(state["config"])
    saved.setdefault("beta_t_ref", None)  # runs saved before β was scaled with T_train
    if "adam_betas" in saved:
        saved["adam_betas"] = tuple(saved["adam_betas"])
    try:
        return TrainConfig(**saved).check()
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: checkpoint config is invalid ({err})") from None


def check_resume(cfg: TrainConfig, saved: TrainConfig, path) -> TrainConfig:
    """The config of a resumed run: ``saved``, with ``cfg``'s settings that do not change
    the run (``RUN_INDEPENDENT``: progress, threads, evaluation).  ValueError naming every
    run-changing setting where ``cfg`` differs from ``saved``."""
    diff = []
    for f in dataclasses.fields(TrainConfig):
        if f.name in RUN_INDEPENDENT:
            continue
        new, old = getattr(cfg, f.name), getattr(saved, f.name)
        if f.name == "adam_betas":
            new, old = tuple(new), tuple(old)
        if new != old:
            diff.append(f"{f.name} {new!r} (saved {old!r})")
    if diff:
        raise ValueError(f"cannot resume {path} with other settings: {'; '.join(diff)}; "
                         "resume with the run's settings or start a new --out")
    return dataclasses.replace(saved, **{k: getattr(cfg, k) for k in RUN_INDEPENDENT})


def resume_config(out, **given) -> TrainConfig:
    """The saved config of the run in folder ``out`` with the settings ``given`` applied
    (what the command line builds for ``--resume``; ``train`` then checks them)."""
    path = Path(out) / CHECKPOINT
    saved = saved_config(load_checkpoint(path), path)
    return dataclasses.replace(saved, **given)
