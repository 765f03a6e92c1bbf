"""Sparse coding with scikit-learn: a learned dictionary and LASSO codes (issue 14).

A dictionary D (K, D) of K atoms (rows, each of norm ≤ 1) is learned by scikit-learn's
``MiniBatchDictionaryLearning`` (online dictionary learning, Mairal et al. 2009), which
minimises over D and the codes A (N, K)

    ½ ‖X − A D‖²_F + α ‖A‖₁,

and a code is the LASSO solution for a fixed dictionary, computed by LARS through
``sklearn.decomposition.SparseCoder`` (``transform_algorithm="lasso_lars"``; per input
min_a ½ ‖x − a D‖² + α ‖a‖₁, the same α: sklearn divides by D internally so that its
``LassoLars`` solves this unnormalised objective). Codes are signed by default
(classical sparse coding); ``positive=True`` restricts them to a ≥ 0 like spike counts.

Units: x is in the data set's units (MNIST pixels / 255); α is in the same squared units
as ½‖x − a D‖², so a larger α gives sparser codes and worse reconstructions. The metrics
are the iP-VAE's (``train.baselines.metrics.summary``, design §7).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from networks.progress import progress_bar
from train.baselines.metrics import as_matrix, summary

BATCH = 256
"""Inputs per mini-batch of dictionary learning."""
EPOCHS = 2
"""Passes over the training inputs (``quick``: 1 pass over at most ``QUICK_N`` inputs)."""
QUICK_N = 300


def _check_alpha(alpha) -> float:
    a = float(alpha)
    if not (np.isfinite(a) and a > 0):
        raise ValueError(f"alpha must be a finite number > 0, got {alpha!r}")
    return a


@dataclass
class SparseCoding:
    """A learned dictionary with its LASSO encoder.

    dictionary : (K, D) atoms as rows (norm ≤ 1); alpha : the L1 penalty α;
    positive : codes restricted to ≥ 0; fit_seconds : wall time of ``fit``.
    """

    dictionary: np.ndarray
    alpha: float
    positive: bool = False
    fit_seconds: float = 0.0

    @property
    def n_atoms(self) -> int:
        return self.dictionary.shape[0]

    def encode(self, x) -> np.ndarray:
        """LASSO (LARS) codes (N, K) of x (N, D): argmin_a ½‖x − a D‖² + α‖a‖₁ per row."""
        from sklearn.decomposition import SparseCoder

        x = as_matrix(x, "x", self.dictionary.shape[1])
        coder = SparseCoder(self.dictionary, transform_algorithm="lasso_lars",
                            transform_alpha=self.alpha, positive_code=self.positive)
        return coder.transform(x)

    def reconstruct(self, codes) -> np.ndarray:
        """x̂ = a D: (N, K) codes → (N, D)."""
        codes = as_matrix(codes, "codes", self.n_atoms)
        return codes @ self.dictionary

    def metrics(self, x) -> dict:
        """``summary`` (mse, r2, sparsity, distance) of the LASSO codes of x (N, D)."""
        codes = self.encode(x)
        return summary(x, self.reconstruct(codes), codes)


def fit(x_train, n_atoms: int, alpha: float, *, seed: int = 0, quick: bool = False,
        epochs: int = EPOCHS, batch: int = BATCH, positive: bool = False,
        progress: bool = True) -> SparseCoding:
    """Learn K = ``n_atoms`` atoms on x_train (N, D) float64 at L1 penalty ``alpha``.

    ``MiniBatchDictionaryLearning`` (LARS codes while learning, the same α), fed shuffled
    mini-batches of ``batch`` inputs for ``epochs`` passes through ``partial_fit`` (so a
    progress bar can follow); the dictionary starts from K training inputs drawn with
    ``seed`` and scaled to unit norm. ``quick``: one pass over at most 300 inputs.
    Returns a :class:`SparseCoding`.
    """
    x = as_matrix(x_train, "x_train")
    alpha = _check_alpha(alpha)
    if int(n_atoms) != n_atoms or n_atoms < 1:
        raise ValueError(f"n_atoms must be an integer >= 1, got {n_atoms!r}")
    if epochs < 1 or batch < 1:
        raise ValueError(f"epochs and batch must be >= 1, got {epochs}, {batch}")
    from sklearn.decomposition import MiniBatchDictionaryLearning

    n_atoms = int(n_atoms)
    if quick:
        x, epochs = x[:QUICK_N], 1
    rng = np.random.default_rng(seed)
    init = x[rng.choice(len(x), n_atoms, replace=len(x) < n_atoms)]
    init = init + 1e-3 * rng.standard_normal(init.shape) * (init.std() or 1.0)
    init /= np.maximum(np.linalg.norm(init, axis=1, keepdims=True), 1e-12)
    model = MiniBatchDictionaryLearning(
        n_components=n_atoms, alpha=alpha, batch_size=batch, fit_algorithm="lars",
        transform_algorithm="lasso_lars", transform_alpha=alpha, positive_code=positive,
        dict_init=init, random_state=seed)
    per_epoch = -(-len(x) // batch)
    t0 = time.perf_counter()
    with progress_bar(total=epochs * per_epoch, desc=f"dictionary α={alpha:g}",
                      unit="batch", enabled=progress, leave=False) as bar:
        for _ in range(epochs):
            order = rng.permutation(len(x))
            for b in range(per_epoch):
                model.partial_fit(x[order[b * batch:(b + 1) * batch]])
                bar.update(1)
    return SparseCoding(np.array(model.components_, dtype=np.float64), alpha, positive,
                        time.perf_counter() - t0)


def sweep(x_train, x_test, n_atoms: int, alphas, *, seed: int = 0, quick: bool = False,
          progress: bool = True, keep_models: bool = False, **fit_options) -> list:
    """Rate-distortion sweep: for each α, learn a dictionary on x_train and code x_test.

    x_train (N, D), x_test (M, D) float64; ``alphas`` one or more penalties > 0.
    Returns a list (in the order of ``alphas``) of dict(alpha, mse, r2, sparsity,
    distance) on x_test, plus ``fit_seconds`` and ``encode_seconds`` (and ``model``, the
    :class:`SparseCoding`, with ``keep_models``). ``quick`` also codes at most 100 test
    inputs. ``fit_options`` go to :func:`fit` (epochs, batch, positive).
    """
    x_train = as_matrix(x_train, "x_train")
    x_test = as_matrix(x_test, "x_test", x_train.shape[1])
    alphas = [_check_alpha(a) for a in np.atleast_1d(np.asarray(alphas, dtype=object))]
    if not alphas:
        raise ValueError("alphas is empty")
    if quick:
        x_test = x_test[:100]
    out = []
    for alpha in progress_bar(alphas, desc="sparse coding sweep", unit="α", enabled=progress):
        model = fit(x_train, n_atoms, alpha, seed=seed, quick=quick, progress=progress,
                    **fit_options)
        t0 = time.perf_counter()
        row = dict(alpha=alpha, **model.metrics(x_test), fit_seconds=model.fit_seconds,
                   encode_seconds=time.perf_counter() - t0, n_train=len(x_train) if not quick
                   else min(len(x_train), QUICK_N), n_test=len(x_test), n_atoms=int(n_atoms))
        if keep_models:
            row["model"] = model
        out.append(row)
    return out
