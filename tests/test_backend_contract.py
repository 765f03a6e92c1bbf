"""The backend contract (design §2, §4.2), tested once for every backend and option.

Each row of ``ROWS`` is a backend with its options.  Every row runs through the
same tests and is held to its group's line of ``TOLERANCES``: under the same
noise its counts equal its group's anchor (for floating point: the recipe of
design §1 written out with ``neurons.poisson``, step by step), and so do its
potentials within the group's tolerance; a batch equals lone runs; explicit
noise replaces the streams; ``record=`` keeps exactly the asked steps; ``offset``
selects the streams; the same bad input gives the same error.  Leaving a row out
is the only way to leave a backend out; a row whose simulator is missing is
skipped locally and fails under CI=true (``conftest.require``).

The one difference the contract allows in the counts of floating-point rows
(design §2.1): where ξ lies within rounding of a step of the Poisson CDF, the
potentials' last-bit differences may move the count across the step.
:func:`assert_same_raster` accepts such a flip only after re-evaluating the CDF
at that step in extended precision (mpmath) and finding ξ within rounding of it;
the input's later steps are then not compared (its trajectory has diverged).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import mpmath
import numpy as np
import pytest
from conftest import require

from networks import planted_network, simulate
from networks.noise import shared_uniforms
from neurons.poisson import membrane_update, poisson_icdf


@dataclass(frozen=True)
class Row:
    """One backend with its options, as the contract suite runs it."""

    name: str
    backend: str
    options: dict = field(default_factory=dict)
    needs: str | None = None  # module that must import (None: always available)
    group: str = "float"


ROWS = [
    Row("reference", "reference"),
    Row("lava-folded", "lava", dict(topology="folded"), "lava"),
    Row("lava-error-units", "lava", dict(topology="error-units"), "lava"),
    Row("brian2-numpy", "brian2", dict(target="numpy"), "brian2"),
    Row("brian2-cython", "brian2", dict(target="cython"), "brian2"),
    Row("brian2-cpp_standalone", "brian2", dict(target="cpp_standalone"), "brian2"),
    Row("fixed", "fixed", group="fixed"),
    Row("lava-fixed", "lava-fixed", needs="lava", group="fixed"),
]

TOLERANCES = {
    # anchor: what the group's counts are compared with; u_atol: |Δu| allowed (log-rate units)
    "float": dict(anchor="recipe", flips="only where ξ is within rounding of a CDF step",
                  u_atol=1e-9, mse_rtol=1e-9),
    # integers (design §2.4): exact against the integer emulator; against the float model
    # by quality only (tests/test_fixed_point.py)
    "fixed": dict(anchor="fixed", flips="none", u_atol=0.0, mse_rtol=1e-9),
}
"""One line per group of rows: what every row of the group must meet."""


def _ids(rows):
    return [r.name for r in rows]


@pytest.fixture(params=ROWS, ids=_ids(ROWS))
def row(request):
    r = request.param
    if r.needs is not None:
        require(r.needs)
    return r


def run_row(row: Row, net, x, steps, **kwargs):
    return simulate(net, x, steps, backend=row.backend, **row.options, **kwargs)


# ------------------------------------------------------------------------------ anchors
def recipe_run(net, x, steps, xi):
    """The recurrence of design §1 written out with neurons.poisson: counts (T, N, K), u (T+1, N, K)."""
    u = np.broadcast_to(net.u0, (len(x), net.n_latents)).astype(np.float64)
    counts, us = [], [u]
    for t in range(steps):
        z = poisson_icdf(xi[t], np.exp(u))
        fb = ((x - z @ net.phi.T) / net.sigma2) @ net.phi
        u = membrane_update(u, fb, net.eta, net.bias, net.clamp_u, net.clamp_du)
        counts.append(z)
        us.append(u)
    return np.array(counts).reshape(steps, len(x), net.n_latents), np.array(us)


_ANCHORS: dict = {}


def anchor(row: Row, case: str, net, x, steps, xi, **kwargs):
    """(counts, u) of the row's group anchor for this case, computed once per session."""
    key = (TOLERANCES[row.group]["anchor"], case)
    if key not in _ANCHORS:
        if key[0] == "recipe":
            _ANCHORS[key] = recipe_run(net, x, steps, xi)
        else:
            tr = simulate(net, x, steps, backend=key[0], **kwargs)
            _ANCHORS[key] = (tr.spikes, tr.u)
    return _ANCHORS[key]


# ---------------------------------------------------------------------- the comparison
def cdf_step_distance(xi: float, m: int, rate: float) -> float:
    """|ξ − P(Z ≤ m; rate)|, the CDF evaluated in 50-digit arithmetic."""
    with mpmath.workdps(50):
        cdf = mpmath.gammainc(m + 1, rate, mpmath.inf, regularized=True)
        return float(abs(mpmath.mpf(float(xi)) - cdf))


def assert_same_raster(counts, u, ref_counts, ref_u, xi, u_atol):
    """Counts equal the reference's and potentials agree within ``u_atol``, except after a
    flip explained by rounding (see the module docstring).  Returns the number of flips.

    counts, ref_counts (T, N, K); u, ref_u (T+1, N, K); xi (T, N, K) the uniforms used.
    """
    counts, ref_counts = np.asarray(counts), np.asarray(ref_counts)
    assert counts.shape == ref_counts.shape, (counts.shape, ref_counts.shape)
    assert u.shape == ref_u.shape, (u.shape, ref_u.shape)
    flips = 0
    for n in range(counts.shape[1]):
        differ = np.flatnonzero((counts[:, n] != ref_counts[:, n]).any(axis=1))
        last = counts.shape[0] if differ.size == 0 else int(differ[0])
        np.testing.assert_allclose(u[:last + 1, n], ref_u[:last + 1, n], rtol=0, atol=u_atol,
                                   err_msg=f"input {n}: potentials before step {last}")
        if differ.size == 0:
            continue
        t = last
        for k in np.flatnonzero(counts[t, n] != ref_counts[t, n]):
            lo = int(min(counts[t, n, k], ref_counts[t, n, k]))
            rate = float(np.exp(ref_u[t, n, k]))
            du = abs(float(u[t, n, k] - ref_u[t, n, k]))
            gap = cdf_step_distance(xi[t, n, k], lo, rate)
            allowed = 1e-14 + 4 * du * max(rate, 1.0)
            assert gap <= allowed, (
                f"input {n}, step {t}, neuron {k}: counts {counts[t, n, k]} vs "
                f"{ref_counts[t, n, k]} but ξ lies {gap:.3g} from the CDF step "
                f"(rounding allows {allowed:.3g})")
            flips += 1
    return flips


def _busy(counts):
    """The comparison must be able to fail: a mix of silent and firing entries."""
    assert counts.size >= 8000
    assert 0.01 < (counts > 0).mean() < 0.99


# ------------------------------------------------------------------------------ the suite
@pytest.fixture(scope="module")
def planted():
    """D=64, K=128 planted network, 8 inputs: 8 × 16 steps × 128 = 16,384 counts."""
    return planted_network(64, 128, 5, seed=0)[:2]


@pytest.fixture(scope="module")
def odd_shape():
    """D=50, K=37 (D ≠ K, K odd), 7 inputs, 40 steps of explicit noise: 10,360 counts."""
    net, x, _ = planted_network(50, 37, 4, seed=11, n_inputs=7)
    return net, x, np.random.default_rng(99).random((40, 7, 37))


SHARED = dict(steps=16, seed=5, offset=3)
RECORD = [15, 0, 7, 7]
LONE = 2  # input 2 of the batch, run alone with offset = SHARED offset + 2

_RUNS: dict = {}


def row_runs(row: Row, planted, odd_shape) -> dict:
    """The four runs the suite makes of each row, once per session (compiling backends pay
    per run): the batch under shared noise, the same with ``record=``, one input alone,
    and the odd shape under explicit noise."""
    if row.name not in _RUNS:
        net, x = planted
        steps, seed, offset = SHARED["steps"], SHARED["seed"], SHARED["offset"]
        onet, ox, oxi = odd_shape
        _RUNS[row.name] = dict(
            batch=run_row(row, net, x, steps, seed=seed, offset=offset, rate_metrics=True),
            part=run_row(row, net, x, steps, seed=seed, offset=offset, rate_metrics=True,
                         record=np.array(RECORD)),
            lone=run_row(row, net, x[LONE], steps, seed=seed, offset=offset + LONE),
            explicit=run_row(row, onet, ox, oxi.shape[0], noise=oxi, seed=1),
        )
    return _RUNS[row.name]


def test_counts_and_potentials_match_under_shared_noise(row, planted, odd_shape):
    net, x = planted
    steps, seed, offset = SHARED["steps"], SHARED["seed"], SHARED["offset"]
    xi = shared_uniforms(seed, steps, len(x), net.n_latents, offset=offset)
    ref_counts, ref_u = anchor(row, "shared", net, x, steps, xi, seed=seed, offset=offset)
    tr = row_runs(row, planted, odd_shape)["batch"]
    _busy(tr.spikes)
    tol = TOLERANCES[row.group]
    assert assert_same_raster(tr.spikes, tr.u, ref_counts, ref_u, xi, tol["u_atol"]) == 0
    recon = ref_counts @ net.phi.T
    np.testing.assert_allclose(tr.mse(), ((x - recon) ** 2).mean(axis=(1, 2)),
                               rtol=tol["mse_rtol"])
    assert tr.info["backend"] == row.backend and tr.info["seed"] == seed
    assert tr.info["offset"] == offset


def test_explicit_noise_replaces_the_streams(row, planted, odd_shape):
    """Against the recipe under the explicit ξ, which differs from the recipe under the
    seed's streams: a backend that ignored ``noise=`` would fail."""
    net, x, xi = odd_shape
    ref_counts, ref_u = anchor(row, "explicit", net, x, len(xi), xi, noise=xi)
    tr = row_runs(row, planted, odd_shape)["explicit"]
    _busy(tr.spikes)
    assert assert_same_raster(tr.spikes, tr.u, ref_counts, ref_u, xi,
                              TOLERANCES[row.group]["u_atol"]) == 0
    streams = shared_uniforms(1, len(xi), len(x), net.n_latents)
    assert not np.array_equal(poisson_icdf(streams[0], np.exp(ref_u[0])), ref_counts[0])


def test_batch_equals_lone_runs(row, planted, odd_shape):
    """Input n of a batch equals a lone run with offset = n: nothing leaks between inputs."""
    runs = row_runs(row, planted, odd_shape)
    batch, lone = runs["batch"], runs["lone"]
    assert not np.allclose(batch.u[-1, 0], batch.u[-1, LONE])  # a leak would show
    np.testing.assert_array_equal(lone.spikes[:, 0], batch.spikes[:, LONE])
    np.testing.assert_allclose(lone.u[:, 0], batch.u[:, LONE], rtol=0,
                               atol=TOLERANCES[row.group]["u_atol"])
    assert lone.info["offset"] == SHARED["offset"] + LONE


def test_record_keeps_the_asked_steps_and_every_metric(row, planted, odd_shape):
    runs = row_runs(row, planted, odd_shape)
    full, part = runs["batch"], runs["part"]
    kept = sorted(set(RECORD))
    np.testing.assert_array_equal(part.steps, kept)
    np.testing.assert_array_equal(part.spikes, full.spikes[kept])
    np.testing.assert_array_equal(part.u, full.u[kept + [SHARED["steps"]]])
    np.testing.assert_array_equal(part.recon, full.recon[kept])
    for name in ("step_mse", "step_zeros", "step_rate", "step_rate_mse"):
        np.testing.assert_array_equal(getattr(part, name), getattr(full, name), err_msg=name)
    assert np.isfinite(full.step_rate_mse).all()


BAD_INPUT = [
    # (what, simulate arguments, the error's message)
    ("negative steps", dict(steps=-1), r"steps must be >= 0"),
    ("fractional steps", dict(steps=2.5), r"steps must be an integer"),
    ("negative seed", dict(seed=-1), r"\[0, 2\*\*63\)"),
    ("seed past 2**63", dict(seed=2**63), r"\[0, 2\*\*63\)"),
    ("uint64 seed 2**64-1", dict(seed=np.uint64(2**64 - 1)), r"\[0, 2\*\*63\)"),
    ("float seed", dict(seed=1.0), r"seed must be an integer"),
    ("negative offset", dict(offset=-2), r"\[0, 2\*\*63\)"),
    ("last index past 2**63", dict(offset=2**63 - 1), r"\[0, 2\*\*63\)"),
    ("record past the end", dict(record=[4]), r"record= steps must lie in \[0, 4\)"),
    ("negative record", dict(record=[-1]), r"record= steps must lie in \[0, 4\)"),
    ("fractional record", dict(record=[1.5]), r"integer steps"),
    ("record not a sequence", dict(record=3), r"record= must be a sequence"),
    ("noise of the wrong shape", dict(noise=np.full((3, 2, 128), 0.5)), r"noise has shape"),
    ("noise outside [0, 1)", dict(noise=np.full((4, 2, 128), 1.0)), r"uniforms in \[0, 1\)"),
    ("input of the wrong size", dict(x=np.zeros((2, 63))), r"input has shape \(2, 63\)"),
    ("input with NaN", dict(x=np.full((2, 64), np.nan)), r"NaN"),
    ("an option no backend has", dict(nonsense=1), r"does not take nonsense"),
]


@pytest.mark.parametrize("what,kwargs,message", BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
def test_the_same_bad_input_gives_the_same_error(row, planted, what, kwargs, message):
    net, x = planted
    args = dict(x=x[:2], steps=4, **row.options)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        simulate(net, backend=row.backend, **args)


def test_options_of_another_backend_are_refused_naming_this_backends_options(row, planted):
    net, x = planted
    foreign = {"reference": dict(target="cython"), "lava": dict(target="cython"),
               "brian2": dict(topology="folded")}
    for name, value in foreign.get(row.backend, dict(topology="folded")).items():
        with pytest.raises(ValueError, match=rf"backend '{row.backend}' does not take {name}"):
            run_row(row, net, x[:1], 2, **{name: value})


# ------------------------------------------------------------- the comparison can fail
def test_the_flip_check_accepts_rounding_and_refuses_anything_else():
    """A count flip is accepted only where ξ sits on a CDF step within rounding of Δu."""
    rate = 2.0
    cdf1 = float(mpmath.gammainc(2, rate, mpmath.inf, regularized=True))  # P(Z ≤ 1; 2)
    u0 = np.log(rate)
    xi = np.full((1, 1, 2), 0.3)
    xi[0, 0, 0] = cdf1
    ref_u = np.full((2, 1, 2), u0)
    ref_counts = poisson_icdf(xi, np.exp(ref_u[:1]))
    near = ref_counts.copy()
    near[0, 0, 0] = 3 - ref_counts[0, 0, 0]  # 1 ↔ 2: across the step ξ sits on
    u = ref_u.copy()
    u[0, 0, 0] = np.nextafter(u0, 9.0)
    assert assert_same_raster(near, u, ref_counts, ref_u, xi, u_atol=1e-12) == 1
    far = ref_counts.copy()
    far[0, 0, 1] += 1  # ξ = 0.3 is nowhere near a step of this neuron's CDF
    with pytest.raises(AssertionError, match="from the CDF step"):
        assert_same_raster(far, u, ref_counts, ref_u, xi, u_atol=1e-12)
    with pytest.raises(AssertionError, match="potentials"):
        assert_same_raster(ref_counts, ref_u + 1e-6, ref_counts, ref_u, xi, u_atol=1e-9)
