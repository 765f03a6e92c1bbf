"""``train.diagnose``: the loop gain and the R² by contrast that docs/training-ablation.md quotes."""
import numpy as np
import pytest

from networks import IPVAENetwork
from networks.planted import planted_inputs, planted_network
from networks.simulate import simulate
from train.diagnose import loop_gain, main, r2_by_contrast


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


def test_cli_names_a_missing_file(tmp_path, capsys):
    assert main([str(tmp_path / "none.npz"), "--n", "2", "--steps", "3"]) == 1
    out = capsys.readouterr().out
    assert "none.npz" in out and "Traceback" not in out
