"""The iP-VAE latent neuron as an snntorch neuron (design §1.1)."""
from __future__ import annotations

import torch
from snntorch import SpikingNeuron

from neurons.relaxed import DEFAULT_WIDTH, RelaxedPoisson, noise_source, width_needed
from neurons.torch_step import KL_FORMS, Integrate, LatentStep, poisson_counts

__all__ = ["PoissonLatent", "DEFAULT_WIDTH", "width_needed"]


class PoissonLatent(SpikingNeuron):
    """K Poisson latent neurons of the iterative Poisson VAE.

    The membrane potential is a log-rate u; the input current is the decoder
    feedback Φᵀe_t (e_t = (x − Φz_t)/σ²), integrated with step size η against
    a leak b and clamped (design §1.1, §1.2):

    .. math::

            U[t+1] = {\\rm clamp}_u\\big(U[t] + {\\rm clamp}_{du}(η (I_{\\rm in}[t] − b))\\big)

            S[t+1] \\sim {\\rm Poisson}(e^{U[t+1]})

    * :math:`I_{\\rm in}` - feedback current Φᵀe
    * :math:`U` - membrane potential (log-rate; e^U spikes per step)
    * :math:`S` - spike *count* (an integer ≥ 0, not a 0/1 spike)
    * :math:`η = e^{\\log η}`, :math:`b = e^{\\log b}` - step size and leak
    * clamp_c(x) = c − softplus(c − max(x, −8)) - hard floor, soft ceiling c

    At ``temperature == 0`` the count is exact (the shared float64 inverse CDF
    ``neurons.poisson.poisson_icdf``: the same uniforms give exactly the reference
    simulator's counts); at ``temperature > 0`` it is a relaxed, differentiable
    count (``neurons.relaxed``; training).  The hidden state resets to the
    learned prior u₀, not to zero.  The membrane update and the spikes are
    computed by ``neurons.torch_step`` (hand-written local derivatives), the
    same code the trainer's fused unroll runs.

    Example::

        >>> import torch
        >>> from neurons.snntorch import PoissonLatent
        >>> lat = PoissonLatent(4, temperature=0.0)     # exact integer counts
        >>> mem = lat.reset_mem(2)                       # (2, 4): u₀ for 2 inputs
        >>> feedback = torch.zeros(2, 4)                 # Φᵀ e from the decoder
        >>> for _ in range(3):
        ...     spk, mem = lat(feedback, mem)
        >>> spk.shape, bool((spk == spk.round()).all())
        (torch.Size([2, 4]), True)

    :param n_latents: K, the number of neurons.
    :param log_bias: initial log leak, scalar or (K,) (authors: −3).
    :param log_eta: initial log step size (authors: 0).
    :param u0: (K,) prior potentials; default U(−6, −4) drawn with ``generator``.
    :param clamp_u, clamp_du: soft ceilings of u and du (a trainer may change them).
    :param temperature: 0 → exact counts; > 0 → relaxed counts.
    :param width: relaxed-sampler width W.  :param tail: add the beyond-W tail term.
    :param init_hidden, output: snntorch conventions (state kept on the module).
    :param learn: make log_bias, log_eta, u0 ``nn.Parameter`` (else buffers).

    Inputs: input_, mem, noise
        - **input_** (N, K): the feedback current.
        - **mem** (N, K): the potential u_t (omit with ``init_hidden=True``).
        - **noise**: temperature 0: uniforms ξ (N, K) in [0, 1); temperature > 0:
          a pair (E (N, K, W) standard exponentials, g (N, K) standard normals or
          None) or a noise source of width W (``train.noise.KeyedNoise``);
          None draws from torch's global generator.

    Outputs: spk, mem
        - **spk** (N, K): spike counts z_{t+1} (float tensor).
        - **mem** (N, K): the potential u_{t+1}.

    Learnable parameters: ``log_bias`` (K,), ``log_eta`` (), ``u0`` (K,).
    """

    def __init__(self, n_latents: int, *, log_bias=-3.0, log_eta=0.0, u0=None,
                 clamp_u: float = 8.0, clamp_du: float = 7.0, temperature: float = 0.0,
                 width: int = DEFAULT_WIDTH, tail: bool = True, init_hidden: bool = False,
                 output: bool = False, learn: bool = True, generator=None,
                 dtype=torch.float32):
        super().__init__(init_hidden=init_hidden, output=output, reset_mechanism="none")
        if n_latents < 1:
            raise ValueError(f"n_latents must be >= 1, got {n_latents}")
        if width < 1:
            raise ValueError(f"relaxed-sampler width must be >= 1, got {width}")
        k = int(n_latents)
        if u0 is None:
            u0 = torch.empty(k, dtype=dtype).uniform_(-6.0, -4.0, generator=generator)
        u0 = torch.as_tensor(u0, dtype=dtype).reshape(k).clone()
        log_bias = torch.as_tensor(log_bias, dtype=dtype).expand(k).clone()
        log_eta = torch.as_tensor(log_eta, dtype=dtype).reshape(()).clone()
        for name, value in (("u0", u0), ("log_bias", log_bias), ("log_eta", log_eta)):
            if learn:
                setattr(self, name, torch.nn.Parameter(value))
            else:
                self.register_buffer(name, value)
        self.n_latents = k
        self.clamp_u, self.clamp_du = float(clamp_u), float(clamp_du)
        self.temperature, self.width, self.tail = float(temperature), int(width), bool(tail)
        self.register_buffer("mem", torch.zeros(0, dtype=dtype), persistent=False)

    # --- snntorch hidden-state conventions -------------------------------------------------
    def reset_mem(self, batch_size: int | None = None) -> torch.Tensor:
        """Reset the hidden state to the prior u₀, (batch_size, K) (or (K,) if None)."""
        u0 = self.u0
        self.mem = u0 if batch_size is None else u0.expand(batch_size, self.n_latents)
        return self.mem

    def init_poisson(self, batch_size: int | None = None) -> torch.Tensor:
        """snntorch-style initialiser: the hidden state at the prior u₀."""
        return self.reset_mem(batch_size)

    @classmethod
    def reset_hidden(cls):
        """Reset every PoissonLatent instance's hidden state to its prior u₀."""
        for layer in SpikingNeuron.instances:
            if isinstance(layer, cls):
                n = layer.mem.shape[0] if layer.mem.dim() == 2 else None
                layer.reset_mem(n)

    @classmethod
    def detach_hidden(cls):
        """Detach the hidden states from the graph (truncated BPTT)."""
        for layer in SpikingNeuron.instances:
            if isinstance(layer, cls):
                layer.mem = layer.mem.detach()

    # --- dynamics ---------------------------------------------------------------------------
    @property
    def bias(self) -> torch.Tensor:
        """(K,) leak b = e^{log b}."""
        return torch.exp(self.log_bias)

    @property
    def eta(self) -> torch.Tensor:
        """Step size η = e^{log η}."""
        return torch.exp(self.log_eta)

    def integrate(self, input_: torch.Tensor, mem: torch.Tensor) -> torch.Tensor:
        """u_{t+1} = clamp_u(u_t + clamp_du(η (input − b))), (N, K)."""
        return Integrate.apply(input_, mem, self.eta, self.bias, self.clamp_u, self.clamp_du)

    def fire(self, mem: torch.Tensor, noise=None) -> torch.Tensor:
        """Spike counts at rate e^mem: exact (temperature 0) or relaxed (> 0), (N, K)."""
        rate = torch.exp(mem)
        if self.temperature <= 0:
            xi = torch.rand(mem.shape, dtype=torch.float64) if noise is None else noise
            return poisson_counts(xi, rate).to(mem.dtype)
        source, tail = self.noise_source(mem, noise)
        return RelaxedPoisson.apply(rate, self.temperature, source, tail)

    def noise_source(self, mem: torch.Tensor, noise=None):
        """(source, tail): the relaxed sampler's noise for potentials shaped like ``mem``
        (``noise`` as for ``forward``; ``tail`` False when no tail normals are given)."""
        return noise_source(noise, mem, self.width, self.tail)

    def step(self, input_: torch.Tensor, mem: torch.Tensor, rate: torch.Tensor | None = None,
             noise=None, kl_form: str = "exact"):
        """One fused training step: (spk, mem, kl, rate) = (z_{t+1}, u_{t+1}, KL_t, e^{u_{t+1}}).

        The same numbers as ``forward`` followed by ``neurons.poisson.poisson_kl``
        (KL(Pois(e^{u_{t+1}}) ‖ Pois(e^{u_t})) summed over neurons, (N,)), as one
        autograd node.  input_ (N, K) is the feedback current, mem (N, K) the
        potential u_t, rate its e^{u_t} if already known (a cache; no gradient
        flows through it).  ``noise`` as for ``forward``.
        """
        if kl_form not in KL_FORMS:
            raise ValueError(f"unknown KL form {kl_form!r}; expected one of {KL_FORMS}")
        if input_.shape[-1] != self.n_latents:
            raise ValueError(f"input has {input_.shape[-1]} channels, expected K = {self.n_latents}")
        if rate is None:
            rate = torch.exp(mem.detach())
        if self.temperature <= 0:
            source = torch.rand(mem.shape, dtype=torch.float64) if noise is None else noise
            tail = False
        else:
            source, tail = self.noise_source(mem, noise)
        u, z, kl, r = LatentStep.apply(input_, mem, self.eta, self.bias, rate.detach(),
                                       self.clamp_u, self.clamp_du, self.temperature, source,
                                       tail, kl_form)
        return z, u, kl, r

    def forward(self, input_: torch.Tensor, mem: torch.Tensor | None = None, noise=None):
        """One step: integrate the feedback current, then spike; returns (spk, mem)."""
        if self.init_hidden and mem is not None:
            raise TypeError("`mem` should not be passed as an argument while `init_hidden=True`")
        if mem is None:
            mem = self.mem
            if mem.shape != input_.shape:
                mem = self.u0.expand_as(input_)
        if input_.shape[-1] != self.n_latents:
            raise ValueError(f"input has {input_.shape[-1]} channels, expected K = {self.n_latents}")
        mem = self.integrate(input_, mem)
        spk = self.fire(mem, noise)
        if self.init_hidden:
            self.mem = mem
            return (spk, mem) if self.output else spk
        return spk, mem
