"""``IPVAENet``: a whole iP-VAE network as one hierarchical Lava Process."""
