"""Baselines for the iP-VAE on the same splits and metrics (issue 14; design §7).

- :mod:`train.baselines.metrics`: ``summary(x, recon, codes)``, the iP-VAE's R² and
  sparsity (``train.evaluate``) and the distance of (sparsity, R²) to (1, 1);
- :mod:`train.baselines.sparse_coding`: dictionary learning and LASSO (LARS) codes with
  scikit-learn, swept over the penalty α;
- :mod:`train.baselines.lca`: the Locally Competitive Algorithm on Lava's CPU backend
  (Intel's ``lava-optimization``) on a sparse-coding dictionary, swept over λ;
- :mod:`train.baselines.amortized`: the amortised Poisson VAE (an encoder maps x to
  log-rates; the iP-VAE's decoder, relaxed sampler, KL and β) and a Gaussian VAE.

The submodules import their heavy dependencies (scikit-learn, torch, Lava) themselves.
"""
