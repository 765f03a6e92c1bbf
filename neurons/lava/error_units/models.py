"""ProcessModels of ``ErrorUnits``: ``floating_pt`` (float64) on CPU."""
from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

from neurons.lava.error_units.process import ErrorUnits
from neurons.lava.failures import reporting
from neurons.poisson import prediction_error


@implements(proc=ErrorUnits, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyErrorUnitsModelFloat(PyLoihiProcessModel):
    """float64 error units: e = (x − a)/σ² every Lava step."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    x_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    e_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    x: np.ndarray = LavaPyType(np.ndarray, float)
    sigma2: np.ndarray = LavaPyType(np.ndarray, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        p = self.proc_params
        self._period = p["period"]
        self._inputs = None if p["inputs_path"] is None else np.load(p["inputs_path"],
                                                                     mmap_mode="r")
        self._sample = -1

    @reporting
    def run_spk(self) -> None:
        a = self.a_in.recv()
        x_stream = self.x_in.recv()
        if self._inputs is not None:
            n = (self.time_step - 1) // self._period
            if n != self._sample:
                self._sample = n
                self.x = np.array(self._inputs[n], dtype=np.float64)
        self.e_out.send(prediction_error(self.x + x_stream, a, self.sigma2))
