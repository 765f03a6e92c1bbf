"""ProcessModels of ``PoissonLatent``, laid out as Lava lays out LIF.

``AbstractPyPoissonLatentModel`` holds what every number system shares: the
per-step schedule of ``process.py`` (samples, strides, resets, which Lava steps
fire and which integrate, what is sent on each port).  A concrete model adds
only its arithmetic: ``start_sample`` (u ← u₀), ``integrate`` (the membrane
step) and ``fire`` (the spike counts), as Lava's ``AbstractPyLifModelFloat`` /
``AbstractPyLifModelFixed`` share ``run_spk`` and differ in ``subthr_dynamics``.

- ``PyPoissonLatentModelFloat`` (``floating_pt``): float64, the step of
  ``neurons.poisson`` run by its compiled transcription ``neurons.kernels``, as
  the reference runs it (the reference's counts, its potentials to rounding).
- ``PyPoissonLatentModelFixed`` (``fixed_pt``): integers only, the step of
  ``neurons.fixed`` (the one the integer emulator runs), with the quantized
  parameters of a ``hardware.quantize`` file passed as the Process's ``fixed``.
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from neurons import kernels
from neurons.lava.failures import fail_at_step, reporting
from neurons.lava.poisson_latent.process import PoissonLatent
from neurons.noise import sample_stream


class AbstractPyPoissonLatentModel(PyLoihiProcessModel):
    """The schedule of ``process.py``; subclasses supply the arithmetic.

    Subclasses define the ports' and Vars' types and implement
    :meth:`start_sample`, :meth:`integrate` and :meth:`fire`.
    """

    a_in = None       # PyInPort, typed by the subclass
    s_out = None      # PyOutPort of graded counts
    u_out = None      # PyOutPort of potentials
    state_out = None  # PyOutPort (2K,) float64: counts and potentials in one message

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = self.proc_params
        self._k = p["shape"][0]
        self._steps = p["steps"]
        self._stride = p["stride"]
        self._period = None if self._steps is None else self._stride * self._steps + 1
        self._fire_until = None if self._steps is None else self._stride * self._steps
        self._seed, self._offset = p["seed"], p["offset"]
        self._noise = None if p["noise_path"] is None else np.load(p["noise_path"], mmap_mode="r")
        self._drives = None if p["drives_path"] is None else np.load(p["drives_path"],
                                                                     mmap_mode="r")
        self._fail_at = fail_at_step()
        self._sample = -1
        self._zeros = np.zeros(self._k, dtype=np.int32)
        self._state = np.zeros(2 * self._k)  # the state_out message, reused every step

    # --- the arithmetic (subclasses) ---

    def start_sample(self, n: int) -> None:
        """Reset the state for sample n (u ← u₀, its noise, its drive row)."""
        raise NotImplementedError("start_sample() cannot be called on an abstract ProcessModel")

    def integrate(self, a_in: np.ndarray) -> None:
        """u_t ← the membrane step from u_{t−1} and the feedback current a_in (K,)."""
        raise NotImplementedError("integrate() cannot be called on an abstract ProcessModel")

    def fire(self, t: int) -> np.ndarray:
        """The counts z_t (K,) of inference step t from u_t: integers, in any numeric
        dtype (the ports' channels cast them to their int32 payloads)."""
        raise NotImplementedError("fire() cannot be called on an abstract ProcessModel")

    # --- the schedule (shared) ---

    @reporting
    def run_spk(self) -> None:
        s = self.time_step
        if self._fail_at is not None and s >= self._fail_at:
            raise RuntimeError(f"forced failure at Lava time step {s} "
                               f"(test hook IPVAE_LAVA_FAIL_AT={self._fail_at})")
        a_in = self.a_in.recv()
        if self._period is None:
            n, j = 0, s - 1
        else:
            n, j = divmod(s - 1, self._period)
        t, rest = divmod(j, self._stride)
        if j == 0:
            self._sample = n
            self.start_sample(n)
        elif rest == 0:
            self.integrate(a_in)
        if rest == 0 and (self._fire_until is None or j < self._fire_until):
            z = self.fire(t)
        else:
            z = self._zeros
        self.s_out.send(z)
        if self.u_out.csp_ports:
            self.u_out.send(self.u)
        if self.state_out.csp_ports:  # connected: one message of [z, u] for a reader
            state = self._state
            state[:self._k] = z
            state[self._k:] = self.u
            self.state_out.send(state)


@implements(proc=PoissonLatent, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyPoissonLatentModelFloat(AbstractPyPoissonLatentModel):
    """float64 PoissonLatent: the arithmetic of ``neurons.poisson`` (via ``neurons.kernels``)."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    u_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    state_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    u: np.ndarray = LavaPyType(np.ndarray, float)
    u0: np.ndarray = LavaPyType(np.ndarray, float)
    drive: np.ndarray = LavaPyType(np.ndarray, float)
    bias: np.ndarray = LavaPyType(np.ndarray, float)
    eta: np.ndarray = LavaPyType(np.ndarray, float)
    clamp_u: np.ndarray = LavaPyType(np.ndarray, float)
    clamp_du: np.ndarray = LavaPyType(np.ndarray, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._stream = None
        k = self._k
        # Work arrays (K,) float64, reused every step: no allocation in run_spk.
        self._feedback = np.empty(k)
        self._u_next = np.empty(k)
        self._xi = np.empty(k)
        self._rate = np.empty(k)
        self._counts = np.empty(k)

    def start_sample(self, n: int) -> None:
        self.u = np.array(self.u0, dtype=np.float64)
        if self._noise is None:
            self._stream = sample_stream(self._seed, self._offset + n)
        if self._drives is not None:
            self.drive = np.array(self._drives[n], dtype=np.float64)

    def integrate(self, a_in: np.ndarray) -> None:
        np.add(a_in, self.drive, out=self._feedback)
        u_next = self._u_next
        kernels.membrane(self.u, self._feedback, self.eta.item(), self.bias,
                         self.clamp_u.item(), self.clamp_du.item(), u_next)
        # Swap the two buffers: u_t becomes the next step's output buffer.
        self._u_next, self.u = self.u, u_next

    def fire(self, t: int) -> np.ndarray:
        if self._noise is not None:
            xi = np.ascontiguousarray(self._noise[t, self._sample], dtype=np.float64)
        else:
            xi = self._stream.random(out=self._xi)
        kernels.spikes(self.u, xi, self._rate, self._counts)
        return self._counts  # float64 integers; s_out's channel carries int32


@implements(proc=PoissonLatent, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyPoissonLatentModelFixed(AbstractPyPoissonLatentModel):
    """Bit-accurate PoissonLatent: the integer step of ``neurons.fixed`` (Q formats there).

    The parameters come from the Process's ``fixed`` mapping; ``a_in`` carries the
    off-diagonal Dense's integer feedback, the self-term is the neuron's own (its
    last counts times its own weight), ``drives_path`` holds the Q.12 drives.
    """

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    u_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    state_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    u: np.ndarray = LavaPyType(np.ndarray, np.int32, precision=24)
    u0: np.ndarray = LavaPyType(np.ndarray, float)
    drive: np.ndarray = LavaPyType(np.ndarray, float)
    bias: np.ndarray = LavaPyType(np.ndarray, float)
    eta: np.ndarray = LavaPyType(np.ndarray, float)
    clamp_u: np.ndarray = LavaPyType(np.ndarray, float)
    clamp_du: np.ndarray = LavaPyType(np.ndarray, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        from neurons import fixed

        if self.proc_params["fixed"] is None:
            raise ValueError("the fixed_pt PoissonLatent model needs the Process's fixed= "
                             "parameters (a quantized network)")
        self._fixed = fixed
        self._latent = fixed.FixedLatent.from_arrays(self.proc_params["fixed"])
        self._keys = None
        self._drive_int = np.zeros((1, self._k), dtype=np.int64)
        self._z = np.zeros((1, self._k), dtype=np.int64)

    def start_sample(self, n: int) -> None:
        self.u = self._latent.u0.astype(np.int32)
        self._keys = self._fixed.stream_keys(self._seed, [self._offset + n])
        if self._drives is not None:
            self._drive_int = np.asarray(self._drives[n], dtype=np.int64)[None]
        self._z = np.zeros((1, self._k), dtype=np.int64)

    def integrate(self, a_in: np.ndarray) -> None:
        U, _ = self._latent.integrate(self.u.astype(np.int64)[None],
                                      np.asarray(a_in, dtype=np.int64)[None],
                                      self._drive_int, self._z)
        self.u = U[0].astype(np.int32)

    def fire(self, t: int) -> np.ndarray:
        first = None
        if self._noise is not None:
            first = self._fixed.explicit_uniforms(self._noise[t, self._sample])[None]
        z, _, _ = self._latent.fire(self.u.astype(np.int64)[None], self._keys, t, first)
        self._z = z
        return z[0].astype(np.int32)
