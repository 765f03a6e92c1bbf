"""Every implementation of the scalar recipe against its one home, neurons/recipe.h (design §2.1).

A table of implementations (``IMPLEMENTATIONS``: numpy, the compiled kernels in both math
modes, Brian2's numpy, cython and cpp_standalone functions) runs probes whose answers follow
from the header's constants alone: ξ = 0 returns the start of the search, ξ above 1 runs it to
the cap, rate 0 fires nothing, and potentials below the floor or at the ceiling clamp to
values computed exactly (mpmath) from the parsed constants.  An implementation that does not
take its constants from the header (or was not rebuilt after an edit) fails its row.  To add
an implementation, add a row: a function returning
``(fire(xi, u) -> (rate, counts), membrane(u, fb, eta, b, c_u, c_du) -> u')``.
"""
import json
import math
import subprocess
import sys
import textwrap

import mpmath
import numpy as np
import pytest
from conftest import require

from neurons import poisson
from neurons.poisson import (POTENTIAL_TOLERANCE, count_flip_tolerance, membrane_update,
                             poisson_icdf, recipe_constants)

pytestmark = pytest.mark.numerics

HEADER = recipe_constants()
FLOOR = HEADER["U_FLOOR"]
START = HEADER["ICDF_START_SIGMAS"]
CAP_SIGMAS, CAP_EXTRA = HEADER["ICDF_CAP_SIGMAS"], HEADER["ICDF_CAP_EXTRA"]
mpmath.mp.prec = 113


# ---------------------------------------------------------------- the implementations
def _numpy():
    def fire(xi, u):
        rate = np.exp(u)
        return rate, poisson_icdf(xi, rate).astype(float)
    return fire, membrane_update


def _kernels(lanes):
    def make():
        require("neurons._kernels")
        from neurons import kernels

        def fire(xi, u):
            kernels.vector_lanes(lanes)
            try:
                rate, counts = np.empty_like(u), np.empty_like(u)
                kernels.spikes(u, xi, rate, counts)
            finally:
                kernels.vector_math(True)
            return rate, counts

        def membrane(u, fb, eta, b, cu, cdu):
            kernels.vector_lanes(lanes)
            try:
                out = np.empty_like(u)
                kernels.membrane(u, fb, eta, b, cu, cdu, out)
            finally:
                kernels.vector_math(True)
            return out
        return fire, membrane
    return make


_BRIAN_SCRIPT = textwrap.dedent("""
    import json, sys, tempfile
    import numpy as np
    import brian2 as b2
    from neurons.brian import brian_functions

    target, data = sys.argv[1], json.load(sys.stdin)
    icdf, clamp = brian_functions()
    b2.BrianLogger.log_level_error()
    if target == "cpp_standalone":
        tmp = tempfile.TemporaryDirectory()
        b2.set_device("cpp_standalone", directory=tmp.name)
    else:
        b2.prefs.codegen.target = target
    ns = dict(ipvae_poisson_icdf=icdf, ipvae_clamp=clamp, eta=data["eta"],
              clamp_u=data["cu"], clamp_du=data["cdu"])
    a = b2.NeuronGroup(len(data["xi"]), "q : 1\\nv : 1\\nr : 1\\nz : 1", namespace=ns,
                       name="fire")
    a.q, a.v = data["xi"], data["v"]
    a.run_regularly("r = exp(v)\\nz = ipvae_poisson_icdf(q, r)")
    m = b2.NeuronGroup(len(data["u"]), "u : 1\\nf : 1\\nb : 1", namespace=ns, name="membrane")
    m.u, m.f, m.b = data["u"], data["fb"], data["b"]
    m.run_regularly("u = ipvae_clamp(u + ipvae_clamp(eta * (f - b), clamp_du), clamp_u)")
    net = b2.Network(a, m)
    net.run(b2.defaultclock.dt, namespace={})
    json.dump(dict(r=a.r[:].tolist(), z=a.z[:].tolist(), u=m.u[:].tolist()), sys.stdout)
""")


def _brian(target):
    """Brian2 on one target; the probes of this module all run in one subprocess (one build)."""
    def make():
        require("brian2")
        fires = [_start_cap_probe()[:2], _random_probe()]
        membranes = [_membrane_probe()]
        xi, u = (np.concatenate(a) for a in zip(*fires))
        mu, fb, eta, b, cu, cdu = membranes[0]
        done = subprocess.run([sys.executable, "-c", _BRIAN_SCRIPT, target],
                              input=json.dumps(dict(xi=xi.tolist(), v=u.tolist(), u=mu.tolist(),
                                                    fb=fb.tolist(), b=b.tolist(), eta=eta,
                                                    cu=cu, cdu=cdu)),
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        out = {k: np.array(v) for k, v in json.loads(done.stdout).items()}
        ends = np.cumsum([0] + [len(x) for x, _ in fires])

        def fire(xi, u):
            for (x0, u0), i, j in zip(fires, ends[:-1], ends[1:]):
                if np.array_equal(x0, xi) and np.array_equal(u0, u, equal_nan=True):
                    return out["r"][i:j], out["z"][i:j]
            raise AssertionError("the Brian2 rows run this module's probes only")

        def membrane(*args):
            assert all(np.array_equal(a0, a1, equal_nan=True) for a0, a1 in zip(membranes[0], args))
            return out["u"]
        return fire, membrane
    return make


def _torch_step():
    """The training step (neurons.torch_step) in float64 at temperature 0: torch's exp and
    clamp, the shared inverse CDF."""
    torch = require("torch")
    from neurons import torch_step

    def fire(xi, u):
        rate = torch.exp(torch.from_numpy(u))
        z, _ = torch_step.spikes(rate, 0.0, torch.from_numpy(xi), tail=False)
        return rate.numpy(), z.numpy()

    def membrane(u, fb, eta, b, cu, cdu):
        t = torch.from_numpy
        return torch_step.membrane(t(fb), t(u), eta, t(b), cu, cdu)[0].numpy()
    return fire, membrane


def _snntorch_neuron():
    """The snntorch PoissonLatent neuron at temperature 0, one step from u with feedback fb."""
    torch = require("torch")
    require("snntorch")
    from neurons.snntorch import PoissonLatent

    def neuron(eta, b, cu, cdu, k):
        return PoissonLatent(k, log_bias=np.log(b), log_eta=np.log(eta), clamp_u=cu,
                             clamp_du=cdu, temperature=0.0, dtype=torch.float64)

    def fire(xi, u):
        lat = neuron(1.0, np.ones(u.shape[-1]), 8.0, 7.0, u.shape[-1])
        t = torch.from_numpy
        with torch.no_grad():
            z = lat.fire(t(u), noise=t(xi))
        return torch.exp(t(u)).numpy(), z.numpy()  # the rate fire() computes

    def membrane(u, fb, eta, b, cu, cdu):
        lat = neuron(eta, b, cu, cdu, u.shape[-1])
        with torch.no_grad():
            return lat.integrate(torch.from_numpy(fb), torch.from_numpy(u)).numpy()
    return fire, membrane


IMPLEMENTATIONS = {
    "numpy": _numpy,
    "torch-step": _torch_step,
    "snntorch-neuron": _snntorch_neuron,
    "kernels-libm": _kernels(False),
    "kernels-libmvec-avx2": _kernels(4),
    "kernels-libmvec-widest": _kernels(8),
    "brian2-numpy": _brian("numpy"),
    "brian2-cython": _brian("cython"),
    "brian2-cpp_standalone": _brian("cpp_standalone"),
}
"""name -> () -> (fire, membrane), on float64 arrays of one shape:

- ``fire(xi, u) -> (rate, counts)``: the rate e^u the implementation computes, and its counts;
- ``membrane(u, fb, eta, b, c_u, c_du) -> u'``: clamp_u(u + clamp_du(eta (fb - b))).
"""


@pytest.fixture(params=list(IMPLEMENTATIONS), scope="module")
def impl(request):
    return request.param, IMPLEMENTATIONS[request.param]()


# ---------------------------------------------------------------- expected values
def _start(r):
    """Where the search starts, from the header's constants (exact float64 operations)."""
    return math.floor(max(r - START * math.sqrt(r), 0.0)) if r > START * START else 0


def _cap_count(r):
    """The count at which the search gives up: the least m >= cap (searches start below it)."""
    return math.ceil(r + CAP_SIGMAS * math.sqrt(r) + CAP_EXTRA)


def exact_clamp(x, c):
    v = max(mpmath.mpf(x), mpmath.mpf(FLOOR))
    return mpmath.mpf(c) - mpmath.log1p(mpmath.exp(mpmath.mpf(c) - v))


def _exact_membrane(u, fb, eta, b, cu, cdu):
    du = exact_clamp(float((fb - b) * eta), cdu)  # the product rounds alike everywhere
    return float(exact_clamp(mpmath.mpf(u) + du, cu))


def exact_cdf(k, r):
    """P(Z <= k) for Z ~ Poisson(r), r the exact value of the float64 r."""
    return mpmath.gammainc(k + 1, mpmath.mpf(r), mpmath.inf, regularized=True) if k >= 0 else 0


# ---------------------------------------------------------------- the probes
def test_header_constants_are_the_ones_numpy_uses():
    assert poisson.U_FLOOR == FLOOR
    assert (poisson.ICDF_START_SIGMAS, poisson.ICDF_CAP_SIGMAS, poisson.ICDF_CAP_EXTRA) == (
        START, CAP_SIGMAS, CAP_EXTRA)
    assert HEADER["LOGE2"] == math.log(2.0)


def test_a_missing_constant_is_a_clear_error(tmp_path):
    bad = tmp_path / "recipe.h"
    bad.write_text("#define IPVAE_U_FLOOR (-8.0)\n#define OTHER 3\n")
    assert recipe_constants(bad) == {"U_FLOOR": -8.0}
    with pytest.raises(ImportError, match="cannot be read"):
        recipe_constants(tmp_path / "absent.h")


START_RATES = [1.0, 100.0, 121.0, 150.0, 400.0, 10000.0, 22026.0]
CAP_RATES = [4.0, 100.0, 121.0, 400.0, 10000.0]


def _start_cap_probe():
    """(xi, u, n_start, n_cap): ξ = 0 at rate 0 and START_RATES (the search stops at its
    start), ξ = 2 at rate 0 and CAP_RATES (outside the domain: it runs to the cap), then
    rate 0 at ξ = 0.5 and next to 1, and e^10 at ξ next to 1."""
    near_one = np.nextafter(1.0, 0.0)
    n0, n1 = len(START_RATES) + 1, len(CAP_RATES) + 1
    xi = np.array([0.0] * n0 + [2.0] * n1 + [0.5, near_one, near_one])
    with np.errstate(divide="ignore"):
        u = np.log([0.0] + START_RATES + [0.0] + CAP_RATES + [0.0, 0.0, 22026.0])
    return xi, u, n0, n1


def _random_probe():
    rng = np.random.default_rng(7)
    return rng.random(3000), rng.uniform(-7.0, 10.0, 3000)


def _membrane_probe():
    """(u, fb, eta, b, c_u, c_du): u and fb around the floor and the ceilings, and NaN."""
    values = [-1e9, -20.0, FLOOR - 0.25, FLOOR, FLOOR + 0.25, 0.0, 7.0, 8.0, 11.0, 1e9]
    u, fb = (a.ravel() for a in np.meshgrid(values, values))
    u, fb = np.append(u, [np.nan, 0.0]), np.append(fb, [0.0, np.nan])
    return u, fb, 1.0, np.zeros_like(u), 8.0, 7.0


def test_start_cap_and_rate_zero_follow_the_header(impl):
    name, (fire, _) = impl
    xi, u, n0, n1 = _start_cap_probe()
    rate, got = fire(xi, u)
    # The expected counts follow from the rate each implementation computed, by float64
    # operations that round alike everywhere (no exp).
    want = ([_start(v) for v in rate[:n0]] + [_cap_count(v) for v in rate[n0:n0 + n1]]
            + [0, 0])
    assert got[:-1].tolist() == want, name
    assert rate[0] == 0.0 and rate[-1] < got[-1] <= _cap_count(rate[-1]), name


def test_floor_and_ceiling_follow_the_header(impl):
    name, (_, membrane) = impl
    u, fb, eta, b, cu, cdu = _membrane_probe()
    with np.errstate(invalid="ignore"):
        got = np.asarray(membrane(u, fb, eta, b, cu, cdu))
    want = np.array([_exact_membrane(*a, eta, 0.0, cu, cdu) for a in zip(u[:-2], fb[:-2])])
    np.testing.assert_allclose(got[:-2], want, rtol=0, atol=POTENTIAL_TOLERANCE, err_msg=name)
    assert np.isnan(got[-2:]).all(), f"{name}: NaN must propagate"


def test_random_counts_agree_with_the_recipe_up_to_rounding_at_a_step(impl):
    """Random u and ξ: counts equal numpy's recipe at the implementation's own rates, except
    where ξ sits within rounding of a CDF step (count_flip_tolerance)."""
    name, (fire, _) = impl
    xi, u = _random_probe()
    rate, got = fire(xi, u)
    want = poisson_icdf(xi, rate)
    flips = np.flatnonzero(got != want)
    for j in flips:
        k = int(min(got[j], want[j]))
        assert abs(got[j] - want[j]) == 1, (name, j)
        gap = abs(mpmath.mpf(xi[j]) - exact_cdf(k, rate[j]))
        assert gap <= count_flip_tolerance(rate[j]), (name, xi[j], rate[j], k, float(gap))
    assert len(flips) <= 1, f"{name}: {len(flips)} flips in 3000 random draws"
