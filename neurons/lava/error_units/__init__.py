"""``ErrorUnits``: explicit prediction-error units of the iP-VAE as a Lava Process."""
