"""The training-quality matrix of issue 16 (``make quality``): every setting the paper uses learns.

Cells: embedded MNIST with K ∈ {128, 512} × T_train ∈ {4, 16}, each trained under a time
budget of 3 minutes, and natural patches (``train.data``'s whitened, standardised patches)
with K = 512, T_train = 16 under 10 minutes; all with the trainer's defaults otherwise,
2 threads, an epoch cap far above what the budget allows (the budget binds).  Each
exported network is then run by the reference simulator to t = 1000 with true Poisson
counts on held-out inputs (``train.evaluate``; the first ``EVAL_N`` of the test split).

Floors (the issue's, not fitted to the model):

- no collapse flagged by the trainer's last held-out check (``train.health``);
- MNIST: R² from spikes at t = 160 ≥ 0.40, ≥ 0.50 for K = 512;
- every cell: R² at t = 1000 ≥ R² at t = T_train + 0.03 (inference keeps improving
  past the training horizon);
- patches: R² at t = 1000 ≥ 0.50 and sparsity rising from t = 16 to t = 1000.

Step t is the reference simulator's step index (the counts z_t, t = 0 … 999; "t = 1000"
is the last one, 999).  :func:`write_report` writes ``runs/quality/matrix.md`` (the table,
the machine's load, the command) and ``runs/quality/matrix.png`` (R² and sparsity against
t for every cell) from the cells measured so far.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "runs" / "quality"
EVAL_N = 1000
HORIZON = 1000
COMMAND = "make quality  (python -m pytest -q -s tests_quality)"


@dataclass(frozen=True)
class Cell:
    """One setting of the matrix: data set, K, T_train, time budget (minutes), floors."""

    data: str
    latents: int
    t_train: int
    minutes: float
    r2_160_floor: float | None          # MNIST only
    r2_end_floor: float | None          # patches only
    sparsity_rising: bool               # patches only

    @property
    def name(self) -> str:
        return f"{self.data}-K{self.latents}-T{self.t_train}"


CELLS = (
    Cell("mnist", 128, 4, 3.0, 0.40, None, False),
    Cell("mnist", 128, 16, 3.0, 0.40, None, False),
    Cell("mnist", 512, 4, 3.0, 0.50, None, False),
    Cell("mnist", 512, 16, 3.0, 0.50, None, False),
    Cell("patches", 512, 16, 10.0, None, 0.50, True),
)
GAIN = 0.03
"""R² at t = 1000 must exceed R² at t = T_train by this much."""
EPOCH_CAP = 10_000
"""Far above what any budget allows: the time budget, not the cap, ends training."""


def run_cell(cell: Cell, reuse: bool = False, *, settings: dict | None = None,
             folder: Path | None = None, threads: int = 2) -> dict:
    """Train ``cell`` (or, with ``reuse``, read its earlier run) and measure it.

    Returns and writes ``<folder>/cell.json`` (default folder
    ``runs/quality/matrix/<name>``): the figures (R² and sparsity at t = T_train, 16,
    160, 999; the collapse check; epochs and minutes trained; runaway inputs), the
    curves, and the failures (list of str).  ``settings``: TrainConfig fields that
    differ from the trainer's defaults (an ablation of the matrix; the matrix itself
    passes none); ``threads``: torch threads of the training.
    """
    folder = OUT / "matrix" / cell.name if folder is None else Path(folder)
    path = folder / "cell.json"
    if reuse and path.is_file():
        res = json.loads(path.read_text())
        res["failures"] = failures(cell, res)
        return res
    import shutil

    from networks import load_network
    from networks.network import write_json
    from train.config import TrainConfig
    from train.data import load_dataset
    from train.evaluate import evaluate
    from train.trainer import train

    if folder.exists():
        shutil.rmtree(folder)
    cfg = TrainConfig(**{**dict(data=cell.data, latents=cell.latents, t_train=cell.t_train,
                                epochs=EPOCH_CAP, time_budget=cell.minutes, threads=threads,
                                eval_steps=0, progress=True), **(settings or {})})
    t0 = time.perf_counter()
    m = train(cfg, folder)["metrics"]
    wall = time.perf_counter() - t0
    net = load_network(folder / "model.npz")
    test = load_dataset(cell.data, "test").head(EVAL_N)
    ev = evaluate(net, test, steps=HORIZON, seed=0, progress=True)
    r2, sp = ev["r2_spikes"], ev["sparsity"]
    last = HORIZON - 1
    res = dict(cell=cell.name, data=cell.data, latents=cell.latents, t_train=cell.t_train,
               budget_minutes=cell.minutes, epochs=m["epochs_done"],
               stopped_by_budget=m["stopped_by_budget"], train_minutes=m["train_seconds"] / 60,
               wall_minutes=wall / 60, collapsed=bool(m.get("collapsed")),
               collapse_reasons=m.get("collapse_reasons", []),
               r2_t_train=float(r2[cell.t_train]), r2_16=float(r2[16]), r2_160=float(r2[160]),
               r2_end=float(r2[last]), sparsity_t_train=float(sp[cell.t_train]),
               sparsity_16=float(sp[16]), sparsity_160=float(sp[160]),
               sparsity_end=float(sp[last]), runaway_inputs=int(ev["runaway_any"]),
               eval_inputs=len(test), load_average=os.getloadavg(), settings=settings or {},
               threads=threads,
               curves=dict(r2=[float(v) for v in r2], sparsity=[float(v) for v in sp]))
    res["failures"] = failures(cell, res)
    write_json(path, res)
    return res


def failures(cell: Cell, f: dict) -> list[str]:
    """The floors ``f`` misses (empty: the cell passes)."""
    out = []
    if f["collapsed"]:
        out.append("collapsed: " + "; ".join(f["collapse_reasons"]))
    if cell.r2_160_floor is not None and not f["r2_160"] >= cell.r2_160_floor:
        out.append(f"R² at t=160 is {f['r2_160']:.3f} < {cell.r2_160_floor}")
    if not f["r2_end"] >= f["r2_t_train"] + GAIN:
        out.append(f"R² at t=1000 is {f['r2_end']:.3f} < R² at t=T_train "
                   f"{f['r2_t_train']:.3f} + {GAIN}")
    if cell.r2_end_floor is not None and not f["r2_end"] >= cell.r2_end_floor:
        out.append(f"R² at t=1000 is {f['r2_end']:.3f} < {cell.r2_end_floor}")
    if cell.sparsity_rising and not f["sparsity_end"] > f["sparsity_16"]:
        out.append(f"sparsity does not rise from t=16 ({f['sparsity_16']:.3f}) to t=1000 "
                   f"({f['sparsity_end']:.3f})")
    return out


def measured() -> list[dict]:
    """The cells measured so far (``cell.json`` files), in the matrix's order."""
    out = []
    for cell in CELLS:
        path = OUT / "matrix" / cell.name / "cell.json"
        if path.is_file():
            res = json.loads(path.read_text())
            res["failures"] = failures(cell, res)
            out.append(res)
    return out


def write_report(results: list[dict] | None = None) -> Path:
    """``runs/quality/matrix.md`` (the table) and ``matrix.png`` from the measured cells
    (``results``, default :func:`measured`); both written atomically.  Returns the table's
    path."""
    from networks.network import atomic_write
    from networks.plots import pyplot, save_figure

    results = measured() if results is None else results
    load = os.getloadavg()
    lines = [
        "| cell | budget (min) | epochs | collapsed | R² t=T_train | R² t=16 | R² t=160 | "
        "R² t=1000 | sparsity t=16 | sparsity t=160 | sparsity t=1000 | runaway | "
        "load (1 min) | passes |",
        "| --- " * 14 + "|"]
    for r in results:
        lines.append(
            f"| {r['cell']} | {r['budget_minutes']:g} | {r['epochs']} | "
            f"{'yes' if r['collapsed'] else 'no'} | {r['r2_t_train']:.3f} | {r['r2_16']:.3f} | "
            f"{r['r2_160']:.3f} | {r['r2_end']:.3f} | {r['sparsity_16']:.3f} | "
            f"{r['sparsity_160']:.3f} | {r['sparsity_end']:.3f} | {r['runaway_inputs']} | "
            f"{r['load_average'][0]:.1f} | "
            f"{'yes' if not r['failures'] else 'no: ' + '; '.join(r['failures'])} |")
    text = "\n".join(lines) + (
        f"\n\nRegenerated by `{COMMAND}`; held-out inputs: the first {EVAL_N} of each test "
        f"split, to t = {HORIZON} with true Poisson counts (t = 1000 is step index 999); "
        f"2 torch threads; load average when written: "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min) on "
        f"{os.cpu_count()} cores.\n")
    path = OUT / "matrix.md"
    atomic_write(path, lambda f: f.write(text.encode()))
    if results:
        import numpy as np

        plt = pyplot()
        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
        for r in results:
            t = np.arange(len(r["curves"]["r2"]))
            line, = a.semilogx(t[1:], r["curves"]["r2"][1:], label=r["cell"])
            a.axvline(r["t_train"], color=line.get_color(), lw=0.6, ls=":")
            b.semilogx(t[1:], r["curves"]["sparsity"][1:], color=line.get_color())
        a.set_ylim(max(-0.2, a.get_ylim()[0]), 1.0)
        a.set_xlabel("inference step t (dotted: T_train)")
        a.set_ylabel("held-out R² from spikes")
        a.legend(fontsize=7)
        b.set_xlabel("inference step t")
        b.set_ylabel("sparsity (share of zero counts)")
        fig.suptitle("training-quality matrix (make quality)")
        fig.tight_layout()
        save_figure(fig, OUT / "matrix.png", dpi=100)
    return path


# --- ablations of the matrix ----------------------------------------------------------------
ABLATION_TABLE = ROOT / "runs" / "quality" / "matrix-ablation.md"
ABLATION_COLUMNS = ("variant", "cell", "threads", "epochs", "collapsed", "R² t=T_train",
                    "R² t=16", "R² t=160", "R² t=1000", "sparsity t=16", "sparsity t=1000",
                    "runaway", "load (1 min)", "passes")


def ablation_row(variant: str, res: dict) -> str:
    """One Markdown row of the ablation table for the measured cell ``res``."""
    cells = (variant, res["cell"], res.get("threads", 2), res["epochs"],
             "yes" if res["collapsed"] else "no", f"{res['r2_t_train']:.3f}",
             f"{res['r2_16']:.3f}", f"{res['r2_160']:.3f}", f"{res['r2_end']:.3f}",
             f"{res['sparsity_16']:.3f}", f"{res['sparsity_end']:.3f}", res["runaway_inputs"],
             f"{res['load_average'][0]:.1f}",
             "yes" if not res["failures"] else "no: " + "; ".join(res["failures"]))
    return "| " + " | ".join(str(c) for c in cells) + " |"


def main(argv=None) -> int:
    """``python -m tests_quality.matrix CELL [--set KEY=VALUE ...]``: train and measure one
    cell of the matrix with settings that differ from the trainer's defaults (an ablation),
    in ``runs/quality/ablation/<variant>/<cell>``, and append its row to
    ``runs/quality/matrix-ablation.md``.  The floors are the matrix's."""
    import argparse

    cells = {c.name: c for c in CELLS}
    ap = argparse.ArgumentParser(prog="python -m tests_quality.matrix", description=main.__doc__)
    ap.add_argument("cell", choices=sorted(cells))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a training setting and its value, as on the ipvae train command "
                         "line (e.g. beta=16, temp_stop=0.01)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--table", type=Path, default=ABLATION_TABLE,
                    help=f"Markdown table the row is appended to (default {ABLATION_TABLE})")
    args = ap.parse_args(argv)
    from train.config import format_value, parse_setting
    from train.config import settings as known_settings

    known = {s.name: s for s in known_settings()}
    settings = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            ap.error(f"--set {item!r}: expected KEY=VALUE")
        if key not in known:
            ap.error(f"--set {item!r}: unknown setting {key!r}")
        try:
            settings[key] = parse_setting(known[key], value, text=True)
        except ValueError as e:
            ap.error(f"--set {item!r}: {e}")
    variant = ", ".join(f"{k}={format_value(v)}" for k, v in settings.items()) or "defaults"
    folder = OUT / "ablation" / (variant.replace(", ", "_").replace("=", "-") or "defaults")
    res = run_cell(cells[args.cell], settings=settings, folder=folder / args.cell,
                   threads=args.threads)
    row = ablation_row(variant, res)
    table = Path(args.table)
    table.parent.mkdir(parents=True, exist_ok=True)
    head = "" if table.is_file() else ("| " + " | ".join(ABLATION_COLUMNS) + " |\n"
                                       + "| --- " * len(ABLATION_COLUMNS) + "|\n")
    with open(table, "a") as f:
        f.write(head + row + "\n")
    print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
