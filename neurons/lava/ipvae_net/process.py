"""Interface of the hierarchical iP-VAE Process (ports, Vars; children in ``models.py``).

``IPVAENet(net, steps=T, topology=..., seed=...)`` wraps an ``IPVAENetwork`` so
that a Lava user can drop it into a graph: connect a source (e.g. a
``RingBuffer`` holding x) to ``x_in`` and read ``s_out`` (graded spike counts)
and ``u_out`` (membrane potentials) with an ``Extractor`` or ``Monitor``.

Topologies (both compute the recurrence of design §1.1 and, under the same
noise, the reference simulator's raster):

- ``folded`` (the Loihi form): x_in → Dense(Φᵀ/σ²) → latent; latent →
  Dense(−ΦᵀΦ/σ²) → latent; bias b in the latent.  Dense delivers one step
  later, which is exactly the recurrence: 1 Lava step per inference step
  (stride 1), period P = T + 1.
- ``error-units``: latent → Dense(Φ) → ErrorUnits (x_in → ErrorUnits directly)
  → Dense(Φᵀ) → latent.  The loop returns the feedback of z_t two Lava steps
  after z_t is sent.  Schedule (stride 2): the latent fires on even local steps
  j = 2t, sends zeros on odd steps, and integrates on the next even step
  j = 2t + 2 the error computed from z_t at j = 2t + 1; its inputs at odd steps
  (errors of the zero spikes) are ignored.  So u advances once per completed
  loop, 2 Lava steps per inference step, period P = 2T + 1.

Timing seen from outside (local step j = (s − 1) % P of Lava step s, sample
n = (s − 1) // P): spikes z_t appear on ``s_out`` at j = stride·t (t < T;
zeros elsewhere), u_t on ``u_out`` at j = stride·t (t ≤ T).  ``spike_steps``
and ``u_steps`` are these local indices.  x must be constant within a sample
and the sample's x must arrive from its local step 0 on (folded) or 1 on
(error-units); a ``RingBuffer(data=x[:, None])`` does it for one input.

Instead of ``x_in``, ``inputs_path`` (an (N, D) ``.npy``, row n = sample n)
feeds the inputs from a file (the backend's fast path: the folded drive
Φᵀx/σ² is then computed once per sample, not by a Dense every step: the
Process writes the drives (N, K) beside the file as ``<inputs_path>.drives.npy``,
``.fixed-drives.npy`` for ``fixed_pt``, and its latent reads them); ``x_in`` is then
left unconnected inside.

Two SubProcessModels: ``floating_pt`` (run with ``Loihi2SimCfg(select_tag=
"floating_pt", select_sub_proc_model=True)``) and ``fixed_pt`` (``select_tag=
"fixed_pt"``; folded topology only): give ``fixed=`` the arrays of a quantized
network (``hardware.quantize``; e.g. ``dict(np.load(path))``); the children are
then the bit-accurate latent, Lava's fixed_pt Dense of the off-diagonal
recurrent weights (their exponent and bits) and, from ``x_in`` (Q.12 integer
payloads), a fixed_pt Dense of the feed-forward weights; ``u`` and ``u_out`` hold
U = u·2^12.
"""
from __future__ import annotations

import numpy as np
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess, LogConfig
from lava.magma.core.process.variable import Var

from neurons.lava import STRIDES, TOPOLOGIES


class IPVAENet(AbstractProcess):
    """A whole iP-VAE network (K latents, D inputs) as one hierarchical Process.

    Parameters
    ----------
    net : ``networks.network.IPVAENetwork`` (its arrays are copied into the Process).
    steps : T inference steps per sample.
    topology : ``"folded"`` or ``"error-units"``.
    seed, offset : shared noise streams (seed, offset + n) for sample n.
    noise_path : optional ``.npy`` of uniforms ξ (T, N, K) replacing the streams.
    inputs_path : optional ``.npy`` (N, D) inputs instead of the ``x_in`` port.
    fixed : optional mapping of a quantized network's arrays (for ``fixed_pt``).

    Ports
    -----
    x_in : InPort (D,), the input x (constant within a sample).
    s_out : OutPort (K,), graded spike counts per Lava step (int32 payloads).
    u_out : OutPort (K,), membrane potentials per Lava step (float64).
    state_out : OutPort (2K,), [s_out, u_out] of each Lava step in one float64 message;
        flagged as an external pipe (``state_out.flag_external_pipe``), read by the host
        with :meth:`receive_state` (no Extractor process).

    Vars
    ----
    u : (K,) alias of the latent neurons' membrane potential.
    """

    def __init__(self, net, *, steps: int, topology: str = "folded", seed: int = 0,
                 offset: int = 0, noise_path: str | None = None,
                 inputs_path: str | None = None, fixed=None, name: str | None = None,
                 log_config: LogConfig | None = None):
        if topology not in TOPOLOGIES:
            raise ValueError(f"unknown topology {topology!r}; expected one of "
                             f"{', '.join(TOPOLOGIES)}")
        if int(steps) != steps or steps < 0:
            raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
        d, k = net.input_dim, net.n_latents
        folded = topology == "folded"
        drives = drives_path = None
        if fixed is not None:
            from neurons import fixed as fx

            if not folded:
                raise ValueError("the fixed-point network has the folded topology only")
            fixed = {key: np.asarray(value) for key, value in dict(fixed).items()
                     if not key.startswith("float_") and key != "report"}
            if inputs_path is not None:
                drives = fx.drive(fixed["w_ff"], int(fixed["ff_exp"]), int(fixed["x_frac"]),
                                  np.load(inputs_path, mmap_mode="r"))[0]
                drives_path = str(inputs_path) + ".fixed-drives.npy"
        elif inputs_path is not None and folded:
            drives = net.drive(np.load(inputs_path, mmap_mode="r"))
            drives_path = str(inputs_path) + ".drives.npy"
        if drives_path is not None:  # one constant drive per sample, read by the latent
            np.save(drives_path, drives)
        # only the weights the chosen children use (the Dense children copy them again)
        floating = fixed is None
        super().__init__(
            topology=topology, steps=int(steps), seed=int(seed), offset=int(offset),
            noise_path=None if noise_path is None else str(noise_path),
            inputs_path=None if inputs_path is None else str(inputs_path),
            drives_path=drives_path, fixed=fixed,
            phi=None if folded else np.array(net.phi, dtype=np.float64),
            sigma2=None if folded else np.array(net.sigma2, dtype=np.float64),
            feedforward=(net.feedforward_weights()
                         if folded and floating and inputs_path is None else None),
            recurrent=net.recurrent_weights() if folded and floating else None,
            bias=np.array(net.bias, dtype=np.float64), eta=float(net.eta),
            u0=np.array(net.u0, dtype=np.float64), clamp_u=float(net.clamp_u),
            clamp_du=float(net.clamp_du), name=name, log_config=log_config)
        self.x_in = InPort(shape=(d,))
        self.s_out = OutPort(shape=(k,))
        self.u_out = OutPort(shape=(k,))
        self.state_out = OutPort(shape=(2 * k,))
        self.u = Var(shape=(k,), init=np.array(net.u0, dtype=np.float64))
        self.state_pipe_port = None  # the latent's state_out, once flagged and compiled

    def receive_state(self) -> np.ndarray:
        """The next [z, u] (2K,) float64 message of ``state_out`` flagged as an external pipe.

        ``net.state_out.flag_external_pipe(buffer_size)`` before the run makes the host
        read the states itself (no Extractor process); call this once per Lava step while
        the run goes on (non-blocking ``RunSteps``), as with ``Extractor.receive``.
        """
        port = self.state_pipe_port
        if port is None or getattr(port, "external_pipe_csp_recv_port", None) is None:
            raise RuntimeError("receive_state needs state_out.flag_external_pipe() before "
                               "the run, and a running network")
        return port.external_pipe_csp_recv_port.recv()

    @property
    def stride(self) -> int:
        """Lava steps per inference step (1 folded, 2 error-units)."""
        return STRIDES[self.proc_params["topology"]]

    @property
    def period(self) -> int:
        """Lava steps per sample: stride·T + 1."""
        return self.stride * self.proc_params["steps"] + 1

    @property
    def spike_steps(self) -> slice:
        """Local steps (within a period) whose ``s_out`` holds z_0 … z_{T−1}."""
        return slice(0, self.stride * self.proc_params["steps"], self.stride)

    @property
    def u_steps(self) -> slice:
        """Local steps (within a period) whose ``u_out`` holds u_0 … u_T."""
        return slice(0, self.period, self.stride)
