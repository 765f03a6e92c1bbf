"""Sub-commands of the ``ipvae`` CLI, one module each."""
