"""ipvae: the command-line entry point (``ipvae ...``) composing neurons/, networks/, hardware/ and train/."""
