"""The fixed-point latent step (the Loihi path, design §2.4): integers only.

One module, called by both the integer emulator (``hardware.emulator``) and the
Lava ``fixed_pt`` ProcessModel, so the two agree bit for bit.  ``neurons/_fixed.c``
computes the counts, and for the emulator the whole step (``FixedLatent.step``),
with the same integers as the numpy code here (which runs where it is not built;
``tests/test_fixed_point.py`` holds the two equal).  Quantization (building the
integers and lookup tables from a float network) lives in ``hardware.quantize``;
nothing here uses floating point.

Number formats (``Q.f`` = integer with f fractional bits):

- membrane potential U = u·2^12 (``U_FRAC``), 24-bit signed state;
- currents (drive, feedback, bias) A = a·2^12 (``A_FRAC``), saturated to the
  24-bit graded-spike payload [−2^23, 2^23 − 1] (counted);
- step size ETA = η·2^12 (``ETA_FRAC``); du = (ETA·A) >> 12 (floor);
- rate R = e^u·2^20 (``R_FRAC``) from a 1/64-step table of e^u with linear
  interpolation (``exp_lut``, over u ∈ [−9, 11));
- clamps: hard floor at −8, then c − softplus(c − x) with softplus from a
  1/64-step table over [−16, 20) (0 below, identity above);
- uniforms: 32-bit integers V (ξ = V/2^32) from a counter-based hash
  (SplitMix64's finaliser) of (seed, input index, step, neuron, sub-draw);
- counts: the Poisson inverse CDF in Q.38 fixed point: the rate is split into
  J = ⌈r/16⌉ near-equal parts (integers summing to R exactly), each part's
  count is min{m : Σ_{i≤m} p_i ≥ V} with p_0 = e^{−r_j} (table, 1/64 step,
  interpolated) and p_{i} = ⌊p_{i−1}·R_j / (i·2^20)⌋ (≤ 126 terms), and z is
  their sum (a sum of independent Poisson counts is Poisson); the count sent
  as a graded spike saturates at 2^count_bits − 1 (counted);
- weights: Lava Dense fixed_pt format (signed mantissa times 2^(9−bits) in
  [−256, 254], shared exponent; accumulate, then shift by the exponent, floor).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neurons import kernels
from neurons import poisson as _recipe

SPARSE_DENSE = 0.2
"""Up to this share of nonzero payloads a Dense accumulates event-driven (work per message)."""

U_FRAC = 12
A_FRAC = 12
ETA_FRAC = 12
R_FRAC = 20
P_FRAC = 38
LUT_STEP_BITS = 6            # tables step 2^-6 in the argument
STATE_BITS = 24              # u and current payloads: signed 24-bit
PAYLOAD_MIN, PAYLOAD_MAX = -(1 << (STATE_BITS - 1)), (1 << (STATE_BITS - 1)) - 1
U_FLOOR = int(_recipe.U_FLOOR) << U_FRAC   # the recipe's floor (neurons/recipe.h), in Q.12
EXP_LO, EXP_HI = -9, 11      # e^u table covers u ∈ [EXP_LO, EXP_HI)
SOFTPLUS_LO, SOFTPLUS_HI = -16, 20
SPLIT_RATE = 16              # rate parts of at most 16 spikes/step
SUBDRAW_STRIDE = 1 << 12     # counter slots per (step, neuron): ≥ e^11/16 parts
ICDF_TERMS = 126             # ≥ 16 + 20·√16 + 30 (the float recipe's cap at r = 16)
if ICDF_TERMS < SPLIT_RATE + _recipe.ICDF_CAP_SIGMAS * SPLIT_RATE ** 0.5 + _recipe.ICDF_CAP_EXTRA:
    raise ImportError("neurons.fixed: ICDF_TERMS is below the recipe's cap at the split rate; "
                      "raise it here and in neurons/_fixed.c")

try:
    from neurons import _fixed
except ImportError:  # built without a C compiler: numpy computes the same integers
    _fixed = None
if _fixed is not None and _fixed.constants() != (U_FRAC, R_FRAC, P_FRAC, LUT_STEP_BITS, EXP_LO,
                                                 EXP_HI, SPLIT_RATE, SUBDRAW_STRIDE,
                                                 ICDF_TERMS, ETA_FRAC, SOFTPLUS_LO, SOFTPLUS_HI,
                                                 int(_recipe.U_FLOOR), STATE_BITS):
    _fixed = None  # a stale build: its formats (or its functions) are not these

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 arrays (multiplication wraps mod 2^64)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def stream_keys(seed: int, indices) -> np.ndarray:
    """(N,) uint64 keys of the integer streams of inputs ``indices`` under ``seed``."""
    idx = np.asarray(indices, dtype=np.uint64).reshape(-1)
    s = _mix(np.array([seed], dtype=np.uint64) * _GOLDEN + np.uint64(1))
    with np.errstate(over="ignore"):
        return _mix(s ^ _mix(idx + np.uint64(0x632BE59BD9B4E019)))


def explicit_uniforms(xi) -> np.ndarray:
    """Explicit uniforms ξ ∈ [0, 1) (float64) as 32-bit integers ⌊ξ·2^32⌋ (exact)."""
    return np.floor(np.asarray(xi, dtype=np.float64) * 2.0 ** 32).astype(np.int64)


def uniforms(keys: np.ndarray, counters: np.ndarray) -> np.ndarray:
    """32-bit uniforms V (int64 in [0, 2^32)) for keys and counters (broadcast)."""
    with np.errstate(over="ignore"):
        c = np.asarray(counters).astype(np.uint64) * _GOLDEN
        return (_mix(np.asarray(keys, dtype=np.uint64) + c) >> np.uint64(32)).astype(np.int64)


def lut_lookup(lut: np.ndarray, index_fixed: np.ndarray, frac_bits: int) -> np.ndarray:
    """Linear interpolation in a table stepped 2^-LUT_STEP_BITS: ``index_fixed`` ≥ 0 is the
    argument minus the table's start, with ``frac_bits`` fractional bits (int64)."""
    sh = frac_bits - LUT_STEP_BITS
    i = index_fixed >> sh
    f = index_fixed & ((1 << sh) - 1)
    lo = lut[i]
    return lo + (((lut[i + 1] - lo) * f) >> sh)


def rate(U: np.ndarray, exp_lut: np.ndarray) -> np.ndarray:
    """R = e^u·2^R_FRAC (int64) for potentials U = u·2^U_FRAC."""
    idx = np.clip(U - (EXP_LO << U_FRAC), 0, ((EXP_HI - EXP_LO) << U_FRAC) - 1)
    return lut_lookup(exp_lut, idx, U_FRAC)


def _icdf_part(V: np.ndarray, R: np.ndarray, negexp_lut: np.ndarray) -> np.ndarray:
    """Counts (int64, R's shape) of rate parts R ≤ SPLIT_RATE·2^R_FRAC for uniforms V < 2^32."""
    shape = R.shape
    R, V = R.reshape(-1), np.broadcast_to(V, shape).reshape(-1)
    p = lut_lookup(negexp_lut, R, R_FRAC)           # e^{−r}·2^P_FRAC
    target = V << (P_FRAC - 32)
    m = np.zeros(R.shape, dtype=np.int64)
    todo = np.flatnonzero(p < target)
    if todo.size:
        # m = #{i ≥ 0 : F_i < target} (F is non-decreasing): counted term by term over the
        # unfinished entries, which are compacted every few terms.
        pt, ft, rt, tt = p[todo], p[todo].copy(), R[todo], target[todo]
        mt = np.zeros(todo.size, dtype=np.int64)
        for i in range(1, ICDF_TERMS + 1):
            mt += ft < tt
            np.multiply(pt, rt, out=pt)
            np.floor_divide(pt, i << R_FRAC, out=pt)
            ft += pt
            if i % 4 == 0 or i == ICDF_TERMS:
                going = ft < tt
                if not going.all():
                    m[todo] = mt + going  # finished entries: final; the rest are rewritten
                    todo, pt, ft, rt, tt, mt = (a[going] for a in (todo, pt, ft, rt, tt, mt))
                    if not todo.size:
                        break
        if todo.size:
            m[todo] = ICDF_TERMS
    return m.reshape(shape)


def compiled() -> bool:
    """True when the compiled counts and fused step (``neurons/_fixed.c``) are in use."""
    return _fixed is not None


def counts(U: np.ndarray, keys: np.ndarray, t: int, exp_lut: np.ndarray,
           negexp_lut: np.ndarray, first=None):
    """Spike counts z_t (int64, same shape as U (N, K)) and rates R (see ``counts_numpy``);
    computed by ``neurons/_fixed.c`` where it is built (the same integers)."""
    if _fixed is None:
        return counts_numpy(U, keys, t, exp_lut, negexp_lut, first)
    U = np.ascontiguousarray(U, dtype=np.int64)
    z, R = np.empty_like(U), np.empty_like(U)
    _fixed.counts(U, np.ascontiguousarray(keys, dtype=np.uint64), int(t),
                  np.ascontiguousarray(exp_lut, dtype=np.int64),
                  np.ascontiguousarray(negexp_lut, dtype=np.int64),
                  None if first is None else np.ascontiguousarray(first, dtype=np.int64), z, R)
    return z, R


def counts_numpy(U: np.ndarray, keys: np.ndarray, t: int, exp_lut: np.ndarray,
                 negexp_lut: np.ndarray, first=None):
    """Spike counts z_t (int64, same shape as U (N, K)) and rates R.

    keys : (N,) uint64 stream keys (``stream_keys``) of the N rows; t : inference step.
    Uniform of neuron k, part j: counter (t·K + k)·SUBDRAW_STRIDE + j, except that
    ``first`` (N, K) int64 32-bit uniforms, when given (explicit noise ξ as
    ⌊ξ·2^32⌋), replace those of part 0, and parts j > 0 then use the hash of
    (that uniform, j): a run with explicit noise does not depend on the seed.
    """
    n, k = U.shape
    R = rate(U, exp_lut)
    split = SPLIT_RATE << R_FRAC
    parts = (R + split - 1) // split
    base = (np.int64(t) * k + np.arange(k, dtype=np.int64)) * SUBDRAW_STRIDE
    if not (parts > 1).any():
        V = uniforms(keys[:, None], base[None, :]) if first is None else first
        return _icdf_part(V, R, negexp_lut), R
    flat_parts = parts.reshape(-1)
    starts = np.concatenate(([0], np.cumsum(flat_parts)[:-1]))
    owner = np.repeat(np.arange(n * k), flat_parts)
    j = np.arange(owner.size, dtype=np.int64) - starts[owner]
    Rf, Jf = R.reshape(-1)[owner], flat_parts[owner]
    Rj = (Rf + j) // Jf
    if first is None:
        V = uniforms(keys[owner // k], base[owner % k] + j)
    else:  # parts after the first: hashed from the explicit uniform, not from the seed
        V = uniforms(first.reshape(-1)[owner].astype(np.uint64), j)
        V[starts] = first.reshape(-1)
    z = np.add.reduceat(_icdf_part(V, Rj, negexp_lut), starts)
    return z.reshape(n, k), R


def saturate(x: np.ndarray, lo: int, hi: int):
    """(x clipped to [lo, hi], number of entries that were clipped)."""
    clipped = int(np.count_nonzero((x < lo) | (x > hi)))
    return (np.clip(x, lo, hi) if clipped else x), clipped


def int_matmul(a: np.ndarray, b: np.ndarray, b_max=None) -> np.ndarray:
    """Exact integer product a @ b (int64) via float64 BLAS.

    Exact whenever Σ|a||b| < 2^53 along every sum (checked): every partial sum is then an
    integer that float64 represents exactly, so no addition rounds, whatever the order
    of summation, on any CPU.  Falls back to numpy's integer product otherwise.
    b_max : a known bound on |b| (saves scanning b).
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if b_max is None:
        b_max = float(np.abs(b).max(initial=0))
    bound = float(np.abs(a).max(initial=0)) * float(b_max) * a.shape[-1]
    if bound < 2.0 ** 53:
        return (np.asarray(a, dtype=np.float64) @ np.asarray(b, dtype=np.float64)).astype(
            np.int64)
    return a.astype(np.int64) @ b.astype(np.int64)


def dense(weights: np.ndarray, weight_exp: int, s: np.ndarray) -> np.ndarray:
    """Lava's fixed_pt Dense: (s @ weightsᵀ) shifted by ``weight_exp`` (floor); int64.

    weights : (post, pre) integers already in Lava's format (a fixed point of its
    clip/truncate); s : (N, pre) integer payloads.  Raises if the accumulation
    leaves int32, where Lava's int32 Dense would wrap.
    """
    return dense_t(np.asarray(weights, dtype=np.float64).T, weight_exp, s)


def dense_t(weights_t: np.ndarray, weight_exp: int, s: np.ndarray) -> np.ndarray:
    """:func:`dense` with the weights given transposed, (pre, post) C-contiguous float64
    (integers): event-driven, only the rows of presynaptic neurons that sent a message."""
    s = np.asarray(s)
    sent = np.flatnonzero(s.any(axis=0))
    if s.shape[0] == 1 and sent.size * 256 * int(np.abs(s).max(initial=0)) < 2 ** 53:
        # One input: a plain weighted row sum (exact, integers < 2^53) is cheaper than a
        # BLAS call, whose threads may wait for a busy core.
        acc = (weights_t[sent] * s[0, sent, None]).sum(axis=0, dtype=np.float64)[None]
        acc = acc.astype(np.int64)
    elif (np.count_nonzero(s) <= SPARSE_DENSE * s.size and weights_t.dtype == np.float64
          and weights_t.flags.c_contiguous
          and 256.0 * float(np.abs(s).max(initial=0)) * sent.size < 2.0 ** 53):
        # Event-driven, one row of weights per nonzero payload (neurons.kernels.readout, as
        # the float reference's feedback): every partial sum is an integer below 2^53, so
        # float64 adds it exactly in any order.
        acc = np.empty((s.shape[0], weights_t.shape[1]))
        kernels.readout(np.ascontiguousarray(s, dtype=np.float64), weights_t, acc)
        acc = acc.astype(np.int64)
    elif sent.size < s.shape[1] // 2:
        acc = int_matmul(s[:, sent], weights_t[sent], b_max=256)
    else:
        acc = int_matmul(s, weights_t, b_max=256)  # Lava weights lie in [−256, 255]
    if acc.size and (acc.max() > np.iinfo(np.int32).max or acc.min() < np.iinfo(np.int32).min):
        raise OverflowError("a Dense accumulation left the int32 range (Lava's fixed_pt Dense "
                            "would wrap): reduce the count or input payload bits")
    return acc << weight_exp if weight_exp > 0 else acc >> -weight_exp


def input_payload(x, x_frac: int):
    """Inputs x (float) as Q.x_frac 24-bit payloads: (int64 array, number saturated).

    x·2^x_frac is exact in float64 and rounded half to even (IEEE): the same on any CPU."""
    X = np.rint(np.asarray(x, dtype=np.float64) * 2.0 ** x_frac).astype(np.int64)
    return saturate(X, PAYLOAD_MIN, PAYLOAD_MAX)


def drive(w_ff: np.ndarray, ff_exp: int, x_frac: int, x):
    """Constant drive Φᵀx/σ² (N, K) int64 Q.12 from the feed-forward weights (K, D) and x
    (N, D) float; and the numbers of saturated inputs and drives.  Accumulated in 64 bits
    (the input side runs on the host, as the float path's drive does)."""
    X, x_sat = input_payload(x, x_frac)
    acc = int_matmul(X, np.asarray(w_ff).T)
    shift = ff_exp - x_frac
    d = acc << shift if shift > 0 else acc >> -shift
    d, d_sat = saturate(d, PAYLOAD_MIN, PAYLOAD_MAX)
    return d, x_sat, d_sat


def soft_clamp(X: np.ndarray, C: int, softplus_lut: np.ndarray) -> np.ndarray:
    """Hard floor at −8, then C − softplus(C − X) (all Q.12, int64)."""
    X = np.maximum(X, U_FLOOR)
    s = C - X
    lo, hi = SOFTPLUS_LO << U_FRAC, SOFTPLUS_HI << U_FRAC
    idx = np.clip(s - lo, 0, hi - lo - 1)
    sp = lut_lookup(softplus_lut, idx, U_FRAC)
    sp = np.where(s < lo, 0, np.where(s >= hi, s, sp))
    return C - sp


def membrane(U: np.ndarray, current: np.ndarray, eta: int, bias: np.ndarray, clamp_u: int,
             clamp_du: int, softplus_lut: np.ndarray):
    """U_{t+1} = clamp(U + clamp((ETA·sat(A − B)) >> 12, C_du), C_u), and the number of
    saturated currents.  current : drive + feedback (Q.12, int64)."""
    A, clipped = saturate(current - bias, PAYLOAD_MIN, PAYLOAD_MAX)
    du = soft_clamp((eta * A) >> ETA_FRAC, clamp_du, softplus_lut)
    return soft_clamp(U + du, clamp_u, softplus_lut), clipped


def self_current(self_weights: np.ndarray, self_exp: int, z: np.ndarray) -> np.ndarray:
    """The self-term (diagonal of −ΦᵀΦ/σ²) with its own exponent: (S_k·z_k) shifted, floor."""
    acc = np.asarray(z, dtype=np.int64) * self_weights
    return acc << self_exp if self_exp > 0 else acc >> -self_exp


@dataclass(frozen=True, eq=False)
class EventDense:
    """A Lava fixed_pt Dense laid out for :meth:`FixedLatent.step`'s event-driven sums.

    rows : (pre, post) int16 C-contiguous (a presynaptic neuron's weights contiguous);
    exp : the Dense's weight exponent; max_abs : max |weight| (bounds the partial sums).
    """

    rows: np.ndarray
    exp: int
    max_abs: int

    @classmethod
    def from_weights(cls, weights: np.ndarray, weight_exp: int) -> "EventDense | None":
        """From Lava's (post, pre) integer weights; None when they do not fit int16."""
        w = np.asarray(weights)
        max_abs = int(np.abs(w.astype(np.int64)).max(initial=0))
        if max_abs > np.iinfo(np.int16).max:
            return None
        return cls(np.ascontiguousarray(w.T, dtype=np.int16), int(weight_exp), max_abs)


@dataclass(eq=False)
class FixedLatent:
    """The integer parameters of K latent neurons and their step (Q formats above).

    u0, bias : (K,) int64 Q.12; eta : Q.12; clamp_u, clamp_du : Q.12 ceilings;
    exp_lut, negexp_lut, softplus_lut : the tables (int64); self_weights (K,) and
    self_exp : the self-term (diagonal of −ΦᵀΦ/σ²) with its own exponent;
    count_bits : graded-spike payload of a count (saturates at 2^count_bits − 1).
    """

    u0: np.ndarray
    bias: np.ndarray
    eta: int
    clamp_u: int
    clamp_du: int
    exp_lut: np.ndarray
    negexp_lut: np.ndarray
    softplus_lut: np.ndarray
    self_weights: np.ndarray
    self_exp: int
    count_bits: int

    @classmethod
    def from_arrays(cls, arrays) -> "FixedLatent":
        """From a mapping holding the quantized file's arrays (``hardware.quantize``)."""
        ints = {key: np.asarray(arrays[key], dtype=np.int64)
                for key in ("u0", "bias", "exp_lut", "negexp_lut", "softplus_lut",
                            "self_weights")}
        return cls(**ints, **{key: int(arrays[key]) for key in
                              ("eta", "clamp_u", "clamp_du", "self_exp", "count_bits")})

    def fire(self, U: np.ndarray, keys: np.ndarray, t: int, first=None):
        """Counts as sent (int64 (N, K), saturated), rates R (Q.20), saturated-count number.

        keys : (N,) stream keys; first : optional explicit uniforms (see ``counts``)."""
        z, R = counts(U, keys, t, self.exp_lut, self.negexp_lut, first)
        z, clipped = saturate(z, 0, (1 << self.count_bits) - 1)
        return z, R, clipped

    def integrate(self, U: np.ndarray, feedback: np.ndarray, drive: np.ndarray, z: np.ndarray):
        """U_{t+1} (int64) from U_t, the Dense feedback of z_t (Q.12), the constant drive
        (Q.12) and z_t itself (for the self-term); and the saturated-current number."""
        current = drive + feedback + self_current(self.self_weights, self.self_exp, z)
        return membrane(U, current, self.eta, self.bias, self.clamp_u, self.clamp_du,
                        self.softplus_lut)

    def step(self, U, keys, t: int, first, drive, dense: EventDense, U_next, z, R, nnz, rate_sum,
             saturation) -> None:
        """:meth:`fire`, :func:`dense_t` and :meth:`integrate` of n rows in one compiled pass
        per row (``neurons/_fixed.c``, only where :func:`compiled`): the same integers.

        U (n, K) int64 Q.12; keys (n,) uint64; first : explicit uniforms (n, K) int64 or None;
        drive (n, K) int64 Q.12; dense : the recurrent weights.  Written: U_next (n, K), z
        (n, K) the counts as sent, R (n, K) Q.20 rates, nnz (n,) nonzero counts per row,
        rate_sum (n,) Σ_k R per row (all int64, C-contiguous); saturation (2,) int64 += the
        saturated counts and currents.  The Dense sums the weights of the nonzero counts
        only (K multiply-adds each); OverflowError where :func:`dense` raises it.
        """
        if _fixed is None:
            raise RuntimeError("neurons._fixed is not built: take fire, dense_t and integrate")
        _fixed.step(U, U_next, z, R, nnz, rate_sum, keys, first, drive, dense.rows,
                    self.self_weights, self.bias, self.exp_lut, self.negexp_lut,
                    self.softplus_lut, saturation, int(t), dense.exp, self.self_exp,
                    dense.max_abs, self.eta, self.clamp_u, self.clamp_du, self.count_bits)
