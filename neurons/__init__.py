"""The latent neuron of the iP-VAE: its mathematics and its simulator-specific forms.

``neurons.poisson`` holds the pure functions every backend shares (rates, clamps,
the Poisson inverse CDF, the KL, one inference step).  The snntorch, Lava and
Brian2 forms live in their own modules and are imported only where used, so
importing this package stays light.
"""
import os as _os

# torch's OpenMP workers spin-wait by default; on a shared 2-core machine that
# slows everyone else down ~10x (BACKENDS.md).  Must be set before torch loads.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
