"""An event-driven floating_pt ProcessModel of Lava's own ``Dense`` Process.

Lava's ``PyDenseModelFloat`` computes every synapse every step (a K_post × K_pre
product).  The iP-VAE's recurrent Dense carries graded spike counts of which a few
percent are nonzero (design §1.1), so a neuromorphic core, and this model, adds one
row of weights per presynaptic neuron that fired, scaled by its count:
K_post multiply-adds per nonzero count (``neurons.kernels.readout``), with the dense
product where more than ``DENSE_SHARE`` of the inputs are nonzero.  Same Process, same
ports and Vars, same timing (``a_out`` sends the accumulation of the previous step,
then ``s_in`` is accumulated), the same sums to rounding.

Select it in a run config: ``Loihi2SimCfg(select_tag="floating_pt",
exception_proc_model_map={Dense: PyDenseEventModelFloat})`` (``simulate(backend=
"lava")`` does).  It keeps the weights transposed (presynaptic rows, contiguous);
the ``weights`` Var stays the (K_post, K_pre) matrix, as a view of them.
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.dense.models import AbstractPyDenseModelFloat
from lava.proc.dense.process import Dense

from neurons import kernels
from neurons.lava import DENSE_SHARE



def transpose_in_place(a: np.ndarray, block: int = 64) -> np.ndarray:
    """Transpose the square array ``a`` in its own buffer, ``block`` × ``block`` tiles at
    a time (the only extra memory is one tile); returns ``a``."""
    n = a.shape[0]
    for i in range(0, n, block):
        ii = slice(i, i + block)
        a[ii, ii] = a[ii, ii].T.copy()
        for j in range(i + block, n, block):
            jj = slice(j, j + block)
            upper = a[ii, jj].copy()
            a[ii, jj] = a[jj, ii].T
            a[jj, ii] = upper.T
    return a


@implements(proc=Dense, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyDenseEventModelFloat(AbstractPyDenseModelFloat):
    """float64 Dense whose cost follows the nonzero inputs (graded or binary spikes)."""

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self._rows = None   # (K_pre, K_post): weights.T, C-contiguous
        self._events = None  # (1, K_pre) float64: this step's inputs
        self._out = None     # (1, K_post) float64

    def _transpose_weights(self) -> None:
        # Vars are set after __init__, so this runs at the first step.  The weights Var
        # becomes a view of the transposed rows: a square matrix is transposed in its own
        # buffer (no second K² copy, even for a moment), any other is copied once.
        w = self.weights
        if w.ndim == 2 and w.shape[0] == w.shape[1] and w.flags.c_contiguous \
                and w.dtype == np.float64:
            self._rows = transpose_in_place(w)
        else:
            self._rows = np.ascontiguousarray(w.T, dtype=np.float64)
        self.weights = self._rows.T
        self._events = np.zeros((1, self._rows.shape[0]))

    def run_spk(self):
        if self._rows is None:
            self._transpose_weights()
        self.a_out.send(self.a_buff)
        s_in = self.s_in.recv()
        if self.num_message_bits.item() == 0:
            s_in = s_in.astype(bool)
        events = self._events
        events[0] = s_in
        if np.count_nonzero(s_in) > DENSE_SHARE * s_in.size:
            self.a_buff = self.weights.dot(events[0])
        else:
            out = np.empty((1, self._rows.shape[1]))
            kernels.readout(events, self._rows, out)
            self.a_buff = out[0]
