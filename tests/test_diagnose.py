"""``train.diagnose``: the loop gain and the R² by contrast that docs/training-ablation.md quotes."""
import numpy as np
import pytest

from networks import IPVAENetwork
from networks.planted import planted_inputs, planted_network
from networks.simulate import simulate
from train.diagnose import (loop_gain, loop_spectrum, main, r2_by_contrast, relaxation,
                            relaxation_table)


def _net(d=6, k=3):
    phi = np.zeros((d, k))
    phi[0, 0], phi[1, 1], phi[2, 2], phi[5, 2] = 1.0, 2.0, 1.0, 0.5
    log_sigma = np.log(np.array([1.0, 1.0, 0.5, 1.0, 1.0, 0.1]))
    return IPVAENetwork(phi=phi, log_sigma=log_sigma, log_bias=np.full(k, -3.0),
                        log_eta=np.log(0.25), u0=np.full(k, -4.0), clamp_u=5.0, clamp_du=3.0)


def test_loop_gain_matches_the_linearised_update():
    net = _net()
    x = np.random.default_rng(0).normal(size=(50, 6))
    x[:, 5] = 0.01 * x[:, 5]                          # pixel 5 barely varies
    g = loop_gain(net, x, potentials=(0.0, 1.0, 2.0), sigma_floors=(0.2, 1.0))
    # Σ_d φ_dk²/σ_d²: 1; 4; 1/0.25 + 0.25/0.01 = 29
    np.testing.assert_allclose(g["weight"], [1.0, 4.0, 29.0])
    np.testing.assert_allclose(g["u_star"], np.log(2.0 / (0.25 * np.array([1.0, 4.0, 29.0]))))
    np.testing.assert_allclose(g["quiet_share"], [0.0, 0.0, 25.0 / 29.0])
    assert g["quiet_pixels"] == 1
    # G_k(u) = η e^u weight_k > 2: at u = 0 only latent 2 (7.25); at u = 1 latents 1, 2
    assert g["unstable"] == {0.0: 1, 1.0: 2, 2.0: 2}
    # σ ≥ 0.2: latent 2's weight is 4 + 0.25/0.04 = 10.25 (2.56 at u = 0 → unstable);
    # σ ≥ 1: weights 1, 4, 1.25 → at u = 1: 0.68, 2.72, 0.85; at u = 2: 1.85, 7.39, 2.31
    assert g["floored"] == {0.2: {0.0: 1, 1.0: 2, 2.0: 2}, 1.0: {0.0: 0, 1.0: 1, 2.0: 2}}


def test_loop_gain_refuses_the_wrong_shape():
    with pytest.raises(ValueError, match=r"x must be \(N, 6\)"):
        loop_gain(_net(), np.zeros((4, 5)))


def test_r2_by_contrast_agrees_with_the_simulator():
    net, _, _ = planted_network(input_dim=30, n_latents=12, n_active=3, seed=1)
    x, _ = planted_inputs(net, 40, 3, seed=2)
    x = x * np.linspace(0.2, 3.0, 40)[:, None]        # a spread of contrasts
    r = r2_by_contrast(net, x, 20, record=(5, 19), seed=3)
    trace = simulate(net, x, 20, seed=3, record=[5, 19])
    tot = ((x - x.mean(1, keepdims=True)) ** 2).sum(1)
    for i, t in enumerate((5, 19)):
        res = ((x - trace.recon[i]) ** 2).sum(1)
        r2 = 1 - res / tot
        assert r[t]["mean"] == pytest.approx(r2.mean())
        assert r[t]["pooled"] == pytest.approx(1 - res.sum() / tot.sum())
        # the quartiles hold 10 inputs each here, so their means average to the mean
        assert np.mean(r[t]["quartiles"]) == pytest.approx(r2.mean())
        assert r[t]["spikes"] == pytest.approx(trace.spikes[i].sum(1).mean())
    assert r["n"] == 40 and np.all(np.diff(r["edges"]) > 0)


def test_loop_spectrum_of_orthogonal_atoms_is_their_loop_gains():
    # _net's atoms use disjoint pixels, so the loop is diagonal: μ_k = η r_k Σ_d φ_dk²/σ_d²
    # with η = 0.25 and weights 1, 4, 29
    s = loop_spectrum(_net(), np.array([[1.0, 1.0, 1.0], [1.0, 0.1, 0.01], [0.1, 0.1, 0.1]]))
    np.testing.assert_allclose(s["mu_max"][:2], [0.25 * 29, 0.25])
    np.testing.assert_array_equal(s["active"], [3, 1, 0])
    # the slowest mode (μ = 0.25 in both) shrinks by 0.75 a step
    np.testing.assert_allclose(s["tenfold"][:2], np.log(10) / -np.log(0.75))
    assert np.isnan(s["mu_max"][2]) and np.isnan(s["tenfold"][2])


def test_relaxation_splits_the_spike_error_into_rates_and_poisson_noise():
    net, _, _ = planted_network(input_dim=30, n_latents=12, n_active=3, seed=1)
    x, _ = planted_inputs(net, 600, 3, seed=2)
    r = relaxation(net, x, 12, record=(3, 11), seed=4)
    trace = simulate(net, x, 12, seed=4, record=[3, 11])
    phi = net.phi
    tot = ((x - x.mean(1, keepdims=True)) ** 2).sum(1)
    for i, t in enumerate((3, 11)):
        rate = np.exp(trace.u[i])
        assert r[t]["r2_rates"] == pytest.approx((1 - ((x - rate @ phi.T) ** 2).sum(1) / tot).mean())
        assert r[t]["r2_spikes"] == pytest.approx((1 - ((x - trace.recon[i]) ** 2).sum(1) / tot).mean())
        # Poisson counts scatter around the rates by Σ_k e^{u_k}‖φ_k‖² on average: over 600
        # inputs the measured scatter agrees with the noise share to a few per cent
        scatter = ((((trace.spikes[i] - rate) @ phi.T) ** 2).sum(1) / tot).mean()
        assert scatter == pytest.approx(r[t]["noise_share"], rel=0.1)
        assert r[t]["zeros"] == pytest.approx((trace.spikes[i] == 0).mean())
    eta = np.exp(net.log_eta)
    assert r["error_gain"] == pytest.approx(eta * np.exp(-2 * net.log_sigma).mean())
    assert r["leak"] == pytest.approx(np.median(eta * np.exp(net.log_bias)))
    assert r["atom"] == pytest.approx(0.1)                 # planted_network's column norm
    assert r["spike_gain"] == pytest.approx(eta * 0.01)    # σ = 1: η ‖φ_k‖²
    assert r["drive"] == pytest.approx(eta * 0.1) and r["u0"] == pytest.approx(-3.0)
    spec = loop_spectrum(net, np.exp(trace.u[1][:100]))
    assert r["spectrum"]["t"] == 11
    assert r["spectrum"]["mu_max"] == pytest.approx(np.nanmedian(spec["mu_max"]))
    table = relaxation_table(r)
    assert table.count("\n| 3 |") == 1 and table.count("\n| 11 |") == 1
    with pytest.raises(ValueError, match="no recorded step"):
        relaxation(net, x, 5, record=(7,))


def test_cli_tables_agree_with_the_functions(tmp_path, capsys):
    # the command runs the simulator once for both tables; its rows are the functions' own
    from networks import save_network
    from train.data import load_dataset

    net, _, _ = planted_network(input_dim=784, n_latents=20, n_active=3, seed=5)
    path = save_network(net, tmp_path / "net.npz")
    assert main([str(path), "--n", "6", "--steps", "20", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    x = load_dataset("mnist", "test").x[:6]
    c = r2_by_contrast(net, x, 20, record=(16,), seed=2)[16]
    assert f"| 16 | {c['mean']:.3f} | {c['median']:.3f} | {c['pooled']:.3f} |" in out
    r = relaxation(net, x, 20, record=(2, 4, 8, 16, 19), seed=2)
    for t in (2, 16, 19):
        s = r[t]
        assert (f"| {t} | {s['r2_spikes']:.3f} | {s['r2_rates']:.3f} | {s['noise_share']:.3f} | "
                f"{s['zeros']:.3f} | {s['spikes']:.1f} |") in out
    assert "| 160 |" not in out and "at t = 19 over the latents above 0.2" in out


def test_cli_names_a_missing_file(tmp_path, capsys):
    assert main([str(tmp_path / "none.npz"), "--n", "2", "--steps", "3"]) == 1
    out = capsys.readouterr().out
    assert "none.npz" in out and "Traceback" not in out
