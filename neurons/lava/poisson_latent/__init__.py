"""``PoissonLatent``: the iP-VAE latent neuron as a Lava Process (see ``process.py``)."""
