"""The ``ipvae`` command line: happy paths and one-line errors."""
import json
import subprocess
import sys

import numpy as np
import pytest

from ipvae.cli import main
from networks import Trace, load_network


def test_planted_info_simulate_with_raster(tmp_path, capsys):
    net_path, trace_path, png = tmp_path / "net.npz", tmp_path / "t.npz", tmp_path / "r.png"
    assert main(["planted", "--input-dim", "30", "--latents", "20", "--out", str(net_path)]) == 0
    assert load_network(net_path).phi.shape == (30, 20)
    assert main(["info", str(net_path)]) == 0
    assert "K = 20" in capsys.readouterr().out
    assert main(["simulate", str(net_path), "--n", "3", "--steps", "16", "--seed", "2",
                 "--out", str(trace_path), "--raster", str(png)]) == 0
    trace = Trace.load(trace_path)
    assert trace.spikes.shape == (16, 3, 20)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_offset_selects_the_same_inputs_and_noise(tmp_path):
    net_path = tmp_path / "net.npz"
    main(["planted", "--input-dim", "30", "--latents", "20", "--out", str(net_path)])
    main(["simulate", str(net_path), "--n", "4", "--steps", "10", "--out", str(tmp_path / "a.npz")])
    main(["simulate", str(net_path), "--n", "2", "--offset", "2", "--steps", "10",
          "--out", str(tmp_path / "b.npz")])
    a, b = Trace.load(tmp_path / "a.npz"), Trace.load(tmp_path / "b.npz")
    np.testing.assert_array_equal(a.spikes[:, 2:], b.spikes)


def status_of(argv) -> int:
    """Exit status of ``ipvae ARGV`` run in this process (argparse errors exit via SystemExit)."""
    try:
        return main(argv)
    except SystemExit as done:
        return done.code


@pytest.mark.parametrize("argv,message", [
    (["info", "missing.npz"], "network file not found"),
    (["simulate", "missing.npz", "--out", "t.npz"], "network file not found"),
    (["simulate", "NET", "--backend", "nest", "--out", "t.npz"], "invalid choice: 'nest'"),
    (["simulate", "NET", "--data", "nope", "--out", "t.npz"], "unknown --data"),
    (["simulate", "NET", "--n", "0", "--out", "t.npz"], "--n/--n-inputs: must be >= 1"),
])
def test_user_errors_print_one_line_and_exit_nonzero(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    main(["planted", "--input-dim", "10", "--latents", "6", "--out", "NET"])
    capsys.readouterr()
    assert status_of(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_console_entry_point_reports_errors_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ipvae", "info", str(tmp_path / "nope.npz")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "network file not found" in proc.stderr and "Traceback" not in proc.stderr


def test_demo_trains_evaluates_and_cross_checks_all_backends(tmp_path):
    """A miniature of `make demo`: every stage runs and writes its outputs; a rerun reuses."""
    args = ["demo", "--out", str(tmp_path), "--minutes", "0.1", "--latents", "24",
            "--eval-steps", "20", "--eval-n", "10", "--probe-n", "100", "--compare-steps", "8"]
    assert main(args) == 0
    for name in ("train/model.npz", "train/dictionary.png", "evaluate/evaluation.json",
                 "evaluate/curves.png", "compare/report.json", "compare/rasters.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    report = json.loads((tmp_path / "compare" / "report.json").read_text())
    assert set(report["backends"]) == {"reference", "lava", "brian2"} and report["passed"]
    stamp = (tmp_path / "train" / "model.npz").stat().st_mtime_ns
    assert main(args) == 0
    assert (tmp_path / "train" / "model.npz").stat().st_mtime_ns == stamp


def test_building_the_parser_loads_no_simulator_or_torch():
    code = ("import sys, ipvae.cli as c; c.build_parser(); "
            "heavy = [m for m in ('torch', 'lava', 'brian2') if m in sys.modules]; "
            "assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
