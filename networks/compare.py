"""Compare spike rasters of one network across backends (design §2).

Two modes:

- **shared noise** (:func:`compare_shared`): every backend got the same
  uniforms ξ, so the rasters must be identical.  Per pair: the share of
  identical counts (pass when ≥ :data:`AGREEMENT_THRESHOLD`), the per-neuron
  rate correlation and the largest |Δu|.
- **independent noise** (:func:`compare_statistics`): each backend draws its
  own random numbers; the N axis of every Trace holds ``trials`` repeats of
  each input (sample index = input · trials + trial).  Per pair: correlation of
  per-(input, neuron) mean rates, Welch t-tests across trials of each
  (input, neuron)'s mean count and of each (input, step)'s MSE,
  Bonferroni-corrected over all of them, and Fano factors.  Pass when the
  rate correlation is ≥ :data:`RATE_CORRELATION_MIN` and no corrected p-value
  is below :data:`ALPHA`.

:func:`run_comparison` runs the backends through ``networks.simulate``,
writes ``report.json``, ``rasters.png`` and ``mse.png`` into a folder.
"""
from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np

from networks.network import json_ready, write_json
from networks.plots import plot_rasters, pyplot, save_figure
from networks.simulate import simulate

AGREEMENT_THRESHOLD = 0.9999
"""Shared noise: minimum share of identical spike counts between two backends."""

RATE_CORRELATION_MIN = 0.95
"""Independent noise: minimum correlation of per-(input, neuron) mean rates."""

ALPHA = 1e-3
"""Independent noise: family-wise significance level of the Bonferroni-corrected tests."""

STAT_TEST = ("Welch two-sample t-tests across trials, one per (input, neuron) on the mean "
             "count and one per (input, step) on the MSE, Bonferroni-corrected, "
             f"family-wise alpha = {ALPHA:g}; plus Pearson correlation of per-(input, neuron) "
             f"mean rates >= {RATE_CORRELATION_MIN}")
"""The statistical test of the independent-noise mode, as reported."""


def _pairs(traces):
    return list(itertools.combinations(list(traces), 2))


def _corr(a, b):
    a, b = np.ravel(a).astype(float), np.ravel(b).astype(float)
    if a.std() == 0 or b.std() == 0:
        return float("nan") if not np.array_equal(a, b) else 1.0
    return float(np.corrcoef(a, b)[0, 1])


def _check_same_run(traces):
    if len(traces) < 2:
        raise ValueError("compare needs at least two traces (backends)")
    first = next(iter(traces.values()))
    for name, tr in traces.items():
        if tr.spikes.shape != first.spikes.shape or not np.array_equal(tr.steps, first.steps):
            raise ValueError(f"trace {name!r} has spikes {tr.spikes.shape} over steps "
                             f"{len(tr.steps)}, unlike the first trace {first.spikes.shape}")
        if not np.array_equal(tr.x, first.x):
            raise ValueError(f"trace {name!r} ran on different inputs")


def compare_shared(traces: dict, threshold: float = AGREEMENT_THRESHOLD) -> dict:
    """Shared-noise comparison of traces (label → Trace) run on the same inputs and noise.

    Returns a dict with ``pairs`` ("a|b" → identical_share, n_counts,
    n_different, rate_correlation, max_abs_du, max_abs_dmse, passed),
    ``threshold`` and ``passed`` (all pairs).
    """
    _check_same_run(traces)
    pairs = {}
    for a, b in _pairs(traces):
        ta, tb = traces[a], traces[b]
        equal = ta.spikes == tb.spikes
        rates_a = ta.spikes.mean(axis=0)  # (N, K) mean count per input and neuron
        rates_b = tb.spikes.mean(axis=0)
        share = float(equal.mean()) if equal.size else 1.0
        pairs[f"{a}|{b}"] = dict(
            identical_share=share,
            n_counts=int(equal.size),
            n_different=int(equal.size - equal.sum()),
            rate_correlation=_corr(rates_a, rates_b),
            max_abs_du=float(np.abs(ta.u - tb.u).max()),
            max_abs_dmse=float(np.abs(ta.step_mse - tb.step_mse).max()),
            passed=bool(share >= threshold),
        )
    return dict(mode="shared", threshold=threshold, pairs=pairs,
                passed=all(p["passed"] for p in pairs.values()))


def _by_trial(trace, trials):
    n = trace.spikes.shape[1]
    if trials < 2 or n % trials:
        raise ValueError(f"independent-noise comparison needs N = inputs x trials samples with "
                         f"trials >= 2; got N = {n}, trials = {trials}")
    return n // trials


def _welch_p(a, b):
    """Two-sided Welch t-test p-values along axis 0 (trials); NaN where undefined."""
    from scipy import stats

    va, vb = a.var(axis=0, ddof=1), b.var(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = stats.ttest_ind(a, b, axis=0, equal_var=False).pvalue
    p = np.asarray(p, dtype=float)
    # Both constant across trials: the t statistic is 0/0 or x/0, undefined.  With
    # few trials two different constants are common by chance (2 trials of a
    # rarely firing neuron), so they are not counted as evidence either way; a
    # backend that is truly off shows in the rate correlation instead.
    both_const = (va == 0) & (vb == 0)
    return np.where(both_const, np.nan, p)


def trial_statistics(trace, trials: int) -> dict:
    """Per-trial summaries of an independent-noise trace with N = inputs × trials samples.

    Returns arrays: ``mean_count`` (trials, inputs, K) mean count over steps;
    ``mse`` (trials, inputs, T) per-step MSE; ``fano`` (inputs, K) Fano factor
    var/mean of counts across trials, averaged over steps where the mean is > 0
    (NaN for neurons that never fire).
    """
    inputs = _by_trial(trace, trials)
    k = trace.spikes.shape[2]
    z = trace.spikes.reshape(len(trace.steps), inputs, trials, k).astype(float)
    mean_count = z.mean(axis=0).transpose(1, 0, 2)  # (trials, inputs, K)
    mse = trace.step_mse.reshape(-1, inputs, trials).transpose(2, 1, 0)  # (trials, inputs, T)
    m, v = z.mean(axis=2), z.var(axis=2, ddof=1)  # over trials: (S, inputs, K)
    fired = m > 0
    f = np.divide(v, m, out=np.zeros_like(v), where=fired)
    n_fired = fired.sum(axis=0)
    fano = np.where(n_fired > 0, f.sum(axis=0) / np.maximum(n_fired, 1), np.nan)
    return dict(mean_count=mean_count, mse=mse, fano=fano)


def compare_statistics(traces: dict, trials: int | None = None, alpha: float = ALPHA,
                       min_correlation: float = RATE_CORRELATION_MIN) -> dict:
    """Independent-noise comparison: statistics over trials instead of identical counts.

    ``traces`` maps a label to a Trace whose N samples are ``trials`` repeats
    of each input (sample = input · trials + trial); ``trials=None`` means all
    N samples are trials of one input.  Returns ``pairs`` ("a|b" → rate_correlation,
    fano_correlation, mean rates, mean Fano factors, min corrected p-values,
    n_tests, passed), ``test`` (the test used) and ``passed``.
    """
    _check_same_run(traces)
    first = next(iter(traces.values()))
    trials = first.spikes.shape[1] if trials is None else trials
    stats = {name: trial_statistics(tr, trials) for name, tr in traces.items()}
    pairs = {}
    for a, b in _pairs(traces):
        sa, sb = stats[a], stats[b]
        p_rate = _welch_p(sa["mean_count"], sb["mean_count"]).ravel()
        p_mse = _welch_p(sa["mse"], sb["mse"]).ravel()
        n_tests = int(np.isfinite(p_rate).sum() + np.isfinite(p_mse).sum())
        bonf = max(n_tests, 1)
        p_rate_c = np.minimum(np.nan_to_num(p_rate, nan=1.0) * bonf, 1.0)
        p_mse_c = np.minimum(np.nan_to_num(p_mse, nan=1.0) * bonf, 1.0)
        ra, rb = sa["mean_count"].mean(axis=0), sb["mean_count"].mean(axis=0)
        fa, fb = sa["fano"], sb["fano"]
        both = np.isfinite(fa) & np.isfinite(fb)
        corr = _corr(ra, rb)
        min_p = float(min(p_rate_c.min(initial=1.0), p_mse_c.min(initial=1.0)))
        pairs[f"{a}|{b}"] = dict(
            rate_correlation=corr,
            mean_rate=[float(ra.mean()), float(rb.mean())],
            mean_fano=[float(np.nanmean(fa)) if np.isfinite(fa).any() else float("nan"),
                       float(np.nanmean(fb)) if np.isfinite(fb).any() else float("nan")],
            fano_correlation=_corr(fa[both], fb[both]) if both.sum() > 1 else float("nan"),
            final_mse=[float(sa["mse"][..., -1].mean()), float(sb["mse"][..., -1].mean())],
            min_p_rate=float(p_rate_c.min(initial=1.0)),
            min_p_mse=float(p_mse_c.min(initial=1.0)),
            n_rate_different=int((p_rate_c < alpha).sum()),
            n_steps_different=int((p_mse_c < alpha).sum()),
            n_tests=n_tests,
            passed=bool(np.isfinite(corr) and corr >= min_correlation and min_p >= alpha),
        )
    return dict(mode="independent", test=STAT_TEST, trials=trials, alpha=alpha,
                min_correlation=min_correlation, pairs=pairs,
                passed=all(p["passed"] for p in pairs.values()))


# ------------------------------------------------------------------------ figures
def plot_mse_curves(traces: dict, path, trials: int | None = None) -> Path:
    """Per-step MSE/pixel of every backend, overlaid (log scale).

    With ``trials`` (independent noise), the curve is the mean over trials and
    inputs with a 95% confidence band (mean ± 1.96 standard errors over trials).
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    styles = ["-", "--", ":", "-."]
    for j, (label, tr) in enumerate(traces.items()):
        steps = np.arange(tr.n_steps)
        if trials:
            mse = trial_statistics(tr, trials)["mse"].mean(axis=1)  # (trials, T)
            mean = mse.mean(axis=0)
            half = 1.96 * mse.std(axis=0, ddof=1) / np.sqrt(mse.shape[0])
            line, = ax.plot(steps, mean, styles[j % 4], label=f"{label} (mean of {trials})")
            ax.fill_between(steps, np.maximum(mean - half, 1e-300), mean + half,
                            color=line.get_color(), alpha=0.25)
        else:
            ax.plot(steps, tr.mse(), styles[j % 4], label=label)
    ax.set_yscale("log")
    ax.set_xlabel("inference step")
    ax.set_ylabel("MSE / pixel")
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)


# ------------------------------------------------------------------------ runner
def run_backends(net, x, steps, backends, *, seed=0, offset=0, options=None,
                 independent_noise=False, trials=1, progress=False):
    """Run each backend through ``networks.simulate``; returns ({label: Trace}, {label: seconds}).

    With ``independent_noise``, x is repeated ``trials`` times per input
    (sample = input · trials + trial) and every backend except the reference
    gets ``independent_noise=True``; the reference uses its shared streams,
    which are independent of the others' generators.
    """
    options = options or {}
    if len(set(backends)) != len(backends) or len(backends) < 2:
        raise ValueError(f"give at least two different backends, got {list(backends)}")
    if independent_noise:
        x = np.repeat(np.asarray(x, dtype=float), trials, axis=0)
    traces, seconds = {}, {}
    for name in backends:
        opts = dict(options.get(name, {}))
        if independent_noise and name != "reference":
            opts["independent_noise"] = True
        t0 = time.perf_counter()
        try:
            traces[name] = simulate(net, x, steps, backend=name, seed=seed, offset=offset,
                                    progress=progress, **opts)
        except TypeError as err:
            if "unexpected keyword" not in str(err):
                raise
            raise ValueError(f"backend {name!r} does not accept the options {sorted(opts)} "
                             f"({err})") from None
        seconds[name] = time.perf_counter() - t0
    return traces, seconds


def run_comparison(net, x, steps, backends, out_dir, *, seed=0, offset=0, options=None,
                   independent_noise=False, trials=20, progress=False,
                   network_path=None) -> dict:
    """Run ``backends`` on the same network and inputs, compare, and write a report folder.

    Writes ``out_dir/report.json`` (the comparison dict plus run settings and
    per-backend summaries), ``rasters.png`` (input 0, one panel per backend and
    difference panels) and ``mse.png`` (per-step MSE curves overlaid).
    Returns the report dict; ``report["passed"]`` is the verdict.
    """
    out = Path(out_dir)
    x = net.check_input(x)
    traces, seconds = run_backends(net, x, steps, list(backends), seed=seed, offset=offset,
                                   options=options, independent_noise=independent_noise,
                                   trials=trials, progress=progress)
    if independent_noise:
        report = compare_statistics(traces, trials)
    else:
        report = compare_shared(traces)
    report.update(
        network=str(network_path) if network_path else None, steps=steps, seed=seed,
        offset=offset, n_inputs=int(x.shape[0]), backends={
            name: dict(info=tr.info, seconds=seconds[name],
                       mean_count=float(tr.spikes.mean()) if tr.spikes.size else 0.0,
                       final_mse=float(tr.mse()[-1]) if tr.n_steps else None)
            for name, tr in traces.items()})
    figs = dict(rasters=plot_rasters(traces, out / "rasters.png"),
                mse=plot_mse_curves(traces, out / "mse.png",
                                    trials if independent_noise else None))
    report["figures"] = {k: str(v) for k, v in figs.items()}
    write_json(out / "report.json", json_ready(report))
    report["traces"] = traces
    return report
