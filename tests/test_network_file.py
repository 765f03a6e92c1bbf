"""The network file: exact round trip, atomic save, and a clear error for each bad file."""
import json

import numpy as np
import pytest

from networks import FORMAT_VERSION, IPVAENetwork, load_network, save_network


def _arrays(net):
    return net.to_arrays()


def test_round_trip_is_exact(planted, tmp_path):
    net, _, _ = planted
    net.meta["note"] = "round trip ü"
    net.input_shape = (8, 8)
    path = save_network(net, tmp_path / "net.npz")
    back = load_network(path)
    for key in ("phi", "log_sigma", "log_bias", "u0"):
        np.testing.assert_array_equal(getattr(back, key), getattr(net, key))
        assert getattr(back, key).dtype == np.float64
    for key in ("log_eta", "clamp_u", "clamp_du", "input_shape", "meta"):
        assert getattr(back, key) == getattr(net, key)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_save_is_atomic_and_keeps_the_old_file_on_failure(planted, tmp_path, monkeypatch):
    net, _, _ = planted
    path = save_network(net, tmp_path / "net.npz")
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        save_network(net, path)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


def _write(tmp_path, arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("mutate,message", [
    (lambda a: a.pop("phi"), "missing key.*phi"),
    (lambda a: a.pop("meta"), "missing key.*meta"),
    (lambda a: a.update(log_sigma=np.zeros(3)), r"log_sigma has shape \(3,\)"),
    (lambda a: a.update(u0=np.zeros((128, 1))), r"u0 has shape"),
    (lambda a: a.update(phi=np.zeros(5)), "phi must be 2-dimensional"),
    (lambda a: a.__setitem__("phi", np.where(np.arange(64 * 128).reshape(64, 128) == 7,
                                              np.nan, a["phi"])), "phi contains NaN"),
    (lambda a: a.update(log_eta=np.float64(np.inf)), "log_eta contains NaN or inf"),
    (lambda a: a.update(format_version=np.int64(FORMAT_VERSION + 1)), "newer than this code"),
    (lambda a: a.update(phi=a["phi"].astype(np.int64)), "phi has dtype int64"),
    (lambda a: a.update(input_shape=np.array([3, 3])), "input_shape"),
    (lambda a: a.update(meta=np.asarray("{not json")), "meta is not valid JSON"),
])
def test_each_kind_of_bad_file_raises_a_named_value_error(planted, tmp_path, mutate, message):
    net, _, _ = planted
    arrays = _arrays(net)
    mutate(arrays)
    with pytest.raises(ValueError, match=message):
        load_network(_write(tmp_path, arrays))


def test_missing_file_garbage_and_pickles_are_refused(planted, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_network(tmp_path / "absent.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip file")
    with pytest.raises(ValueError, match="not a"):
        load_network(junk)
    net, _, _ = planted
    arrays = _arrays(net)
    arrays["meta"] = np.array([{"pickled": True}], dtype=object)
    with pytest.raises(ValueError):
        load_network(_write(tmp_path, arrays))


def test_constructor_validates(planted):
    net, _, _ = planted
    kwargs = dict(phi=net.phi, log_sigma=net.log_sigma, log_bias=net.log_bias,
                  log_eta=0.0, u0=net.u0)
    with pytest.raises(ValueError, match="log_bias has shape"):
        IPVAENetwork(**{**kwargs, "log_bias": np.zeros(3)})
    with pytest.raises(ValueError, match="not JSON"):
        IPVAENetwork(**kwargs, meta={"x": object()})
    with pytest.raises(ValueError, match="input_shape"):
        IPVAENetwork(**kwargs, input_shape=(7, 7))
    assert json.loads(str(IPVAENetwork(**kwargs).to_arrays()["meta"])) == {}
