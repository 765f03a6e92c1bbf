"""Interface of the Poisson latent neuron Process (ports, Vars, equations; no behaviour).

Each of the K neurons holds a membrane potential u (a log-rate, in nats of
spikes per inference step).  One inference step t (design §1.1):

    z_t     = F⁻¹_Poisson(ξ_t; e^{u_t})                         # graded spike count, ≥ 0
    u_{t+1} = clamp(u_t + clamp(η · (a_t + drive − b), c_du), c_u)

where a_t is the feedback current received on ``a_in`` for the counts z_t
(Φᵀe_t, or drive-free lateral input −ΦᵀΦ z_t/σ²), ``drive`` a constant input
current, b > 0 the bias/leak, and ``clamp(x, c)`` a hard floor at −8 followed
by the soft ceiling c − softplus(c − x).  The step is computed by the shared
pure functions ``neurons.poisson.poisson_icdf`` and
``neurons.poisson.membrane_update``, the same ones the reference simulator runs.

Schedule (Lava time steps s = 1, 2, …; ``stride`` Lava steps per inference step):
with ``steps = T`` the neurons run samples of period P = stride·T + 1 Lava
steps; sample n = (s − 1) // P, local step j = (s − 1) % P.

- j = 0: u ← u₀, the noise stream restarts for the sample, ``a_in`` is ignored
  (it holds the previous sample's activity: this is the reset of every
  upstream buffer, e.g. a Dense's accumulation buffer);
- j = stride·t, 0 < t ≤ T: integrate ``a_in`` (the feedback of z_{t−1}) into u_t;
- j = stride·t, t < T: fire z_t from u_t; at all other local steps send zeros
  (stride 2 lets a two-synapse loop, latent → Dense → error units → Dense →
  latent, deliver its feedback exactly in time; the last local step j = stride·T
  only integrates u_T);
- ``u_out`` sends u every Lava step (u_t at j = stride·t);
- ``state_out`` sends both in one message, [z, u] (2K,) float64, when connected
  (a reader that wants counts and potentials needs one channel and one
  Extractor instead of two: Lava's cost per step grows with its channels and
  processes).

With ``steps=None`` the neurons run one endless sample (u₀ at s = 1).

Noise: ξ_t (K uniforms in [0, 1)) for sample n comes from
``numpy.random.Generator(numpy.random.Philox(key=[seed, offset + n]))`` drawn
K at a time in (t, k) order, the shared stream of design §2.2
(``networks.noise.sample_stream``), or from an explicit (T, N, K) ``.npy``
file given as ``noise_path`` (memory-mapped; ξ[t, n]).
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess, LogConfig
from lava.magma.core.process.variable import Var


class PoissonLatent(AbstractProcess):
    """K Poisson latent neurons with a log-rate membrane potential.

    Parameters
    ----------
    u0 : (K,) initial potentials (log-rates), also the reset value of each sample.
    bias : (K,) leak b > 0 (per step, log-rate units).
    eta : scalar step size η (dimensionless).
    clamp_u, clamp_du : soft ceilings of u and of du (log-rate units).
    drive : (K,) constant input current added to ``a_in`` (default zeros).
    steps : T inference steps per sample, or None for one endless sample.
    stride : Lava steps per inference step (1: folded loop, 2: error-unit loop).
    seed, offset : the shared noise streams, keyed (seed, offset + sample).
    noise_path : optional ``.npy`` of uniforms ξ (T, N, K) replacing the streams.
    drives_path : optional ``.npy`` (N, K); row n replaces ``drive`` at sample n's start.
    fixed : for the ``fixed_pt`` model, the integer parameters (a mapping with the
        arrays of a ``hardware.quantize`` file; ``neurons.fixed.FixedLatent.from_arrays``);
        its ``drives_path`` then holds Q.12 integers and ``a_in`` the integer feedback.

    Ports
    -----
    a_in : InPort (K,) float, the feedback current (summed over connections).
    s_out : OutPort (K,) int32, graded spike counts (0 on silent steps).
    u_out : OutPort (K,) float64, the membrane potential of this Lava step.
    state_out : OutPort (2K,) float64, [s_out, u_out] of this Lava step in one message
        (sent only when connected).

    Vars
    ----
    u, u0, drive, bias : (K,) float64; eta, clamp_u, clamp_du : (1,) float64.
    In the ``fixed_pt`` model ``u`` holds the integer U = u·2^12 and ``u_out``
    sends it (and ``state_out`` its second half); the float Vars are unused there.
    """

    def __init__(self, *, u0, bias, eta, clamp_u: float = 8.0, clamp_du: float = 7.0,
                 drive=None, steps: int | None = None, stride: int = 1, seed: int = 0,
                 offset: int = 0, noise_path: str | None = None,
                 drives_path: str | None = None, fixed=None, name: str | None = None,
                 log_config: LogConfig | None = None):
        u0 = np.asarray(u0, dtype=np.float64).ravel()
        k = u0.size
        bias = np.broadcast_to(np.asarray(bias, dtype=np.float64), (k,)).copy()
        drive = np.zeros(k) if drive is None else \
            np.broadcast_to(np.asarray(drive, dtype=np.float64), (k,)).copy()
        if steps is not None and (int(steps) != steps or steps < 0):
            raise ValueError(f"steps must be a non-negative integer or None, got {steps!r}")
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride!r}")
        if seed < 0 or offset < 0:
            raise ValueError("seed and offset must be non-negative")
        if noise_path is not None and steps is None:
            raise ValueError("an explicit noise file needs steps= (its first axis)")
        super().__init__(shape=(k,), steps=None if steps is None else int(steps),
                         stride=int(stride), seed=int(seed), offset=int(offset),
                         noise_path=None if noise_path is None else str(noise_path),
                         drives_path=None if drives_path is None else str(drives_path),
                         fixed=None if fixed is None else dict(fixed),
                         name=name, log_config=log_config)
        self.a_in = InPort(shape=(k,))
        self.s_out = OutPort(shape=(k,))
        self.u_out = OutPort(shape=(k,))
        self.state_out = OutPort(shape=(2 * k,))
        self.u = Var(shape=(k,), init=u0.copy())
        self.u0 = Var(shape=(k,), init=u0.copy())
        self.drive = Var(shape=(k,), init=drive)
        self.bias = Var(shape=(k,), init=bias)
        self.eta = Var(shape=(1,), init=float(eta))
        self.clamp_u = Var(shape=(1,), init=float(clamp_u))
        self.clamp_du = Var(shape=(1,), init=float(clamp_du))

    @property
    def period(self) -> int | None:
        """Lava steps per sample (stride·T + 1), or None for an endless sample."""
        steps = self.proc_params["steps"]
        return None if steps is None else self.proc_params["stride"] * steps + 1
