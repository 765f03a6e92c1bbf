"""The network file: one ``.npz`` that every backend reads (design §3).

A network file is data: it is written with ``numpy.savez`` and read with
``allow_pickle=False``, never unpickled.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
"""Version written by this code; files with a newer version are refused."""

LOG_SIGMA_LIMIT = 3.45
"""|log σ| is soft-clamped to this bound during training (design §1.4)."""

MAX_FILE_BYTES = 1 << 30
"""Largest decompressed network file accepted (1 GiB: Φ of 134 M float64 values).

A file that declares more (a deflate bomb, or a corrupted size) is refused
before anything is decompressed."""

MAX_ARRAY_DIMS = 4
"""Largest number of dimensions of any array in a network file."""

_REQUIRED = ("phi", "log_sigma", "log_bias", "log_eta", "u0", "clamp_u", "clamp_du",
             "input_shape", "format_version", "meta")


@dataclass(eq=False)
class IPVAENetwork:
    """A trained (or planted) iP-VAE with a linear decoder.

    Attributes
    ----------
    phi : (D, K) float64, the dictionary / linear decoder Φ.
    log_sigma : (D,) float64, log of the decoder noise std σ.
    log_bias : (K,) float64, log of the leak b.
    log_eta : float, log of the step size η.
    u0 : (K,) float64, initial membrane potentials (prior log-rates).
    clamp_u, clamp_du : float, upper soft-clamp ceilings for u and du.
    input_shape : tuple of ints whose product is D (e.g. (28, 28)).
    meta : JSON-serialisable dict (dataset, preprocessing, config, metrics).
    """

    phi: np.ndarray
    log_sigma: np.ndarray
    log_bias: np.ndarray
    log_eta: float
    u0: np.ndarray
    clamp_u: float = 8.0
    clamp_du: float = 7.0
    input_shape: tuple | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.phi = _float_array("phi", self.phi, ndim=2)
        d, k = self.phi.shape
        if d < 1 or k < 1:
            raise ValueError(f"phi has shape {self.phi.shape}: a network needs D >= 1 inputs "
                             f"and K >= 1 latents")
        self.log_sigma = _float_array("log_sigma", self.log_sigma, shape=(d,))
        self.log_bias = _float_array("log_bias", self.log_bias, shape=(k,))
        self.u0 = _float_array("u0", self.u0, shape=(k,))
        self.log_eta = float(_float_array("log_eta", self.log_eta, shape=()))
        self.clamp_u = float(_float_array("clamp_u", self.clamp_u, shape=()))
        self.clamp_du = float(_float_array("clamp_du", self.clamp_du, shape=()))
        if self.clamp_u <= -8 or self.clamp_du <= -8:
            raise ValueError("clamp_u and clamp_du must lie above the hard floor of -8")
        shape = (d,) if self.input_shape is None else tuple(int(s) for s in np.ravel(self.input_shape))
        if any(s <= 0 for s in shape) or int(np.prod(shape)) != d:
            raise ValueError(f"input_shape {shape} does not hold D = {d} values")
        self.input_shape = shape
        _check_derived(self)
        self.meta = dict(self.meta or {})
        try:
            json.dumps(self.meta)
        except TypeError as err:
            raise ValueError(f"meta is not JSON-serialisable: {err}") from None

    @property
    def input_dim(self) -> int:
        """D, the number of input values (pixels)."""
        return self.phi.shape[0]

    @property
    def n_latents(self) -> int:
        """K, the number of latent neurons."""
        return self.phi.shape[1]

    @property
    def sigma2(self) -> np.ndarray:
        """(D,) decoder noise variances σ²."""
        return np.exp(2.0 * self.log_sigma)

    @property
    def bias(self) -> np.ndarray:
        """(K,) leak b = exp(log_bias) > 0."""
        return np.exp(self.log_bias)

    @property
    def eta(self) -> float:
        """Step size η = exp(log_eta)."""
        return float(np.exp(self.log_eta))

    def feedforward_weights(self) -> np.ndarray:
        """(K, D) weights Φᵀ/σ² from the input to the latents (W[post, pre]), folded topology."""
        return np.ascontiguousarray((self.phi / self.sigma2[:, None]).T)

    def drive(self, x: np.ndarray) -> np.ndarray:
        """Constant feed-forward current Φᵀx/σ² of the folded topology, (N, K) for x (N, D).

        The leak b is the neuron's own (it subtracts it every step), so it is not
        included.  Computed one input at a time, so that an input's drive is the
        same to the last bit whatever batch it comes in.
        """
        x = np.asarray(x, dtype=np.float64)
        w = self.feedforward_weights()
        out = np.empty((x.shape[0], self.n_latents))
        for n, row in enumerate(x):
            np.matmul(w, row, out=out[n])
        return out

    def recurrent_weights(self) -> np.ndarray:
        """(K, K) lateral weights W = −ΦᵀΦ/σ² of the folded topology (W[post, pre])."""
        return -(self.phi.T / self.sigma2) @ self.phi

    def check_input(self, x) -> np.ndarray:
        """Validate inputs and return them as a float64 (N, D) array.

        Accepts (D,), (N, D) or (N, *input_shape); raises ValueError naming the problem.
        Integer images (uint8 pixels 0..255) are used as they are, with a warning:
        the data loaders scale pixels to [0, 1] (design §5).
        """
        raw = np.asarray(x)
        if raw.dtype.kind in "iu" and raw.size and raw.max() > 1:
            import warnings

            warnings.warn(f"input has integer dtype {raw.dtype} with values up to {raw.max()}; "
                          f"it is used unscaled, while the data loaders scale pixels to "
                          f"[0, 1] (divide by 255 to match)", UserWarning, stacklevel=3)
        try:
            x = raw.astype(np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"input must be numeric, got dtype {raw.dtype}") from None
        d = self.input_dim
        if x.ndim == 1:
            x = x[None]
        elif x.ndim > 2 and x.shape[1:] == self.input_shape:
            x = x.reshape(len(x), d)
        if x.ndim != 2 or x.shape[1] != d:
            raise ValueError(f"input has shape {x.shape}; this network expects (N, {d}) "
                             f"or (N, *{self.input_shape})")
        if not np.all(np.isfinite(x)):
            raise ValueError("input contains NaN or inf values")
        return x

    def to_arrays(self) -> dict:
        """The arrays written to the network file."""
        return dict(
            phi=self.phi, log_sigma=self.log_sigma, log_bias=self.log_bias,
            log_eta=np.float64(self.log_eta), u0=self.u0,
            clamp_u=np.float64(self.clamp_u), clamp_du=np.float64(self.clamp_du),
            input_shape=np.asarray(self.input_shape, dtype=np.int64),
            format_version=np.int64(FORMAT_VERSION),
            meta=np.asarray(json.dumps(self.meta, sort_keys=True)),
        )


def _float_array(name, value, ndim=None, shape=None):
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric, got {type(value).__name__}") from None
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name} has shape {arr.shape}, expected {shape}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf values")
    return arr


def _check_derived(net) -> None:
    """ValueError unless every quantity a backend derives from the parameters is finite.

    Finite parameters can still overflow or underflow in float64 once
    exponentiated or multiplied (log σ = −400 makes σ² = 0; log η = 800 makes
    η = inf; a huge Φ overflows ΦᵀΦ/σ²): the backends would then run to NaN
    potentials, each differently.  Bounds are O(D·K): the largest count a step
    can emit is bounded by the rate at the clamp (or at u₀), and |ΦᵀΦ/σ²| z by
    |Φ|ᵀ(|Φ| 1 / σ²) z_max.
    """
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        sigma2 = np.exp(2.0 * net.log_sigma)
        inv = 1.0 / sigma2
        if not (np.all(sigma2 > 0) and np.all(np.isfinite(sigma2)) and np.all(np.isfinite(inv))):
            raise ValueError(f"log_sigma ranges {net.log_sigma.min():.4g}.."
                             f"{net.log_sigma.max():.4g}: σ² = exp(2 log_sigma) and 1/σ² "
                             f"must be positive and finite in float64")
        eta = np.exp(net.log_eta)
        if not (np.isfinite(eta) and eta > 0):
            raise ValueError(f"log_eta = {net.log_eta:.4g}: η = exp(log_eta) must be positive "
                             f"and finite in float64")
        bias = np.exp(net.log_bias)
        if not np.all(np.isfinite(bias)):
            raise ValueError(f"log_bias reaches {net.log_bias.max():.4g}: b = exp(log_bias) "
                             f"overflows float64")
        top = max(net.clamp_u, float(net.u0.max()))
        rate = np.exp(top)
        if not np.isfinite(rate):
            raise ValueError(f"the largest rate e^u (u up to {top:.4g}: clamp_u or u0) "
                             f"overflows float64")
        z_max = rate + 20.0 * np.sqrt(rate) + 30.0  # the inverse CDF's own search cap
        a = np.abs(net.phi)
        recurrent = a.T @ (a.sum(axis=1) * inv) * z_max  # ≥ |ΦᵀΦ/σ² z| per latent
        recon = a.sum(axis=1) * z_max  # ≥ |Φ z| per input value
        du = eta * (recurrent + bias)
        if not (np.all(np.isfinite(recurrent)) and np.all(np.isfinite(recon))
                and np.all(np.isfinite(du)) and np.all(np.isfinite(a.T @ inv))):
            raise ValueError(f"phi (|Φ| up to {a.max():.4g}) with σ² down to {sigma2.min():.4g}, "
                             f"η = {eta:.4g} and rates up to e^{top:.4g}: the feedback "
                             f"η ΦᵀΦ z/σ² or the read-out Φ z overflows float64")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path, write) -> Path:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, then rename it.

    A crash mid-write leaves any existing file at ``path`` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; honour the user's umask
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def json_ready(obj):
    """A copy of ``obj`` that strict JSON can hold: dicts (keys as str), lists and tuples
    walked; numpy arrays and scalars → Python; non-finite floats → None; paths → str."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path, obj) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically (numpy scalars and arrays allowed)."""
    def default(o):
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, np.generic):
            return o.item()
        raise TypeError(f"{type(o).__name__} is not JSON-serialisable")

    text = json.dumps(obj, indent=2, sort_keys=True, default=default)
    return atomic_write(path, lambda f: f.write(text.encode()))


def save_network(net: IPVAENetwork, path) -> Path:
    """Write ``net`` to ``path`` (.npz) atomically; returns the path."""
    arrays = net.to_arrays()
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def _check_archive(path: Path) -> None:
    """ValueError unless ``path`` is an intact zip of .npy members of bounded size.

    Sizes are read from the zip directory and each member's .npy header, so a
    deflate bomb or a header declaring a huge array is refused before anything
    large is decompressed or allocated.
    """
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a network file (a .npz is a zip archive of arrays)")
    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
            total = sum(m.file_size for m in members)
            if total > MAX_FILE_BYTES:
                raise ValueError(f"{path}: declares {total / 2**20:.0f} MiB of arrays; network "
                                 f"files are limited to {MAX_FILE_BYTES / 2**20:.0f} MiB")
            for m in members:
                if not m.filename.endswith(".npy"):
                    raise ValueError(f"{path}: member {m.filename!r} is not a .npy array")
                with zf.open(m) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                    else:
                        raise ValueError(f"unsupported .npy version {version}")
                    if dtype.hasobject:
                        raise ValueError(f"{path}: {m.filename[:-4]} holds Python objects "
                                         f"(pickled data); a network file holds numbers only")
                    if len(shape) > MAX_ARRAY_DIMS or any(s > MAX_FILE_BYTES for s in shape):
                        raise ValueError(f"{path}: {m.filename[:-4]} declares shape {shape}")
                    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
                    if nbytes > m.file_size:
                        raise ValueError(f"{path}: {m.filename[:-4]} declares {nbytes} bytes "
                                         f"but its member holds {m.file_size}")
    except ValueError as err:
        msg = str(err)
        raise ValueError(msg if msg.startswith(str(path)) else
                         f"{path}: not a readable network file ({msg})") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError,
            RuntimeError) as err:
        raise ValueError(f"{path}: damaged network file ({err})") from None


def load_network(path) -> IPVAENetwork:
    """Read and validate a network file.

    Raises FileNotFoundError for a missing file and ValueError naming the
    problem for anything else: a directory, not an npz (zip), a damaged or
    truncated archive, arrays larger than ``MAX_FILE_BYTES``, a missing key, a
    wrong shape or dtype, a non-finite value, parameters whose derived
    quantities overflow float64, or a format_version newer than this code.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a network file (.npz)")
    if not path.exists():
        raise FileNotFoundError(f"network file not found: {path}")
    if not path.is_file():
        raise ValueError(f"{path} is not a regular file")
    _check_archive(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except ValueError as err:
        raise ValueError(f"{path}: not a readable network file ({err})") from None
    except (OSError, EOFError, zipfile.BadZipFile, NotImplementedError, RuntimeError) as err:
        raise ValueError(f"{path}: damaged network file ({err})") from None
    except MemoryError:
        raise ValueError(f"{path}: arrays too large to load") from None
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ValueError(f"{path}: missing key(s) {', '.join(missing)}")
    version = data["format_version"]
    if version.shape != () or version.dtype.kind not in "iu":
        raise ValueError(f"{path}: format_version must be an integer scalar")
    if int(version) > FORMAT_VERSION:
        raise ValueError(f"{path}: format_version {int(version)} is newer than this code "
                         f"supports ({FORMAT_VERSION}); upgrade ipvae")
    for key in ("phi", "log_sigma", "log_bias", "log_eta", "u0", "clamp_u", "clamp_du"):
        if data[key].dtype.kind != "f":
            raise ValueError(f"{path}: {key} has dtype {data[key].dtype}, expected float")
    if data["input_shape"].dtype.kind not in "iu" or data["input_shape"].ndim != 1:
        raise ValueError(f"{path}: input_shape must be a 1-D integer array")
    if data["meta"].dtype.kind != "U" or data["meta"].shape != ():
        raise ValueError(f"{path}: meta must be a JSON string")
    try:
        meta = json.loads(str(data["meta"]))
    except (json.JSONDecodeError, RecursionError) as err:
        raise ValueError(f"{path}: meta is not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: meta must be a JSON object, got {type(meta).__name__}")
    try:
        return IPVAENetwork(
            phi=data["phi"], log_sigma=data["log_sigma"], log_bias=data["log_bias"],
            log_eta=data["log_eta"], u0=data["u0"], clamp_u=data["clamp_u"],
            clamp_du=data["clamp_du"], input_shape=tuple(data["input_shape"].tolist()),
            meta=meta)
    except (ValueError, OverflowError) as err:
        raise ValueError(f"{path}: {err}") from None
