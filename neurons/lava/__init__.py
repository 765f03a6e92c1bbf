"""The latent neuron and the iP-VAE network as Lava Processes (lava-nc 0.10, Python 3.10).

One package folder per Process, each with ``process.py`` (the interface: ports,
Vars, the equations) and ``models.py`` (the ProcessModels, chosen by tag):

- ``neurons.lava.poisson_latent``: ``PoissonLatent``, K Poisson latent neurons
  (membrane potential u integrates the feedback current; graded spike counts
  z ~ Poisson(e^u) per step);
- ``neurons.lava.error_units``: ``ErrorUnits``, D prediction-error units
  e = (x − Φz)/σ²;
- ``neurons.lava.ipvae_net``: ``IPVAENet``, the whole network as one
  hierarchical Process (``folded`` or ``error-units`` topology);
- ``neurons.lava.dense_events``: an event-driven ProcessModel of Lava's own ``Dense``
  (the rows of the inputs that fired, as a neuromorphic core adds them).

Importing this package does not import Lava; import the Process modules where used.
Nothing in these folders runs code at import time (Lava's model discovery
executes every sibling module of a Process).
"""

TOPOLOGIES = ("folded", "error-units")
"""Topology names of the Lava network (``IPVAENet``, ``simulate(..., backend="lava")``)."""

STRIDES = {"folded": 1, "error-units": 2}
"""Lava steps per inference step of each topology."""

DENSE_SHARE = 0.25
"""``neurons.lava.dense_events``: above this share of nonzero inputs in a step, the dense
product is used (BLAS beats the row sums there; measured ~27 µs for a 512 × 512 product
against ~4 µs for the rows at 4% nonzero)."""
