"""The fixed-point (Loihi) path: integer generator, tables, quantization, the integer
emulator (backend "fixed"), its quality against the float model, and bit-for-bit
agreement with Lava's fixed_pt models (backend "lava-fixed", needs lava-nc)."""
import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import require
from scipy import stats

from hardware.quantize import (build_luts, load_quantized, quantize, quantize_matrix,
                               save_quantized)
from networks import IPVAENetwork, load_network, planted_network, reference, simulate
from neurons import fixed

TRAINED = Path(__file__).parent / "data" / "trained_digits_k64.npz"


@pytest.fixture(scope="module")
def planted32():
    return planted_network(64, 128, 5, seed=0, n_inputs=32)


@pytest.fixture(scope="module")
def trained():
    """A small network trained on scikit-learn's 8×8 digits (K = 64) and 32 held-out digits."""
    net = load_network(TRAINED)
    from train.data import load_dataset

    x = load_dataset("digits", "test").x[:32]
    return net, np.asarray(x, dtype=np.float64).reshape(32, -1)


# --- the integer generator ---------------------------------------------------

def _draws(seed, index, n=1 << 16):
    keys = fixed.stream_keys(seed, [index])
    return fixed.uniforms(keys[:, None], np.arange(n)[None, :])[0]


def test_integer_uniforms_are_uniform_and_keyed():
    v = _draws(0, 0)
    assert v.min() >= 0 and v.max() < 2 ** 32
    xi = v / 2.0 ** 32
    counts = np.bincount((xi * 64).astype(int), minlength=64)
    chi2 = ((counts - len(xi) / 64) ** 2 / (len(xi) / 64)).sum()
    assert chi2 < stats.chi2.ppf(0.999, 63), chi2
    assert stats.kstest(xi, "uniform").pvalue > 1e-3
    # Successive uniforms are uncorrelated (a weak generator would show here).
    assert abs(np.corrcoef(xi[:-1], xi[1:])[0, 1]) < 0.02
    # Deterministic, and different for another seed or another input index.
    np.testing.assert_array_equal(v, _draws(0, 0))
    for other in (_draws(1, 0), _draws(0, 1)):
        assert np.mean(other == v) < 1e-3
        assert abs(np.corrcoef(other / 2.0 ** 32, xi)[0, 1]) < 0.02


def test_integer_counts_are_poisson():
    """The integer inverse CDF (with the rate split above 16) gives Poisson counts."""
    luts = build_luts()
    for r in (0.05, 1.0, 7.0, 40.0, 300.0):
        U = np.full((1, 20000), int(round(math.log(r) * 4096)))
        z, R = fixed.counts(U, fixed.stream_keys(3, [0]), 0, luts["exp_lut"],
                            luts["negexp_lut"])
        rate = R[0, 0] / 2.0 ** fixed.R_FRAC
        assert abs(rate / r - 1) < 1e-3
        mean, var = z.mean(), z.var()
        se = math.sqrt(rate / z.size)
        assert abs(mean - rate) < 5 * se, (r, mean)
        assert abs(var / rate - 1) < 0.08, (r, var)


def test_tables_are_exact_and_cpu_independent():
    """The tables are built with decimal arithmetic: a fixed content (hash), each entry the
    correctly rounded value (checked against libm with a margin)."""
    luts = build_luts()
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(luts[k], dtype="<i8").tobytes()
                                     for k in ("exp_lut", "negexp_lut", "softplus_lut")))
    assert digest.hexdigest() == \
        "a45d259ba18836f43bc3b632448a4436b45f47c578ef047c5d585ee1c39ca25b"
    step = 2.0 ** -fixed.LUT_STEP_BITS
    args = fixed.EXP_LO + step * np.arange(len(luts["exp_lut"]))
    exact = np.exp(args) * 2.0 ** fixed.R_FRAC
    assert np.all(np.abs(luts["exp_lut"] - exact) <= 0.5 + 1e-6 * exact)
    s = fixed.SOFTPLUS_LO + step * np.arange(len(luts["softplus_lut"]))
    assert np.all(np.abs(luts["softplus_lut"] - np.logaddexp(0, s) * 4096) <= 0.5 + 1e-9)
    assert np.all(np.diff(luts["exp_lut"]) > 0) and np.all(np.diff(luts["negexp_lut"]) < 0)


# --- quantization --------------------------------------------------------------

def test_quantization_errors_are_clear(planted32):
    net, _, _ = planted32
    with pytest.raises(ValueError, match="all weights are zero"):
        quantize(IPVAENetwork(phi=np.zeros((4, 3)), log_sigma=np.zeros(4),
                              log_bias=np.zeros(3), log_eta=0.0, u0=np.zeros(3)))
    with pytest.raises(ValueError, match="NaN"):
        quantize_matrix(np.array([[1.0, np.nan]]), 8, 12, "w")
    big = IPVAENetwork(phi=net.phi * 1e4, log_sigma=net.log_sigma, log_bias=net.log_bias,
                       log_eta=net.log_eta, u0=net.u0)
    with pytest.raises(ValueError, match="exponent of .* outside the available"):
        quantize(big)
    tiny = IPVAENetwork(phi=net.phi * 1e-4, log_sigma=net.log_sigma, log_bias=net.log_bias,
                        log_eta=net.log_eta, u0=net.u0)
    with pytest.raises(ValueError, match="outside the available -8..7"):
        quantize(tiny)
    with pytest.raises(ValueError, match="weight_bits must be an integer in 2..8"):
        quantize(net, weight_bits=9)


def test_quantized_weights_are_lavas_format_and_within_half_a_step(planted32):
    net, _, _ = planted32
    for bits in (8, 4):
        q = quantize(net, weight_bits=bits)
        for w, e in ((q.w_rec, q.rec_exp), (q.w_ff, q.ff_exp)):
            assert w.min() >= -256 and w.max() <= 254
            assert np.all(w % (1 << (9 - bits)) == 0)
        # Dequantized off-diagonal weights lie within half a mantissa step of the truth.
        gram = -(net.phi.T / net.sigma2) @ net.phi
        np.fill_diagonal(gram, 0)
        unit = 2.0 ** (q.rec_exp - fixed.A_FRAC + 9 - bits)
        deq = q.w_rec * 2.0 ** (q.rec_exp - fixed.A_FRAC)
        assert np.abs(deq - gram).max() <= 0.5 * unit * (1 + 1e-9)
        assert q.report["recurrent"]["bits_used"] == bits
    lava = require("lava.utils.weightutils")
    q = quantize(net)
    for w in (q.w_rec, q.w_ff):
        mode = lava.SignMode.MIXED
        again = lava.truncate_weights(lava.clip_weights(w, mode, 8), mode, q.weight_bits)
        np.testing.assert_array_equal(again, w)


def test_quantized_file_round_trip(planted32, tmp_path):
    net, _, _ = planted32
    q = quantize(net, weight_bits=6)
    path = save_quantized(q, tmp_path / "q.npz")
    back = load_quantized(path)
    for key in ("w_rec", "w_ff", "self_weights", "bias", "u0", "exp_lut"):
        np.testing.assert_array_equal(getattr(back, key), getattr(q, key))
    assert (back.rec_exp, back.weight_bits, back.eta) == (q.rec_exp, 6, q.eta)
    np.testing.assert_array_equal(back.float_net.phi, net.phi)
    assert back.report["recurrent"]["bits"] == 6
    np.save(tmp_path / "other.npy", np.zeros(3))
    with pytest.raises(ValueError, match="not a quantized network file"):
        load_quantized(tmp_path / "other.npy")
    from networks import save_network

    save_network(net, tmp_path / "net.npz")
    with pytest.raises(ValueError, match="missing"):
        load_quantized(tmp_path / "net.npz")


# --- the emulator ---------------------------------------------------------------

def test_emulator_batch_equals_lone_runs_and_is_integer(planted32):
    net, x, _ = planted32
    batch = simulate(net, x[:4], 12, backend="fixed", seed=2)
    assert batch.info["backend"] == "fixed"
    assert np.all(batch.u * 4096 == np.round(batch.u * 4096))  # u = U·2^-12 exactly
    assert 0.01 < (batch.spikes > 0).mean() < 0.99
    for i in (1, 3):
        lone = simulate(net, x[i:i + 1], 12, backend="fixed", seed=2, offset=i)
        np.testing.assert_array_equal(lone.spikes[:, 0], batch.spikes[:, i])
        np.testing.assert_array_equal(lone.u[:, 0], batch.u[:, i])
    other = simulate(net, x[:4], 12, backend="fixed", seed=3)
    assert not np.array_equal(other.spikes, batch.spikes)
    threaded = simulate(net, x[:4], 12, backend="fixed", seed=2, threads=2)
    np.testing.assert_array_equal(threaded.spikes, batch.spikes)


def test_emulator_explicit_noise(planted32):
    net, x, _ = planted32
    noise = np.random.default_rng(5).random((10, 3, net.n_latents))
    a = simulate(net, x[:3], 10, backend="fixed", noise=noise, seed=1)
    b = simulate(net, x[:3], 10, backend="fixed", noise=noise, seed=1)
    np.testing.assert_array_equal(a.spikes, b.spikes)
    assert not np.array_equal(a.spikes, simulate(net, x[:3], 10, backend="fixed",
                                                 seed=1).spikes)


def _quality(net, x, bits, steps=64):
    """Ratios to the float model (MSE, active latents) over steps 32–64 of the fixed-point
    network at ``bits`` and of a float control with other seeds, each averaged over three
    seeds (one seed's float-vs-float spread is ~±5% on 32 planted inputs)."""
    from hardware.quantize import quantize

    q = quantize(net, weight_bits=bits)
    mse = lambda runs: np.mean([tr.mse()[32:].mean() for tr in runs])  # noqa: E731
    act = lambda runs: np.mean([(tr.spikes[32:] > 0).mean() for tr in runs])  # noqa: E731
    ref = [simulate(net, x, steps, seed=s) for s in (1, 2, 3)]
    ctrl = [simulate(net, x, steps, seed=s) for s in (4, 5, 6)]
    fx = [simulate(net, x, steps, backend="fixed", seed=s, quantized=q) for s in (1, 2, 3)]
    return mse(fx) / mse(ref), act(fx) / act(ref), mse(ctrl) / mse(ref), act(ctrl) / act(ref)


@pytest.mark.parametrize("which", ["planted", "trained"])
def test_fixed_point_quality_at_8_bits(which, planted32, trained, capsys):
    """8 weight bits: MSE ≤ 1.05× the float model's, active latents within 10%
    (32 held-out inputs, steps 32–64, three seeds); the float-vs-float control shows the
    noise floor (measured at 4–8 bits: docs/fixed-point.md)."""
    net, x = (planted32[0], planted32[1]) if which == "planted" else trained
    mse_ratio, act_ratio, ctrl_mse, ctrl_act = _quality(net, x, 8)
    with capsys.disabled():
        print(f"\n{which}: 8 bits MSE ×{mse_ratio:.3f} active ×{act_ratio:.3f}; "
              f"float control MSE ×{ctrl_mse:.3f} active ×{ctrl_act:.3f}")
    assert mse_ratio <= 1.05
    assert abs(act_ratio - 1) <= 0.10


# --- Lava fixed_pt == the emulator, bit for bit ---------------------------------

def _assert_bit_exact(lava, emu):
    assert lava.info["backend"] == "lava-fixed"
    assert 0.01 < (emu.spikes > 0).mean() < 0.99 and emu.spikes.max() > 1
    np.testing.assert_array_equal(lava.spikes, emu.spikes)
    np.testing.assert_array_equal(lava.u, emu.u)   # u = U·2^-12: every integer potential


@pytest.mark.parametrize("which", ["planted", "trained"])
def test_lava_fixed_pt_equals_emulator_bit_for_bit(which, planted32, trained):
    """Every count and every integer potential, every step, 4 inputs back to back."""
    require("lava")
    net, x = (planted32[0], planted32[1][:4]) if which == "planted" else (trained[0],
                                                                          trained[1][:4])
    emu = simulate(net, x, 20, backend="fixed", seed=7, weight_bits=6)
    lava = simulate(net, x, 20, backend="lava-fixed", seed=7, weight_bits=6)
    _assert_bit_exact(lava, emu)


def test_lava_fixed_pt_explicit_noise_and_offset(planted32):
    require("lava")
    net, x, _ = planted32
    noise = np.random.default_rng(2).random((12, 2, net.n_latents))
    emu = simulate(net, x[:2], 12, backend="fixed", noise=noise, offset=5)
    _assert_bit_exact(simulate(net, x[:2], 12, backend="lava-fixed", noise=noise, offset=5),
                      emu)


def test_saturation_is_defined_and_counted(planted32):
    """Counts above the payload clip at 2^count_bits − 1 and inputs beyond the 24-bit Q.12
    payload clip at its edge; both are counted in the trace's info."""
    net, x, _ = planted32
    q = quantize(net, count_bits=4)
    tr = simulate(net, x[:4], 16, backend="fixed", quantized=q, seed=1)
    full = simulate(net, x[:4], 16, backend="fixed", seed=1)
    assert full.info["saturation"]["counts"] == 0 and full.spikes.max() > 15
    assert tr.spikes.max() == 15
    # counted: draws above 15 (a draw of exactly 15 is not a saturation)
    assert 0 < tr.info["saturation"]["counts"] <= int((tr.spikes == 15).sum())
    big = simulate(net, np.full((2, net.input_dim), 5000.0), 2, backend="fixed", seed=1)
    assert big.info["saturation"]["inputs"] == 2 * net.input_dim


USER_GRAPH_FIXED = """
import sys, numpy as np
from networks import load_network
from neurons.fixed import input_payload
from lava.proc.io.source import RingBuffer
from lava.proc.io.extractor import Extractor, PyLoihiExtractorModel
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.magma.core.run_conditions import RunSteps
from neurons.lava.ipvae_net.process import IPVAENet

net_path, q_path, x_path, out_path, T, seed = sys.argv[1:7]
net, x, T, seed = load_network(net_path), np.load(x_path), int(T), int(seed)
with np.load(q_path, allow_pickle=False) as f:
    fixed = {k: f[k] for k in f.files}
payload = input_payload(x, int(fixed["x_frac"]))[0].astype(np.int32)
src = RingBuffer(data=payload[:, None])                 # x as Q.12 graded payloads
ipvae = IPVAENet(net, steps=T, seed=seed, fixed=fixed)
spikes = Extractor(shape=(net.n_latents,), buffer_size=ipvae.period)
us = Extractor(shape=(net.n_latents,), buffer_size=ipvae.period)
src.s_out.connect(ipvae.x_in)
ipvae.s_out.connect(spikes.in_port)
ipvae.u_out.connect(us.in_port)
cfg = Loihi2SimCfg(select_tag="fixed_pt", select_sub_proc_model=True,
                   exception_proc_model_map={Extractor: PyLoihiExtractorModel})
try:
    ipvae.run(RunSteps(ipvae.period), cfg)
    z = np.array([spikes.receive() for _ in range(ipvae.period)])[ipvae.spike_steps]
    u = np.array([us.receive() for _ in range(ipvae.period)])[ipvae.u_steps]
finally:
    ipvae.stop()
np.savez(out_path, z=z, u=u)
"""


def test_lava_fixed_pt_user_graph_with_the_input_port(planted32, tmp_path):
    """RingBuffer(x payload) → IPVAENet(fixed=...).x_in (a fixed_pt Dense computes the drive
    every step) → Extractors: the emulator's counts and integer potentials."""
    require("lava")
    import os
    import subprocess
    import sys

    from networks import save_network

    net, x, _ = planted32
    steps, seed = 12, 4
    q = quantize(net, weight_bits=7)
    save_network(net, tmp_path / "net.npz")
    save_quantized(q, tmp_path / "q.npz")
    np.save(tmp_path / "x.npy", x[3])
    (tmp_path / "graph.py").write_text(USER_GRAPH_FIXED)
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, str(tmp_path / "graph.py"), str(tmp_path / "net.npz"),
                           str(tmp_path / "q.npz"), str(tmp_path / "x.npy"),
                           str(tmp_path / "out.npz"), str(steps), str(seed)],
                          env=dict(os.environ, PYTHONPATH=str(root)), capture_output=True,
                          text=True, timeout=240, start_new_session=True)
    assert done.returncode == 0, done.stderr[-2000:]
    emu = simulate(net, x[3], steps, backend="fixed", quantized=q, seed=seed)
    assert emu.spikes.sum() > 0
    with np.load(tmp_path / "out.npz") as got:
        np.testing.assert_array_equal(got["z"], emu.spikes[:, 0])
        np.testing.assert_array_equal(got["u"], np.rint(emu.u[:, 0] * 4096).astype(np.int64))


def test_compiled_counts_equal_numpy():
    """neurons/_fixed.c computes neurons.fixed.counts_numpy's integers exactly: low and huge
    rates (up to ~1,400 parts), seeded and explicit uniforms, odd shapes."""
    require("neurons._fixed")
    assert fixed.compiled()
    luts = build_luts()
    rng = np.random.default_rng(1)
    for trial, shape in enumerate([(7, 300), (1, 37), (3, 512)]):
        U = rng.integers(-9 * 4096, 10 * 4096, shape)
        U[0, :5] = [-9 * 4096, -8 * 4096, 0, 16 * 4096 // 4, 10 * 4096]
        keys = fixed.stream_keys(trial, np.arange(shape[0]) + 11)
        for first in (None, rng.integers(0, 2 ** 32, shape)):
            want = fixed.counts_numpy(U, keys, 3 + trial, luts["exp_lut"], luts["negexp_lut"],
                                      first)
            got = fixed.counts(U, keys, 3 + trial, luts["exp_lut"], luts["negexp_lut"], first)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
            assert want[0].max() > 1000 and (want[0] == 0).any()


def _step_numpy(lat, U, keys, t, first, drive, weights, weight_exp):
    """fire, dense and integrate in numpy alone (``counts_numpy``): counts, rates, U_{t+1} and
    the saturated counts and currents."""
    z, R = fixed.counts_numpy(U, keys, t, lat.exp_lut, lat.negexp_lut, first)
    z, clipped = fixed.saturate(z, 0, (1 << lat.count_bits) - 1)
    U_next, currents = lat.integrate(U, fixed.dense(weights, weight_exp, z), drive, z)
    return z, R, U_next, (clipped, currents)


def test_compiled_step_equals_fire_dense_integrate():
    """FixedLatent.step (neurons/_fixed.c, one pass per row) computes numpy's fire, dense and
    integrate exactly: a quiet row, rows whose Dense sums need 64 bits (Σ|z|·max|w| ≥ 2^31)
    beside rows summed in 32 bits, saturated counts and currents, a row without a spike;
    seeded and explicit uniforms; OverflowError where dense raises it."""
    require("neurons._fixed")
    rng = np.random.default_rng(3)
    n, k, q12 = 5, 96, 4096
    lat = fixed.FixedLatent(u0=np.zeros(k, dtype=np.int64), bias=rng.integers(-q12, q12, k),
                            eta=3 * q12 // 4, clamp_u=8 * q12, clamp_du=7 * q12,
                            self_weights=rng.integers(-256, 0, k), self_exp=-2, count_bits=14,
                            **build_luts())
    U = rng.integers(-6 * q12, q12, (n, k))
    U[1, 10:15] = 10 * q12                     # five counts near e^10, saturated at 2^14 − 1
    U[2, 3:] = rng.integers(-9 * q12, 11 * q12, k - 3)
    U[:, :3] = -9 * q12                        # silent presynaptic neurons, in every row
    U[4] = -8 * q12                            # (almost surely) no spike at all
    drive = rng.integers(-2 ** 20, 2 ** 20, (n, k))
    drive[3] = np.where(np.arange(k) % 2, 2 ** 23 - 1, -2 ** 23)   # currents saturate
    weights = rng.integers(-100, 101, (k, k))
    np.fill_diagonal(weights, 0)
    weights[5, 1] = 32767                      # max |w| from a silent neuron: 64-bit rows
    keys = fixed.stream_keys(4, np.arange(n) + 9)
    dense = fixed.EventDense.from_weights(weights, -5)
    for first in (None, rng.integers(0, 2 ** 32, (n, k))):
        z, R, U_next, (counts_sat, currents_sat) = _step_numpy(lat, U, keys, 6, first, drive,
                                                               weights, -5)
        assert (z[:, :3] == 0).all() and (z[4] == 0).all() and counts_sat > 0 < currents_sat
        wide = z.sum(axis=1) * dense.max_abs >= 2 ** 31
        assert wide.any() and not wide.all()
        got = [np.empty((n, k), dtype=np.int64) for _ in range(3)]
        nnz, rate_sum = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
        sat = np.array([5, 7])
        lat.step(U, keys, 6, first, drive, dense, *got, nnz, rate_sum, sat)
        for name, a, b in zip(("U_next", "z", "R"), got, (U_next, z, R)):
            np.testing.assert_array_equal(a, b, err_msg=name)
        np.testing.assert_array_equal(nnz, np.count_nonzero(z, axis=1))
        np.testing.assert_array_equal(rate_sum, R.sum(axis=1))
        np.testing.assert_array_equal(sat, [5 + counts_sat, 7 + currents_sat])
    weights[5, 10:15] = 32767                  # the e^10 counts: a sum beyond int32
    with pytest.raises(OverflowError, match="int32"):
        _step_numpy(lat, U, keys, 6, None, drive, weights, -5)
    with pytest.raises(OverflowError, match="int32"):
        lat.step(U, keys, 6, None, drive, fixed.EventDense.from_weights(weights, -5),
                 *got, nnz, rate_sum, sat)


@pytest.mark.parametrize("explicit_noise", [False, True])
def test_emulator_compiled_equals_numpy_path(planted32, monkeypatch, explicit_noise):
    """The emulator's compiled step (hardware.emulator.IntegerKernels.run_rows) and its numpy
    path (neurons.fixed without neurons/_fixed.c) give the same trace bit for bit: counts,
    potentials, saturation counts, read-outs and metrics.  From u0 = −1 the share of nonzero
    counts falls through 20% (SPARSE_READOUT, SPARSE_DENSE); 7 inputs in one row block or in
    blocks of 4 and 3, 83 steps in noise blocks of 8 and read-out chunks of METRIC_ROWS // rows
    steps (neither divides 83); one input far out of range saturates inputs, a 7-bit payload
    saturates counts."""
    require("neurons._fixed")
    from dataclasses import replace

    from hardware import emulator

    net, x, _ = planted32
    q = replace(quantize(net, count_bits=7), u0=np.full(net.n_latents, -4096, dtype=np.int64))
    x = x[:7].copy()
    x[6] *= -3000
    steps = 83
    noise = np.random.default_rng(8).random((steps, 7, net.n_latents)) if explicit_noise else None

    def run(threads):
        return simulate(net, x, steps, backend="fixed", quantized=q, seed=5, offset=3,
                        noise=noise, block=8, threads=threads, record=range(0, steps, 3),
                        rate_metrics=True)

    compiled = {threads: run(threads) for threads in (1, 2)}
    monkeypatch.setattr(fixed, "_fixed", None)
    assert not fixed.compiled()
    for threads, c in compiled.items():
        p = run(threads)
        share = (c.spikes > 0).mean(axis=(1, 2))
        assert share.max() > reference.SPARSE_READOUT > share.min()
        assert steps % 8 and all(steps % (emulator.METRIC_ROWS // rows) for rows in (7, 4, 3))
        sat = c.info["saturation"]
        assert sat["counts"] > 0 and sat["inputs"] > 0 and sat == p.info["saturation"]
        for name in ("spikes", "u", "recon", "step_mse", "step_zeros", "step_rate",
                     "step_rate_mse"):
            np.testing.assert_array_equal(getattr(c, name), getattr(p, name),
                                          err_msg=f"{name}, {threads} threads")
