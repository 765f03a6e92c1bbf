"""Interface of the prediction-error units (ports, Vars, equation; no behaviour).

D units compute, every Lava time step,

    e = (x − a) / σ²        (``neurons.poisson.prediction_error``)

where a is the reconstruction Φz received on ``a_in`` (from a Dense(Φ)), x the
input (the ``x`` Var plus whatever arrives on ``x_in``), σ² the decoder noise
variance per input dimension.  e is sent on ``e_out`` (to a Dense(Φᵀ) back to
the latent neurons).  The units are stateless: which steps' errors matter is
decided by the latent neurons' schedule (``PoissonLatent``, stride 2).

Input per sample: with ``inputs_path`` (an (N, D) ``.npy``) and ``period`` P,
x is row n = (s − 1) // P of the file at Lava time step s; otherwise x is the
``x`` Var (default zeros) plus ``x_in``.
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess, LogConfig
from lava.magma.core.process.variable import Var


class ErrorUnits(AbstractProcess):
    """D prediction-error units e = (x − Φz)/σ².

    Parameters
    ----------
    sigma2 : (D,) decoder noise variance σ² > 0 (input units squared).
    x : (D,) constant input (default zeros).
    inputs_path : optional ``.npy`` (N, D); row n is the input of sample n.
    period : Lava steps per sample (needed with ``inputs_path``).

    Ports
    -----
    a_in : InPort (D,) float, the prediction Φz.
    x_in : InPort (D,) float, input stream added to ``x`` (may stay unconnected).
    e_out : OutPort (D,) float64, the error e.

    Vars
    ----
    x, sigma2 : (D,) float64.
    """

    def __init__(self, *, sigma2, x=None, inputs_path: str | None = None,
                 period: int | None = None, name: str | None = None,
                 log_config: LogConfig | None = None):
        sigma2 = np.asarray(sigma2, dtype=np.float64).ravel()
        d = sigma2.size
        if not np.all(sigma2 > 0):
            raise ValueError("sigma2 must be positive")
        x = np.zeros(d) if x is None else np.broadcast_to(
            np.asarray(x, dtype=np.float64), (d,)).copy()
        if inputs_path is not None and (period is None or period < 1):
            raise ValueError("inputs_path needs period= (Lava steps per sample, >= 1)")
        super().__init__(shape=(d,), period=None if period is None else int(period),
                         inputs_path=None if inputs_path is None else str(inputs_path),
                         name=name, log_config=log_config)
        self.a_in = InPort(shape=(d,))
        self.x_in = InPort(shape=(d,))
        self.e_out = OutPort(shape=(d,))
        self.x = Var(shape=(d,), init=x)
        self.sigma2 = Var(shape=(d,), init=sigma2)
