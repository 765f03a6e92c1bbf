"""Quantization of a float network to the fixed-point (Loihi) formats of ``neurons.fixed``.

``quantize(net, weight_bits=8)`` returns a :class:`QuantizedNetwork`: integer
weights in Lava's Dense fixed_pt format (a signed ``bits``-bit mantissa times
2^(9−bits), in [−256, 254], with one exponent per connection), the self-term
(diagonal of −ΦᵀΦ/σ²) with its own exponent and ``self_bits`` (default 8:
planted dictionaries' large diagonal would otherwise set the shared exponent and
wipe out the off-diagonal weights), the step constants in Q.12, u₀, and the
lookup tables.  ``save_quantized`` / ``load_quantized`` write and read it as one
``.npz`` (no pickle), holding also the float network it came from.

Determinism: every integer here is the same on any CPU.  The tables are built
with :mod:`decimal` (correctly rounded exp/ln), σ² and b are exp(·) by
:mod:`decimal` too, and the weights are rounded from exact values: the float
products run through BLAS, then each entry whose scaled value lies within the
product's error bound of a rounding boundary is recomputed exactly in rationals
(:class:`fractions.Fraction`).
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from fractions import Fraction
from pathlib import Path

import numpy as np

from networks.network import IPVAENetwork, atomic_write
from neurons import fixed
from neurons.fixed import FixedLatent

QUANT_FORMAT_VERSION = 1
EXP_MIN, EXP_MAX = -8, 7
"""Available shared weight exponents (Loihi's 4-bit signed weight exponent)."""
X_FRAC = 12
"""Inputs x travel as 24-bit graded payloads in Q.12 (|x| < 2048)."""

_INT_KEYS = ("w_rec", "w_ff", "self_weights", "bias", "u0", "exp_lut", "negexp_lut",
             "softplus_lut")
_SCALAR_KEYS = ("rec_exp", "ff_exp", "self_exp", "eta", "clamp_u", "clamp_du", "weight_bits",
                "self_bits", "count_bits", "x_frac")


def _dec_exp(values) -> np.ndarray:
    """exp of float64 values, correctly rounded to float64 (decimal, not libm)."""
    with localcontext() as ctx:
        ctx.prec = 40
        return np.array([float(Decimal(float(v)).exp()) for v in np.ravel(values)]).reshape(
            np.shape(values))


def _round_int(d: Decimal) -> int:
    return int(d.to_integral_value(rounding=ROUND_HALF_EVEN))


def build_luts() -> dict:
    """The three tables of ``neurons.fixed`` (int64), stepped 2^-LUT_STEP_BITS, exact."""
    return {key: value.copy() for key, value in _luts().items()}


@functools.lru_cache(maxsize=1)
def _luts() -> dict:
    step = 1 << fixed.LUT_STEP_BITS
    with localcontext() as ctx:
        ctx.prec = 50
        exp_lut = [_round_int((Decimal(fixed.EXP_LO) + Decimal(i) / step).exp()
                              * (1 << fixed.R_FRAC))
                   for i in range((fixed.EXP_HI - fixed.EXP_LO) * step + 1)]
        negexp_lut = [_round_int((-(Decimal(i) / step)).exp() * (1 << fixed.P_FRAC))
                      for i in range(fixed.SPLIT_RATE * step + 2)]
        softplus_lut = []
        for i in range((fixed.SOFTPLUS_HI - fixed.SOFTPLUS_LO) * step + 1):
            s = Decimal(fixed.SOFTPLUS_LO) + Decimal(i) / step
            softplus_lut.append(_round_int((1 + s.exp()).ln() * (1 << fixed.U_FRAC)))
    return dict(exp_lut=np.array(exp_lut, dtype=np.int64),
                negexp_lut=np.array(negexp_lut, dtype=np.int64),
                softplus_lut=np.array(softplus_lut, dtype=np.int64))


def _check_bits(name, bits, lo=2, hi=8):
    if int(bits) != bits or not lo <= bits <= hi:
        raise ValueError(f"{name} must be an integer in {lo}..{hi}, got {bits!r}")
    return int(bits)


def choose_exponent(amax: float, bits: int, frac: int, name: str, exact_max=None) -> int:
    """The least exponent e with round(amax·2^(frac − e − (9 − bits))) ≤ 2^(bits−1) − 1.

    ``exact_max`` (a Fraction), when given, decides the comparisons exactly.
    """
    top = (1 << (bits - 1)) - 1
    value = Fraction(amax) if exact_max is None else exact_max
    for e in range(EXP_MIN - 40, EXP_MAX + 40):
        if value * Fraction(2) ** (frac - e - (9 - bits)) < Fraction(top) + Fraction(1, 2):
            break
    if not EXP_MIN <= e <= EXP_MAX:
        raise ValueError(f"{name}: weights up to {float(value):.3g} need a weight exponent of "
                         f"{e}, outside the available {EXP_MIN}..{EXP_MAX} at {bits} bits")
    return e


def _mantissa_bits(m: np.ndarray) -> int:
    """Bits (sign included) the nonzero mantissas actually use."""
    amax = int(np.abs(m).max()) if m.size else 0
    return amax.bit_length() + 1 if amax else 0


_EXACT_SHIFT = 2200
"""Common denominator 2^2200 of exact sums of products of two float64s (each a dyadic
rational with denominator at most 2^1074)."""


def _exact_dot(a: np.ndarray, b: np.ndarray) -> Fraction:
    """Σ a_i b_i exactly (float64 vectors), in integer arithmetic."""
    total = 0
    for x, y in zip(a.tolist(), b.tolist()):
        nx, dx = x.as_integer_ratio()
        ny, dy = y.as_integer_ratio()
        total += (nx * ny) << (_EXACT_SHIFT - dx.bit_length() - dy.bit_length() + 2)
    return Fraction(total, 1 << _EXACT_SHIFT)


def _exact_products(phi: np.ndarray, scaled: np.ndarray, pairs) -> list:
    """Exact Σ_d Φ_dk · fl(Φ_dj/σ²_d) for (k, j) pairs, as Fractions."""
    return [_exact_dot(phi[:, k], scaled[:, j]) for k, j in pairs]


def _round_scaled(values: np.ndarray, bound: np.ndarray, scale: int, exact) -> np.ndarray:
    """rint(values·2^scale) (half to even), with entries within ``bound`` (already scaled)
    of a rounding boundary recomputed by ``exact(indices) -> list of Fractions``."""
    scaled = values * 2.0 ** scale
    out = np.rint(scaled)
    near = np.flatnonzero(np.abs(np.abs(scaled - np.floor(scaled)) - 0.5) <= bound)
    if near.size:
        for i, v in zip(near, exact(near)):
            out.flat[i] = round(v * Fraction(2) ** scale)  # Fraction rounds half to even
    return out.astype(np.int64)


def quantize_matrix(w, bits: int, frac: int, name: str, bound=None, exact=None):
    """Quantize real weights w to Lava's Dense fixed_pt format in units 2^-frac.

    Returns (weights int32 (multiples of 2^(9−bits) in [−256, 254]), exponent, report).
    ``bound`` (same shape, ≥ 0) and ``exact`` (indices → Fractions) make the rounding
    CPU-independent where w came out of a float reduction (see the module notes).
    """
    bits = _check_bits(f"{name} bits", bits)
    w = np.asarray(w, dtype=np.float64)
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{name}: weights contain NaN or inf; nothing to quantize")
    amax = float(np.abs(w).max()) if w.size else 0.0
    if amax == 0.0:
        raise ValueError(f"{name}: all weights are zero; nothing to represent")
    bound = np.zeros(w.shape) if bound is None else np.asarray(bound, dtype=np.float64)
    exact_max = None
    if exact is not None:  # decide the exponent on the exact largest magnitudes
        cand = np.flatnonzero(np.abs(w).ravel() >= amax - 2 * bound.max())
        exact_max = max(abs(v) for v in exact(cand))
    e = choose_exponent(amax, bits, frac, name, exact_max)
    scale = frac - e - (9 - bits)
    m = _round_scaled(w, bound * 2.0 ** scale, scale,
                      exact if exact is not None else
                      (lambda idx: [Fraction(float(w.flat[i])) for i in idx]))
    top = (1 << (bits - 1)) - 1
    m = np.clip(m, -top - 1, top)
    q = (m << (9 - bits)).astype(np.int32)
    deq = q.astype(np.float64) * 2.0 ** (e - frac)
    report = dict(bits=bits, bits_used=_mantissa_bits(m), exponent=e,
                  nonzero=int(np.count_nonzero(q)), size=int(q.size),
                  rel_rms_error=float(np.sqrt(np.mean((deq - w) ** 2) / np.mean(w ** 2))),
                  max_abs=amax)
    return q, e, report


def _q12(value: float, name: str, lo: float, hi: float) -> int:
    if not lo <= value < hi:
        raise ValueError(f"{name} = {value:.6g} lies outside the fixed-point range "
                         f"[{lo}, {hi})")
    return int(np.rint(value * (1 << fixed.U_FRAC)))


@dataclass(eq=False)
class QuantizedNetwork:
    """A network in the fixed-point formats of ``neurons.fixed`` (the quantized file's contents).

    w_rec : (K, K) int32 off-diagonal −ΦᵀΦ/σ² (zero diagonal), exponent rec_exp;
    w_ff : (K, D) int32 Φᵀ/σ², exponent ff_exp (x in Q.x_frac);
    self_weights : (K,) int32 diagonal, exponent self_exp; bias, u0 : (K,) Q.12;
    eta, clamp_u, clamp_du : Q.12; the tables; bit widths; the float network.
    """

    w_rec: np.ndarray
    rec_exp: int
    w_ff: np.ndarray
    ff_exp: int
    self_weights: np.ndarray
    self_exp: int
    bias: np.ndarray
    u0: np.ndarray
    eta: int
    clamp_u: int
    clamp_du: int
    exp_lut: np.ndarray
    negexp_lut: np.ndarray
    softplus_lut: np.ndarray
    weight_bits: int
    self_bits: int
    count_bits: int
    x_frac: int
    float_net: IPVAENetwork
    report: dict = field(default_factory=dict)

    @property
    def n_latents(self) -> int:
        return self.w_rec.shape[0]

    @property
    def input_dim(self) -> int:
        return self.w_ff.shape[1]

    def latent(self) -> FixedLatent:
        """The integer step of the K latent neurons (``neurons.fixed.FixedLatent``)."""
        return FixedLatent.from_arrays(self.to_arrays())

    def drive(self, x: np.ndarray):
        """Constant drive Φᵀx/σ² (N, K) int64 Q.12 and the saturated input and drive numbers
        (``neurons.fixed.drive``)."""
        return fixed.drive(self.w_ff, self.ff_exp, self.x_frac, x)

    def to_arrays(self) -> dict:
        arrays = {k: np.asarray(getattr(self, k)) for k in _INT_KEYS}
        arrays.update({k: np.int64(getattr(self, k)) for k in _SCALAR_KEYS})
        arrays.update({"float_" + k: v for k, v in self.float_net.to_arrays().items()})
        arrays["quant_format_version"] = np.int64(QUANT_FORMAT_VERSION)
        arrays["report"] = np.asarray(json.dumps(self.report, sort_keys=True))
        return arrays


def quantize(net: IPVAENetwork, weight_bits: int = 8, self_bits: int = 8,
             count_bits: int = 16) -> QuantizedNetwork:
    """Quantize ``net`` (folded topology) to the fixed-point formats; see the module notes.

    weight_bits : mantissa bits (2..8) of the off-diagonal and feed-forward weights;
    self_bits : mantissa bits of the self-term (own exponent); count_bits : graded
    spike payload of a count (1..24).  Raises ValueError naming any value that
    cannot be represented.
    """
    weight_bits = _check_bits("weight_bits", weight_bits)
    self_bits = _check_bits("self_bits", self_bits)
    count_bits = _check_bits("count_bits", count_bits, 1, 24)
    phi = np.asarray(net.phi, dtype=np.float64)
    d, k = phi.shape
    if not np.all(np.isfinite(phi)):
        raise ValueError("phi contains NaN or inf; nothing to quantize")
    sigma2 = _dec_exp(2.0 * net.log_sigma)
    bias = _dec_exp(net.log_bias)
    eta = float(_dec_exp(np.array([net.log_eta]))[0])
    frac = fixed.A_FRAC

    # Recurrent −ΦᵀΦ/σ² (as −Φᵀ·fl(Φ/σ²), the feed-forward weights' exact values), split
    # into the off-diagonal Dense and the self-term.
    scaled = phi / sigma2[:, None]
    gram = -(phi.T @ scaled)
    bound = 4.0 * d * np.finfo(float).eps * (np.abs(phi).T @ np.abs(scaled)) + 1e-300

    def exact_rec(idx):
        pairs = [divmod(int(i), k) for i in idx]
        return [-v for v in _exact_products(phi, scaled, pairs)]

    off = gram.copy()
    np.fill_diagonal(off, 0.0)
    off_bound = bound.copy()
    np.fill_diagonal(off_bound, 0.0)
    w_rec, rec_exp, rep_rec = quantize_matrix(off, weight_bits, frac, "recurrent weights",
                                              off_bound, exact_rec)
    diag = np.diag(gram).copy()

    def exact_diag(idx):
        return [-v for v in _exact_products(phi, scaled, [(int(i), int(i)) for i in idx])]

    self_w, self_exp, rep_self = quantize_matrix(diag, self_bits, frac, "self-term",
                                                 np.diag(bound).copy(), exact_diag)
    ff = np.ascontiguousarray(scaled.T)  # Φᵀ/σ²: one correctly rounded division per entry
    w_ff, ff_exp, rep_ff = quantize_matrix(ff, weight_bits, frac, "feed-forward weights")

    if not net.clamp_u < fixed.EXP_HI - 1:
        raise ValueError(f"clamp_u = {net.clamp_u} exceeds the rate table's range "
                         f"(< {fixed.EXP_HI - 1})")
    q = QuantizedNetwork(
        w_rec=w_rec, rec_exp=rec_exp, w_ff=w_ff, ff_exp=ff_exp, self_weights=self_w,
        self_exp=self_exp,
        bias=np.array([_q12(b, "bias", 0.0, 2048.0) for b in bias], dtype=np.int64),
        u0=np.array([_q12(u, "u0", fixed.EXP_LO, fixed.EXP_HI - 1) for u in net.u0],
                    dtype=np.int64),
        eta=_q12(eta, "eta", 2.0 ** -fixed.ETA_FRAC, 2048.0),
        clamp_u=_q12(net.clamp_u, "clamp_u", -8.0, fixed.EXP_HI - 1),
        clamp_du=_q12(net.clamp_du, "clamp_du", -8.0, fixed.SOFTPLUS_HI - 8),
        **build_luts(), weight_bits=weight_bits, self_bits=self_bits, count_bits=count_bits,
        x_frac=X_FRAC, float_net=net)
    q.report = dict(recurrent=rep_rec, self_term=rep_self, feedforward=rep_ff,
                    formats=format_summary(q))
    return q


def format_summary(q: QuantizedNetwork) -> dict:
    """Bit widths and fractional bits of every quantity (for reports and the docs)."""
    return dict(u=f"Q.{fixed.U_FRAC}, {fixed.STATE_BITS}-bit signed",
                current=f"Q.{fixed.A_FRAC}, {fixed.STATE_BITS}-bit signed payload, saturating",
                eta=f"Q.{fixed.ETA_FRAC}", rate=f"Q.{fixed.R_FRAC} (int64)",
                pmf=f"Q.{fixed.P_FRAC} (int64)", uniform="32-bit",
                input=f"Q.{q.x_frac}, {fixed.STATE_BITS}-bit signed payload, saturating",
                count=f"{q.count_bits}-bit unsigned payload, saturating",
                weights=f"{q.weight_bits}-bit signed mantissa, shared exponent "
                        f"in {EXP_MIN}..{EXP_MAX}",
                self_term=f"{q.self_bits}-bit signed mantissa, own exponent",
                tables=dict(exp=len(q.exp_lut), negexp=len(q.negexp_lut),
                            softplus=len(q.softplus_lut), step=f"2^-{fixed.LUT_STEP_BITS}"))


def save_quantized(q: QuantizedNetwork, path) -> Path:
    """Write the quantized network to ``path`` (.npz) atomically."""
    arrays = q.to_arrays()
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def load_quantized(path) -> QuantizedNetwork:
    """Read a quantized network file (no pickle); ValueError naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"quantized network file not found: {path}")
    try:
        f = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{path}: not a quantized network file ({err})") from None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: not a quantized network file (not an .npz archive)")
    with f:
        data = {key: f[key] for key in f.files}
    missing = [key for key in (*_INT_KEYS, *_SCALAR_KEYS, "quant_format_version", "report")
               if key not in data]
    if missing:
        raise ValueError(f"{path}: not a quantized network file (missing {', '.join(missing)})")
    if int(data["quant_format_version"]) > QUANT_FORMAT_VERSION:
        raise ValueError(f"{path}: quantized format {int(data['quant_format_version'])} is "
                         f"newer than this code supports ({QUANT_FORMAT_VERSION})")
    for key in _INT_KEYS + _SCALAR_KEYS:
        if data[key].dtype.kind not in "iu":
            raise ValueError(f"{path}: {key} has dtype {data[key].dtype}, expected integers")
    fl = {key[6:]: v for key, v in data.items() if key.startswith("float_")}
    net = IPVAENetwork(phi=fl["phi"], log_sigma=fl["log_sigma"], log_bias=fl["log_bias"],
                       log_eta=fl["log_eta"], u0=fl["u0"], clamp_u=fl["clamp_u"],
                       clamp_du=fl["clamp_du"], input_shape=tuple(fl["input_shape"].tolist()),
                       meta=json.loads(str(fl["meta"])))
    k, d = net.n_latents, net.input_dim
    shapes = dict(w_rec=(k, k), w_ff=(k, d), self_weights=(k,), bias=(k,), u0=(k,))
    for key, shape in shapes.items():
        if data[key].shape != shape:
            raise ValueError(f"{path}: {key} has shape {data[key].shape}, expected {shape}")
    return QuantizedNetwork(**{key: data[key] for key in _INT_KEYS},
                            **{key: int(data[key]) for key in _SCALAR_KEYS},
                            float_net=net, report=json.loads(str(data["report"])))
