"""SubProcessModel of ``IPVAENet``: builds the children of either topology."""
from __future__ import annotations

import numpy as np
from lava.magma.core.decorator import implements, tag
from lava.magma.core.model.sub.model import AbstractSubProcessModel
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol
from lava.proc.dense.process import Dense

from neurons.lava.error_units.process import ErrorUnits
from neurons.lava.ipvae_net.process import STRIDES, IPVAENet
from neurons.lava.poisson_latent.process import PoissonLatent

COUNT_BITS = 8
"""Dense message bits for graded spike counts (any value > 0 passes them ungated)."""
VALUE_BITS = 24
"""Dense message bits for real-valued messages (inputs, errors)."""


def connect_outputs(latent, proc) -> None:
    """The latent's ports out to ``proc``'s, and ``u`` aliased.

    A ``state_out`` flagged as an external pipe (``proc.state_out.flag_external_pipe``)
    is not connected through: the latent's own port is flagged instead (Lava's runtime
    opens external pipes on leaf processes only) and ``proc.receive_state`` reads it, so
    the host receives the states without an Extractor process.
    """
    latent.s_out.connect(proc.s_out)
    latent.u_out.connect(proc.u_out)
    if proc.state_out.external_pipe_flag:
        latent.state_out.flag_external_pipe(proc.state_out.external_pipe_buffer_size)
        proc.state_pipe_port = latent.state_out
    else:
        latent.state_out.connect(proc.state_out)
    proc.vars.u.alias(latent.u)


@implements(proc=IPVAENet, protocol=LoihiProtocol)
@tag("floating_pt")
class SubIPVAENetModel(AbstractSubProcessModel):
    """Children: PoissonLatent + Dense(−ΦᵀΦ/σ²) [+ Dense(Φᵀ/σ²) from x_in] for ``folded``;
    PoissonLatent + Dense(Φ) + ErrorUnits + Dense(Φᵀ) for ``error-units``."""

    def __init__(self, proc):
        p = proc.proc_params
        if p["fixed"] is not None:
            raise ValueError("this IPVAENet holds a quantized network (fixed=): run it with "
                             "select_tag='fixed_pt'")
        topology, steps = p["topology"], p["steps"]
        phi, sigma2, bias = p["phi"], p["sigma2"], p["bias"]  # the weights: IPVAENetwork's
        stride = STRIDES[topology]
        period = stride * steps + 1
        inputs_path = p["inputs_path"]
        self.latent = PoissonLatent(  # drives_path: one drive Φᵀx/σ² per sample, or None
            u0=p["u0"], bias=bias, eta=p["eta"], clamp_u=p["clamp_u"],
            clamp_du=p["clamp_du"], steps=steps, stride=stride, seed=p["seed"],
            offset=p["offset"], noise_path=p["noise_path"], drives_path=p["drives_path"])
        if topology == "folded":
            self.recurrent = Dense(weights=p["recurrent"], num_message_bits=COUNT_BITS)
            self.latent.s_out.connect(self.recurrent.s_in)
            self.recurrent.a_out.connect(self.latent.a_in)
            if inputs_path is None:
                self.feedforward = Dense(weights=p["feedforward"], num_message_bits=VALUE_BITS)
                proc.x_in.connect(self.feedforward.s_in)
                self.feedforward.a_out.connect(self.latent.a_in)
        else:
            self.decoder = Dense(weights=phi, num_message_bits=COUNT_BITS)
            self.errors = ErrorUnits(sigma2=sigma2, period=period, inputs_path=inputs_path)
            self.encoder = Dense(weights=np.ascontiguousarray(phi.T), num_message_bits=VALUE_BITS)
            self.latent.s_out.connect(self.decoder.s_in)
            self.decoder.a_out.connect(self.errors.a_in)
            self.errors.e_out.connect(self.encoder.s_in)
            self.encoder.a_out.connect(self.latent.a_in)
            if inputs_path is None:
                proc.x_in.connect(self.errors.x_in)
        connect_outputs(self.latent, proc)


@implements(proc=IPVAENet, protocol=LoihiProtocol)
@tag("fixed_pt")
class SubIPVAENetModelFixed(AbstractSubProcessModel):
    """Children (folded topology, integers): the fixed_pt PoissonLatent + Lava's fixed_pt
    Dense of the off-diagonal −ΦᵀΦ/σ² [+ a fixed_pt Dense of Φᵀ/σ² from ``x_in``].

    The self-term is the latent's own (its own exponent, ``neurons.fixed``); the Dense
    weights are already in Lava's format, so its clip and truncation leave them as they
    are and the emulator's ``neurons.fixed.dense`` computes the same integers.
    """

    def __init__(self, proc):
        from lava.utils.weightutils import SignMode

        p = proc.proc_params
        fixed = p["fixed"]
        if fixed is None:
            raise ValueError("IPVAENet needs fixed= (a quantized network's arrays) to run "
                             "with select_tag='fixed_pt'")
        steps, inputs_path = p["steps"], p["inputs_path"]
        self.latent = PoissonLatent(
            u0=p["u0"], bias=p["bias"], eta=p["eta"], clamp_u=p["clamp_u"],
            clamp_du=p["clamp_du"], steps=steps, stride=1, seed=p["seed"],
            offset=p["offset"], noise_path=p["noise_path"], drives_path=p["drives_path"],
            fixed=fixed)
        bits = int(fixed["weight_bits"])
        self.recurrent = Dense(weights=np.asarray(fixed["w_rec"], dtype=np.int32),
                               weight_exp=int(fixed["rec_exp"]), num_weight_bits=bits,
                               sign_mode=SignMode.MIXED, num_message_bits=COUNT_BITS)
        self.latent.s_out.connect(self.recurrent.s_in)
        self.recurrent.a_out.connect(self.latent.a_in)
        if inputs_path is None:
            self.feedforward = Dense(
                weights=np.asarray(fixed["w_ff"], dtype=np.int32),
                weight_exp=int(fixed["ff_exp"]) - int(fixed["x_frac"]), num_weight_bits=bits,
                sign_mode=SignMode.MIXED, num_message_bits=VALUE_BITS)
            proc.x_in.connect(self.feedforward.s_in)
            self.feedforward.a_out.connect(self.latent.a_in)
        connect_outputs(self.latent, proc)
