"""Bad input and faults (issue 15): through the CLI and the API, every one is a clear one-line
error, found before any work, and nothing is written or lost.

Exit status: 2 for usage errors and bad input, 1 for a run that failed.
"""
import os
import stat
import struct
import warnings
import zipfile

import numpy as np
import pytest
from conftest import require

from ipvae.cli import main
from networks import load_network, planted_inputs, planted_network, save_network, simulate


def _snapshot(folder):
    """Every file under ``folder`` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A folder holding NET (a planted network file, D=12, K=9); the working directory."""
    monkeypatch.chdir(tmp_path)
    net, _, _ = planted_network(12, 9, 2, seed=0, n_inputs=1)
    save_network(net, tmp_path / "NET")
    return tmp_path


def cli(argv, capsys):
    """Run ``ipvae ARGV`` in-process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    try:
        status = main([str(a) for a in argv])
    except SystemExit as done:
        status = done.code
    out, err = capsys.readouterr()
    return status, out, err


def assert_refused(argv, capsys, folder, message, status=2):
    """``ipvae ARGV`` fails with ``status`` and one line matching ``message``; writes nothing."""
    before = _snapshot(folder)
    got, _, err = cli(argv, capsys)
    assert got == status, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert message in lines[0], lines[0]
    assert _snapshot(folder) == before


# --- the network file -----------------------------------------------------------------------

def _arrays(**change):
    net, _, _ = planted_network(12, 9, 2, seed=0, n_inputs=1)
    arrays = net.to_arrays()
    arrays.update(change)
    return arrays


def _bomb(path):
    """A valid small .npz whose zip directory declares a 2 GiB member (a deflate bomb's shape)."""
    np.savez_compressed(path, **_arrays())
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")  # first central-directory entry: file size at +24
    struct.pack_into("<I", data, at + 24, 2**31)
    path.write_bytes(bytes(data))


def _huge_header(path):
    """An .npz whose phi header declares a (10**6, 10**6) array over a few bytes of data."""
    np.savez(path, **_arrays())
    with zipfile.ZipFile(path, "a") as zf:
        header = {"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**6)}
        with zf.open("huge.npy", "w") as f:
            np.lib.format.write_array_header_1_0(f, header)
            f.write(b"\0" * 64)


@pytest.mark.parametrize("make,message", [
    (lambda p: p.mkdir(), "is a directory"),
    (lambda p: p.write_text("phi = 1\n"), "not a network file"),
    (lambda p: p.write_bytes(b""), "not a network file"),
    (lambda p: (np.savez(p, **_arrays()), p.write_bytes(p.read_bytes()[:2000])),
     "not a network file"),
    (lambda p: (np.savez(p, **_arrays()),
                p.write_bytes(p.read_bytes()[:-40] + b"\0" * 40)), "network file"),
    (_bomb, "limited to 1024 MiB"),
    (_huge_header, "declares"),
    (lambda p: np.savez(p, **_arrays(phi=np.zeros((12, 0)), log_bias=np.zeros(0),
                                     u0=np.zeros(0))), "K >= 1"),
    (lambda p: np.savez(p, **_arrays(log_sigma=np.full(12, -400.0))), "σ²"),
    (lambda p: np.savez(p, **_arrays(log_eta=np.float64(800))), "η"),
    (lambda p: np.savez(p, **_arrays(phi=_arrays()["phi"] * 1e200)), "overflows float64"),
    (lambda p: np.savez(p, **_arrays(clamp_u=np.float64(1000))), "overflows float64"),
    (lambda p: np.savez(p, **_arrays(meta=np.asarray("[1, 2]"))), "JSON object"),
])
def test_bad_network_files(work, capsys, make, message):
    bad = work / "bad.npz"
    make(bad)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        load_network(bad)
    assert_refused(["simulate", bad, "--out", "t.npz"], capsys, work, message)
    assert_refused(["info", bad], capsys, work, message)


def test_degenerate_parameters_are_refused_by_the_constructor_too():
    net, _, _ = planted_network(12, 9, 2, seed=0, n_inputs=1)
    kw = dict(phi=net.phi, log_sigma=net.log_sigma, log_bias=net.log_bias, log_eta=0.0,
              u0=net.u0)
    for change, message in [(dict(log_sigma=np.full(12, 400.0)), "σ²"),
                            (dict(log_bias=np.full(9, 800.0)), "b = exp"),
                            (dict(u0=np.full(9, 800.0)), "e\\^u")]:
        with pytest.raises(ValueError, match=message):
            type(net)(**{**kw, **change})


# --- options and output paths ---------------------------------------------------------------

@pytest.mark.parametrize("argv,message", [
    (["simulate", "NET", "--steps", "0", "--out", "t.npz"], "--steps: must be >= 1"),
    (["simulate", "NET", "--steps", "x", "--out", "t.npz"], "expected an integer"),
    (["simulate", "NET", "--seed", str(2**64 - 1), "--out", "t.npz"], "[0, 2**63)"),
    (["simulate", "NET", "--seed", "-1", "--out", "t.npz"], "[0, 2**63)"),
    (["simulate", "NET", "--offset", "-3", "--out", "t.npz"], "--offset: must be >= 0"),
    (["simulate", "NET", "--offset", str(2**63 - 2), "--out", "t.npz"], "passes 2**63"),
    (["simulate", "NET", "--target", "numpy", "--out", "t.npz"],
     "--target does not apply to backend 'reference'; it takes no backend options"),
    (["simulate", "NET", "--topology", "folded", "--out", "t.npz"], "does not apply"),
    (["simulate", "NET", "--backend", "lava", "--target", "numpy", "--out", "t.npz"],
     "its options are --topology"),
    (["simulate", "NET", "--backend", "brian2", "--topology", "folded", "--out", "t.npz"],
     "its options are --target"),
    (["simulate", "NET", "--active", "50", "--out", "t.npz"], "more than the network's"),
    (["simulate", "NET", "--rotate", "nan", "--out", "t.npz"], "must be finite"),
    (["simulate", "NET", "--out", "NET"], "is also an input"),
    (["simulate", "NET", "--out", "sub"], "is a directory"),
    (["simulate", "NET", "--out", "NET/t.npz"], "is not a directory"),
    (["simulate", "NET", "--out", "t.npz", "--raster", "t.npz"], "same file"),
    (["simulate", "missing.npz", "--out", "t.npz"], "network file not found"),
    (["compare", "NET", "--trials", "1", "--independent-noise", "--out", "c"], "must be >= 2"),
    (["compare", "NET", "--trials", "5", "--out", "c"], "--independent-noise only"),
    (["compare", "NET", "--topology", "folded", "--out", "c"], "not in --backends"),
    (["compare", "NET", "--backends", "reference", "--out", "c"], "two different backends"),
    (["compare", "NET", "--out", "old"], "already holds report.json"),
    (["compare", "NET", "--out", "NET"], "is not a directory"),
    (["evaluate", "NET", "--out", "NET"], "is not a directory"),
    (["evaluate", "NET", "--steps", "10", "--probe-step", "11", "--out", "e"], "past --steps"),
    (["planted", "--latents", "0", "--out", "p.npz"], "--latents: must be >= 1"),
    (["planted", "--latents", "4", "--active", "5", "--out", "p.npz"], "more than --latents"),
    (["planted", "--out", "sub"], "is a directory"),
    (["demo", "--minutes", "-1"], "must be a finite number > 0"),
    (["demo", "--backends", "reference", "--out", "d"], "two different backends"),
    (["train", "--lr", "0", "--out", "r"], "must be a finite number > 0"),
    (["train", "--epochs", "0", "--out", "r"], "--epochs: must be >= 1"),
    (["train", "--out", "NET"], "is not a directory"),
    (["train", "--out", "NET/run"], "is not a directory"),
    (["evaluate", "NET", "--data", "text.npy", "--out", "e"], "not a .npy array file"),
])
def test_bad_options_and_outputs_are_one_line_usage_errors(work, capsys, argv, message):
    (work / "sub").mkdir()
    (work / "old").mkdir()
    (work / "old" / "report.json").write_text("{}")
    (work / "text.npy").write_text("not an array\n")
    assert_refused(argv, capsys, work, message)


def test_unusable_brian2_cache_is_named(work, capsys, monkeypatch):
    require("brian2")
    monkeypatch.setenv("IPVAE_BRIAN2_CACHE", str(work / "NET"))
    assert_refused(["simulate", "NET", "--backend", "brian2", "--target", "cython",
                    "--out", "t.npz"], capsys, work, "is not a folder")


def test_failed_lava_run_exits_1_and_writes_nothing(work, capsys, monkeypatch):
    require("lava")
    monkeypatch.setenv("IPVAE_LAVA_FAIL_AT", "2")
    assert_refused(["simulate", "NET", "--backend", "lava", "--n", "1", "--steps", "4",
                    "--out", "t.npz"], capsys, work, "forced failure", status=1)


def test_large_offset_costs_memory_in_proportion_to_n(work, capsys):
    """--offset 10**12 (planted): input i made from its own generator, same as a lone call."""
    status, out, err = cli(["simulate", "NET", "--n", "2", "--offset", str(10**12),
                            "--steps", "3", "--quiet", "--out", "t.npz"], capsys)
    assert status == 0, err
    net = load_network(work / "NET")
    x, _ = planted_inputs(net, 1, 5, seed=0, offset=10**12 + 1)
    with np.load(work / "t.npz") as f:
        np.testing.assert_array_equal(f["x"][1], x[0])
    assert err == ""  # --quiet: no progress bar


def test_outputs_follow_the_umask(work, capsys):
    old = os.umask(0o027)
    try:
        assert cli(["simulate", "NET", "--n", "1", "--steps", "2", "--out", "t.npz"],
                   capsys)[0] == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((work / "t.npz").stat().st_mode) == 0o640


# --- the API --------------------------------------------------------------------------------

@pytest.fixture
def small():
    net, x, _ = planted_network(12, 9, 2, seed=0, n_inputs=2)
    return net, x


@pytest.mark.parametrize("backend", ["reference", "lava", "brian2"])
def test_api_errors_come_before_any_work(small, backend, monkeypatch):
    if backend != "reference":
        require("lava" if backend == "lava" else "brian2")
    import networks.lava as lava_backend

    def no_child(*args, **kwargs):
        raise AssertionError("a Lava child was started")

    monkeypatch.setattr(lava_backend.subprocess, "Popen", no_child)
    net, x = small
    bad = [dict(record=[5]), dict(record=[-1]), dict(seed=np.uint64(2**64 - 1)),
           dict(seed=-1), dict(offset=2**63 - 1), dict(steps=-1), dict(steps=2.5)]
    for kwargs in bad:
        args = {"steps": 5, **kwargs}
        with pytest.raises(ValueError):
            simulate(net, x, backend=backend, **args)


def test_integer_images_warn_that_they_are_unscaled(small):
    net, _ = small
    with pytest.warns(UserWarning, match="unscaled"):
        net.check_input(np.full((1, 12), 200, dtype=np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net.check_input(np.zeros((1, 12), dtype=np.uint8))
