"""ProcessModels of ``PoissonLatent``: ``floating_pt`` (float64) on CPU.

The bit-accurate ``fixed_pt`` model will sit beside it (a later issue).  The
step itself is ``neurons.poisson.poisson_icdf`` and
``neurons.poisson.membrane_update``, shared with every other backend (run by their
compiled transcription in ``neurons.kernels``, as the reference runs them: the same
numbers as the reference, numpy's counts and its potentials to rounding).
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from neurons.lava.failures import fail_at_step, reporting
from neurons.lava.poisson_latent.process import PoissonLatent
from neurons import kernels
from neurons.noise import sample_stream


@implements(proc=PoissonLatent, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyPoissonLatentModelFloat(PyLoihiProcessModel):
    """float64 PoissonLatent: integrate, then fire, on the schedule of ``process.py``."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    u_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    u: np.ndarray = LavaPyType(np.ndarray, float)
    u0: np.ndarray = LavaPyType(np.ndarray, float)
    drive: np.ndarray = LavaPyType(np.ndarray, float)
    bias: np.ndarray = LavaPyType(np.ndarray, float)
    eta: np.ndarray = LavaPyType(np.ndarray, float)
    clamp_u: np.ndarray = LavaPyType(np.ndarray, float)
    clamp_du: np.ndarray = LavaPyType(np.ndarray, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = self.proc_params
        self._k = p["shape"][0]
        self._steps = p["steps"]
        self._stride = p["stride"]
        self._period = None if self._steps is None else self._stride * self._steps + 1
        self._seed, self._offset = p["seed"], p["offset"]
        self._noise = None if p["noise_path"] is None else np.load(p["noise_path"], mmap_mode="r")
        self._drives = None if p["drives_path"] is None else np.load(p["drives_path"],
                                                                     mmap_mode="r")
        self._fail_at = fail_at_step()
        self._stream = None
        self._sample = -1
        self._zeros = np.zeros(self._k, dtype=np.int32)

    def _start_sample(self, n: int) -> None:
        """Reset for sample n: u ← u₀, its noise stream, its drive row."""
        self._sample = n
        self.u = self.u0.copy()
        if self._noise is None:
            self._stream = sample_stream(self._seed, self._offset + n)
        if self._drives is not None:
            self.drive = np.array(self._drives[n], dtype=np.float64)

    def _uniforms(self, t: int) -> np.ndarray:
        """ξ_t (K,) of the current sample."""
        if self._noise is not None:
            return np.asarray(self._noise[t, self._sample], dtype=np.float64)
        return self._stream.random(self._k)

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
        if j == 0:
            self._start_sample(n)
        elif j % self._stride == 0:
            u_next = np.empty_like(self.u)
            kernels.membrane(self.u, np.ascontiguousarray(a_in + self.drive, dtype=np.float64),
                             self.eta.item(), self.bias, self.clamp_u.item(),
                             self.clamp_du.item(), u_next)
            self.u = u_next
        self.u_out.send(self.u)
        if j % self._stride == 0 and (self._steps is None or j < self._stride * self._steps):
            rate, counts = np.empty_like(self.u), np.empty_like(self.u)
            kernels.spikes(self.u, np.ascontiguousarray(self._uniforms(j // self._stride),
                                                        dtype=np.float64), rate, counts)
            self.s_out.send(counts.astype(np.int32))
        else:
            self.s_out.send(self._zeros)
