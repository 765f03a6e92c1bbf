"""Evaluation of an exported network as deployed (design §7).

:func:`evaluate` runs the network file's :class:`~networks.IPVAENetwork` through
``networks.simulate(..., backend="reference")`` with true Poisson counts, in
chunks of inputs; chunk i…j uses ``offset = i`` so every input's noise is keyed
by its index in the data set and the results do not depend on the chunk size.
Only a few steps are recorded (log-spaced, plus the probe steps), so 1000 steps
× 1000 inputs × K = 512 never sit in memory densely; the per-step metrics are
kept for every step.

Metrics (per step t = 0 … T−1, averaged over inputs):

- ``mse_spikes`` / ``mse_rates``: mean squared error per pixel of x̂ = Φ z_t
  (spikes) and x̂ = Φ e^{u_t} (rates);
- ``r2_spikes`` / ``r2_rates``: per input 1 − Σ(x − x̂)² / Σ(x − x̄)²
  (x̄ that input's mean), averaged over inputs with non-zero variance;
- ``sparsity``: fraction of exactly-zero counts; ``mean_rate``: mean e^{u_t}
  (spikes per step per neuron).

Runaway: an input whose latent reaches within ``RUNAWAY_MARGIN`` of the
membrane ceiling ``clamp_u`` (rate ≥ e^{clamp_u − 1}), checked at the recorded
steps (``record_steps``) and the final potential u_T.

Linear probe: scikit-learn ``LogisticRegression`` (features divided by the
training features' RMS) on the rates e^{u_t} at each probe step, fit on the
training split's latents (``probe_train``) and scored on the evaluated data
set; the same probe on raw pixels for reference.
"""
from __future__ import annotations

import numpy as np
from networks.progress import progress_bar

RUNAWAY_MARGIN = 1.0
"""A latent with u ≥ clamp_u − RUNAWAY_MARGIN counts as pinned at the rate ceiling."""

CURVES = ("mse_spikes", "r2_spikes", "mse_rates", "r2_rates", "sparsity", "mean_rate")


def log_steps(steps: int, per_decade: int = 4) -> np.ndarray:
    """Sorted unique steps in [0, steps): 0, 16, 160, T−1 and ~``per_decade`` per decade."""
    if steps <= 0:
        return np.zeros(0, dtype=np.int64)
    grid = np.logspace(0, np.log10(max(steps - 1, 1)), 1 + per_decade *
                       max(1, int(np.ceil(np.log10(max(steps, 2))))))
    marks = [0, 16, 160, steps - 1]  # the checkpoints (t = 16 = T_train, 160)
    return np.unique(np.concatenate([marks, np.round(grid).astype(np.int64)])
                     .clip(0, steps - 1))


def _probe_steps(probe_step, steps):
    if probe_step is None:
        probe_step = [steps]
    elif np.ndim(probe_step) == 0:
        probe_step = [probe_step]
    out = sorted({int(s) for s in probe_step})
    if out and (out[0] < 0 or out[-1] > steps):
        raise ValueError(f"probe steps must lie in [0, {steps}] (t = {steps} is the final "
                         f"potential u_T), got {out}")
    return out


def _check(net, dataset, what):
    if len(dataset) == 0:
        raise ValueError(f"{what} data set is empty")
    if dataset.x.shape[1] != net.input_dim:
        raise ValueError(f"{what} data set {dataset.meta.get('name')!r} has D = "
                         f"{dataset.x.shape[1]} (input shape {dataset.input_shape}) but the "
                         f"network expects D = {net.input_dim} "
                         f"(input shape {net.input_shape})")


def run_chunked(net, x, steps, *, seed=0, batch=100, record=(), rate_metrics=True,
                progress=True, desc="evaluate", keep_examples=0, offset=0):
    """Simulate x (N, D) for ``steps`` steps in chunks of ``batch`` inputs.

    ``offset`` is the index of x[0] in the data set (it keys the noise, design §2.2).

    Returns a dict of (T, N) arrays ``step_mse``, ``step_rate_mse``,
    ``step_zeros``, ``step_rate``; ``steps`` (S,) the recorded steps;
    ``u`` (S + 1, N, K) float64 potentials at the recorded steps then u_T;
    and for the first ``keep_examples`` inputs ``recon`` (S, E, D) = Φ z_t.
    """
    from networks import simulate

    n = x.shape[0]
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    parts = {k: [] for k in ("step_mse", "step_rate_mse", "step_zeros", "step_rate", "u")}
    recon, rec_steps = [], None
    with progress_bar(total=n, desc=desc, unit="input", enabled=progress) as bar:
        for i in range(0, n, batch):
            tr = simulate(net, x[i:i + batch], steps, backend="reference", seed=seed,
                          offset=offset + i, record=list(record), rate_metrics=rate_metrics)
            for k in ("step_mse", "step_rate_mse", "step_zeros", "step_rate"):
                parts[k].append(getattr(tr, k))
            parts["u"].append(tr.u)
            rec_steps = tr.steps
            e = keep_examples - sum(r.shape[1] for r in recon)
            if e > 0:
                recon.append(tr.recon[:, :e])
            bar.update(tr.x.shape[0])
    out = {k: np.concatenate(v, axis=1) for k, v in parts.items()}
    out["steps"] = rec_steps
    out["recon"] = np.concatenate(recon, axis=1) if recon else None
    return out


def r2_curve(x, step_mse):
    """(T,) R² averaged over inputs: 1 − MSE_t / Var(x) per input (x̄ = the input's mean).

    x (N, D); step_mse (T, N) mean squared error per pixel.  Inputs with zero
    variance are left out (their R² is undefined).
    """
    var = np.asarray(x, dtype=np.float64).var(axis=1)
    ok = var > 0
    if not ok.any():
        raise ValueError("every input has zero variance; R² is undefined")
    return (1.0 - step_mse[:, ok] / var[ok]).mean(axis=1)


def linear_probe(train_x, train_y, test_x, test_y, *, seed=0, max_iter=2000) -> float:
    """Test accuracy of a multinomial logistic regression fit on the training set.

    Features are divided by one scalar, the RMS of the training features, so
    the fit is well conditioned whatever the units (rates reach e^10) while
    the geometry is kept; a per-feature standardisation would blow up latents
    that are silent on the training set but active on the test set.
    scikit-learn ``LogisticRegression`` (lbfgs, L2, C = 1).
    """
    from sklearn.linear_model import LogisticRegression

    train_x = np.asarray(train_x, dtype=np.float64)
    if len(np.unique(train_y)) < 2:
        raise ValueError("the linear probe needs at least 2 classes in the training labels")
    scale = float(np.sqrt(np.mean(train_x ** 2))) or 1.0
    clf = LogisticRegression(max_iter=max_iter, random_state=seed)
    clf.fit(train_x / scale, train_y)
    return float(clf.score(np.asarray(test_x, dtype=np.float64) / scale, test_y))


def _rates_at(run, step, steps):
    """Rates e^{u_t} (N, K) from a chunked run; t = ``steps`` is the final potential."""
    if step == steps:
        return np.exp(run["u"][-1].astype(np.float64))
    i = int(np.searchsorted(run["steps"], step))
    return np.exp(run["u"][i].astype(np.float64))


def evaluate(net, dataset, *, steps: int = 1000, seed: int = 0, probe_train=None,
             probe_step=None, batch: int = 100, progress: bool = True,
             n_examples: int = 8, runner=None) -> dict:
    """Evaluate the exported ``net`` on ``dataset`` for ``steps`` inference steps.

    Parameters
    ----------
    net : IPVAENetwork (the network file as deployed).
    dataset : ``train.data.Dataset`` with D = ``net.input_dim``.
    steps : T, inference steps (the paper runs to 1000).
    seed : noise seed; input n of the data set uses the stream (seed, n).
    probe_train : optional labelled ``Dataset`` (the training split) to fit the
        linear probe on; needs ``dataset`` labelled as well.
    probe_step : step(s) t ∈ [0, T] whose rates e^{u_t} feed the probe
        (default T, the final potential).  The training split is simulated to
        the largest of them.
    batch : inputs per simulate call (memory ∝ batch × (T + recorded·(K + D))).
    progress : tqdm progress bars.
    n_examples : inputs whose reconstructions at the recorded steps are kept.
    runner : replaces :func:`run_chunked` (same arguments and result), e.g. one that
        spreads the inputs over processes (``ipvae evaluate`` under torchrun).

    Returns
    -------
    dict with numpy arrays: the curves of ``CURVES`` (T,) each; ``max_u``
    (S + 1,) the largest potential over inputs and latents at ``record_steps``
    then at T; ``runaway`` (S + 1,) number of inputs pinned at the ceiling
    there; ``runaway_any`` inputs pinned at any of them; ``runaway_final``;
    ``record_steps`` (S,); ``examples`` (x (E, D), recon (S, E, D), rate_recon
    (S + 1, E, D)); ``probe`` (probe steps, accuracies on rates, accuracy on
    pixels) or None; plus ``n_inputs``, ``steps``, ``seed``, ``dataset`` meta.
    """
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    _check(net, dataset, "evaluation")
    probe_steps = _probe_steps(probe_step, steps) if probe_train is not None else []
    if probe_train is not None:
        _check(net, probe_train, "probe training")
        if probe_train.y is None or dataset.y is None:
            raise ValueError("the linear probe needs labels on both the training and the "
                             "evaluated data set")
    record = np.union1d(log_steps(steps), [s for s in probe_steps if s < steps]).astype(int)

    runner = run_chunked if runner is None else runner
    x = dataset.x
    run = runner(net, x, steps, seed=seed, batch=batch, record=record, progress=progress,
                 keep_examples=n_examples)
    out = dict(steps=steps, seed=seed, n_inputs=len(dataset), dataset=dict(dataset.meta),
               record_steps=run["steps"])
    out["mse_spikes"] = run["step_mse"].mean(axis=1)
    out["mse_rates"] = run["step_rate_mse"].mean(axis=1)
    out["r2_spikes"] = r2_curve(x, run["step_mse"])
    out["r2_rates"] = r2_curve(x, run["step_rate_mse"])
    out["r2_excluded"] = int((x.astype(np.float64).var(axis=1) == 0).sum())
    out["sparsity"] = run["step_zeros"].mean(axis=1)
    out["mean_rate"] = run["step_rate"].mean(axis=1)

    u_max = run["u"].max(axis=2)  # (S + 1, N)
    pinned = u_max >= net.clamp_u - RUNAWAY_MARGIN
    out["max_u"] = u_max.max(axis=1).astype(np.float64)
    out["runaway"] = pinned.sum(axis=1)
    out["runaway_any"] = int(pinned.any(axis=0).sum())
    out["runaway_final"] = int(pinned[-1].sum())
    out["runaway_inputs"] = np.flatnonzero(pinned.any(axis=0))
    out["clamp_u"] = net.clamp_u

    e = min(n_examples, len(dataset))
    u_ex = run["u"][:, :e].astype(np.float64)
    out["examples"] = dict(x=x[:e].astype(np.float64), recon=run["recon"],
                           rate_recon=np.exp(u_ex) @ net.phi.T,
                           input_shape=tuple(dataset.input_shape))

    out["probe"] = None
    if probe_train is not None:
        t_max = max(probe_steps)
        train_steps = max(t_max, 1)
        train_record = [s for s in probe_steps if s < train_steps]
        train_run = runner(net, probe_train.x, train_steps, seed=seed, batch=batch,
                           record=train_record, rate_metrics=False, progress=progress,
                           desc="probe (train)")
        acc = []
        for s in probe_steps:
            acc.append(linear_probe(_rates_at(train_run, s, train_steps), probe_train.y,
                                    _rates_at(run, s, steps),
                                    dataset.y, seed=seed))
        pixels = linear_probe(probe_train.x, probe_train.y, dataset.x, dataset.y, seed=seed)
        out["probe"] = dict(steps=probe_steps, rates=acc, pixels=pixels,
                            n_train=len(probe_train), n_test=len(dataset))
    return out


def at_step(result: dict, name: str, t: int) -> float:
    """Value of curve ``name`` at step t (clipped to the last step)."""
    curve = result[name]
    return float(curve[min(int(t), len(curve) - 1)])


def summary(result: dict, at=(0, 16, 160, 1000)) -> dict:
    """JSON-ready summary: each curve at steps ``at`` (those < T, and T−1), runaway, probe."""
    steps = result["steps"]
    ts = sorted({t for t in at if t < steps} | {steps - 1})
    s = {name: {str(t): at_step(result, name, t) for t in ts} for name in CURVES}
    s.update(steps=steps, seed=result["seed"], n_inputs=result["n_inputs"],
             dataset=result["dataset"], clamp_u=result["clamp_u"],
             r2_excluded_zero_variance_inputs=result["r2_excluded"],
             runaway_margin=RUNAWAY_MARGIN,
             runaway_checked_at=[int(t) for t in result["record_steps"]] + [steps],
             runaway_any=result["runaway_any"], runaway_final=result["runaway_final"],
             runaway_inputs=[int(i) for i in result["runaway_inputs"]],
             max_u=float(result["max_u"].max()))
    if result.get("probe"):
        p = result["probe"]
        s["probe"] = dict(steps=p["steps"], rates=p["rates"], pixels=p["pixels"],
                          n_train=p["n_train"], n_test=p["n_test"],
                          model="LogisticRegression (lbfgs, L2, C=1) on features / training RMS")
    return s


def to_json(result: dict) -> dict:
    """The full result as JSON-ready lists (curves included, example images left out)."""
    js = summary(result)
    js["curves"] = {name: [float(v) for v in result[name]] for name in CURVES}
    js["record_steps"] = [int(t) for t in result["record_steps"]]
    js["max_u_at_record_steps"] = [float(v) for v in result["max_u"]]
    js["runaway_at_record_steps"] = [int(v) for v in result["runaway"]]
    return js
