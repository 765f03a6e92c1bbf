"""The Loihi 2 resource report, the work report and ``ipvae deploy``."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import require

from hardware.resources import resource_report, work_report
from networks import IPVAENetwork, save_network
from networks.trace import trace_from_run


def _fake_quantized(k, d, bits=8, self_bits=8):
    return SimpleNamespace(n_latents=k, input_dim=d, weight_bits=bits, self_bits=self_bits,
                           count_bits=16, w_rec=np.ones((k, k)) - np.eye(k),
                           self_weights=np.ones(k), w_ff=np.ones((k, d)))


def test_resources_of_a_small_network_by_hand():
    r = resource_report(_fake_quantized(3, 4))
    assert r["synapses"] == dict(recurrent=6, self_term=3, feedforward=12, total=21)
    assert r["nonzero_synapses"]["total"] == 21
    assert r["synaptic_memory_bits"] == 6 * 8 + 12 * 8 + 3 * 8 == 168
    assert r["fan_in_bits_per_latent"] == 2 * 8 + 4 * 8 + 8
    assert (r["latents_per_core"], r["cores"], r["chips"]) == (8192, 1, 1)


def test_resources_of_an_mnist_sized_network_by_hand():
    """K = 512, D = 784 at 8 bits: a latent's fan-in is 511·8 + 784·8 + 8 = 10,368 bits, so a
    128 KiB core holds 1,048,576 // 10,368 = 101 latents: 6 cores, one chip."""
    r = resource_report(_fake_quantized(512, 784))
    assert r["synaptic_memory_bits"] == 512 * 511 * 8 + 512 * 784 * 8 + 512 * 8 == 5_308_416
    assert r["synaptic_memory_kib"] == 648.0
    assert (r["latents_per_core"], r["cores"], r["chips"]) == (101, 6, 1)
    r4 = resource_report(_fake_quantized(512, 784, bits=4))
    assert r4["latents_per_core"] == 1_048_576 // (1295 * 4 + 8) and r4["cores"] == 3
    with pytest.raises(ValueError, match="fan-in"):
        resource_report(_fake_quantized(3, 4), limits=dict(synaptic_memory_kib_per_core=0.005))


def test_work_report_counts_the_raster():
    net = IPVAENetwork(phi=np.eye(3)[:, :2], log_sigma=np.zeros(3), log_bias=np.zeros(2),
                       log_eta=0.0, u0=np.zeros(2))
    x = np.zeros((2, 3))
    spikes = np.array([[[0, 3], [1, 1]], [[2, 0], [0, 0]]])      # (T=2, N=2, K=2)
    tr = trace_from_run(net, x, spikes, np.zeros((3, 2, 2)))
    w = work_report(tr, _fake_quantized(2, 3), error_level=1.0, energy_per_synop=1e-12)
    # messages per (step, input): 1, 2, 1, 0 -> mean 1; spikes 3, 2, 2, 0 -> mean 1.75
    assert w["per_step"] == dict(messages=1.0, spikes=1.75, synaptic_events=2.0)
    # per input over both steps: messages (2 + 2)/2 + D = 5; events 2·2 + K·D = 10
    assert w["per_inference"] == dict(messages=5.0, spikes=3.5, synaptic_events=10.0)
    assert w["energy_j"]["per_inference"] == pytest.approx(10e-12)
    assert "energy_j" not in work_report(tr, _fake_quantized(2, 3))


def test_deploy_loihi2_without_runtime_says_what_is_missing(tmp_path, capsys):
    from hardware.targets import loihi2_runtime_installed
    from ipvae.cli import main
    from networks import planted_network

    net, _, _ = planted_network(16, 8, 2)
    save_network(net, tmp_path / "net.npz")
    if loihi2_runtime_installed():
        pytest.fail("this test expects no Loihi runtime on the test machine")
    assert main(["deploy", str(tmp_path / "net.npz"), "--target", "loihi2",
                 "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "lava-loihi" in err and "loihi2-sim" in err


def test_deploy_loihi2_sim_writes_the_reports(tmp_path):
    require("lava")
    from ipvae.cli import main
    from networks import planted_network

    net, _, _ = planted_network(32, 24, 3)
    save_network(net, tmp_path / "net.npz")
    assert main(["deploy", str(tmp_path / "net.npz"), "--target", "loihi2-sim", "--n", "2",
                 "--steps", "12", "--weight-bits", "6", "--error-level", "10",
                 "--out", str(tmp_path / "o")]) == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["resources"]["synapses"]["total"] == 24 * 23 + 24 + 24 * 32
    assert report["quantization"]["emulator_bit_identical"] is True
    assert report["quantization"]["recurrent"]["bits"] == 6
    assert set(report["quantization"]["saturation"]) == {"counts", "currents", "inputs",
                                                         "drives"}
    assert report["quality"]["mse_ratio"] > 0 and "energy_j" not in report["work"]
    assert (tmp_path / "o" / "quantized.npz").is_file()
