"""The network file: one ``.npz`` that every backend reads (DESIGN.md §3).

A network file is data: it is written with ``numpy.savez`` and read with
``allow_pickle=False``, never unpickled.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
"""Version written by this code; files with a newer version are refused."""

LOG_SIGMA_LIMIT = 3.45
"""|log σ| is soft-clamped to this bound during training (DESIGN.md §1)."""

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
        """
        x = np.asarray(x, dtype=np.float64)
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
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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


def load_network(path) -> IPVAENetwork:
    """Read and validate a network file.

    Raises FileNotFoundError for a missing file and ValueError naming the
    problem for anything else: not an npz, a missing key, a wrong shape or
    dtype, a non-finite value, or a format_version newer than this code.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"network file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except ValueError as err:
        raise ValueError(f"{path}: not a readable network file ({err})") from None
    except (OSError, EOFError) as err:
        raise ValueError(f"{path}: not a network file (.npz): {err}") from None
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
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: meta is not valid JSON ({err})") from None
    try:
        return IPVAENetwork(
            phi=data["phi"], log_sigma=data["log_sigma"], log_bias=data["log_bias"],
            log_eta=data["log_eta"], u0=data["u0"], clamp_u=data["clamp_u"],
            clamp_du=data["clamp_du"], input_shape=tuple(data["input_shape"].tolist()),
            meta=meta)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
