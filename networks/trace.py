"""``Trace``: what a simulation returns, whichever backend ran it (design §4.2)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from networks.network import atomic_write


@dataclass(eq=False)
class Trace:
    """A spiking-inference run of T steps over N inputs.

    Recorded steps (all of them unless ``record=`` asked for fewer):

    - ``steps`` (S,) int: which inference steps t ∈ [0, T) were kept;
    - ``spikes`` (S, N, K) int32: spike counts z_t;
    - ``u`` (S + 1, N, K) float64: membrane potential u_t that produced each
      kept step's spikes, then the final potential u_T;
    - ``recon`` (S, N, D) float64: read-out x̂_t = Φ z_t.

    Kept for every step (T, N): ``step_mse`` mean squared error per pixel of
    the spike read-out, ``step_zeros`` fraction of neurons with zero count,
    ``step_rate`` mean firing rate (spikes/step), and ``step_rate_mse`` the MSE
    of the rate read-out Φ e^{u_t} (NaN unless rate metrics were asked for).
    """

    x: np.ndarray
    steps: np.ndarray
    spikes: np.ndarray
    u: np.ndarray
    recon: np.ndarray
    step_mse: np.ndarray
    step_zeros: np.ndarray
    step_rate: np.ndarray
    step_rate_mse: np.ndarray
    info: dict = field(default_factory=dict)

    @property
    def n_steps(self) -> int:
        """T, the number of inference steps run."""
        return self.step_mse.shape[0]

    def mse(self) -> np.ndarray:
        """(T,) mean squared error per pixel of the spike read-out, averaged over inputs."""
        return self.step_mse.mean(axis=1)

    def r2(self, from_rates: bool = False) -> np.ndarray:
        """(T,) R² per input, 1 − Σ(x − x̂)² / Σ(x − x̄)², averaged over inputs.

        ``from_rates`` uses x̂ = Φ e^u (needs a run with rate metrics).
        """
        err = self.step_rate_mse if from_rates else self.step_mse
        if from_rates and np.isnan(err).all():
            raise ValueError("this trace has no rate metrics; simulate with rate_metrics=True")
        var = self.x.var(axis=1)
        return (1.0 - err / np.where(var > 0, var, np.nan)).mean(axis=1)

    def sparsity(self) -> np.ndarray:
        """(T,) fraction of exactly-zero spike counts, averaged over inputs."""
        return self.step_zeros.mean(axis=1)

    def save(self, path) -> Path:
        """Write to ``path`` (.npz, atomic)."""
        arrays = {name: getattr(self, name) for name in _ARRAYS}
        arrays["info"] = np.asarray(json.dumps(self.info, sort_keys=True))
        return atomic_write(path, lambda f: np.savez_compressed(f, **arrays))

    @classmethod
    def load(cls, path) -> "Trace":
        """Read a trace written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"trace file not found: {path}")
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in (*_ARRAYS, "info") if k not in f.files]
            if missing:
                raise ValueError(f"{path}: not a trace file (missing {', '.join(missing)})")
            arrays = {k: f[k] for k in _ARRAYS}
            info = json.loads(str(f["info"]))
        return cls(**arrays, info=info)


_ARRAYS = ("x", "steps", "spikes", "u", "recon", "step_mse", "step_zeros", "step_rate",
           "step_rate_mse")


def record_steps(record, steps: int) -> np.ndarray:
    """Normalise ``record=`` (None: all; int array / iterable of steps) to sorted unique steps."""
    if record is None:
        return np.arange(steps)
    try:
        raw = np.asarray(list(record) if not isinstance(record, np.ndarray) else record)
    except TypeError:
        raise ValueError(f"record= must be a sequence of steps, got {record!r}") from None
    if raw.size and (raw.ndim != 1 or raw.dtype.kind not in "iu"):
        raise ValueError(f"record= must be a flat sequence of integer steps, got {record!r}")
    rec = np.unique(raw.astype(np.int64))
    if rec.size and (rec[0] < 0 or rec[-1] >= steps):
        raise ValueError(f"record= steps must lie in [0, {steps}), got {rec[0]}..{rec[-1]}")
    return rec


class TraceRecorder:
    """Accumulates a :class:`Trace` step by step, keeping only the requested steps.

    Every backend feeds it ``(t, u_t, z_t, recon_t)`` for t = 0 … T−1 in
    order, then ``finish(u_T)``; the metrics are computed here, once.
    """

    def __init__(self, net, x, steps, record=None, rate_metrics=False, info=None):
        self.net, self.x, self.rate_metrics = net, x, rate_metrics
        n, k, d = x.shape[0], net.n_latents, net.input_dim
        self.steps = record_steps(record, steps)
        self._slot = {int(t): i for i, t in enumerate(self.steps)}
        s = len(self.steps)
        self.spikes = np.zeros((s, n, k), dtype=np.int32)
        self.u = np.zeros((s + 1, n, k))
        self.recon = np.zeros((s, n, d))
        self.step_mse = np.zeros((steps, n))
        self.step_zeros = np.zeros((steps, n))
        self.step_rate = np.zeros((steps, n))
        self.step_rate_mse = np.full((steps, n), np.nan)
        self.info = dict(info or {})

    def slot(self, t: int):
        """Where step t's spikes, u_t and recon are kept (an index), or None if not recorded."""
        return self._slot.get(int(t))

    def u_slot(self, t: int):
        """Where u_t (t ∈ [0, T]) is kept: the step's slot, the last one for u_T, else None."""
        return len(self.steps) if t == self.step_mse.shape[0] else self.slot(t)

    def add(self, t, u, z, recon, residual=None, rate=None, rows=slice(None)):
        """Record step t: u (N, K) potentials, z (N, K) counts, recon (N, D) = Φ z.

        ``residual`` (x − recon) and ``rate`` (e^u), when the caller has them, save
        recomputing them.  ``rows`` (a slice of the batch) records a block of
        inputs only; blocks with disjoint rows may be added from different threads.
        """
        self.add_metrics(t, u, z, recon, residual, rate, rows)
        i = self.slot(t)
        if i is not None:
            self.spikes[i, rows], self.u[i, rows], self.recon[i, rows] = z, u, recon

    def add_metrics(self, t, u, z, recon, residual=None, rate=None, rows=slice(None)):
        """:meth:`add` without keeping the arrays: for a caller that computed u and
        recon straight into the storage of :meth:`slot` / :meth:`u_slot` (it then
        stores the counts itself)."""
        x = self.x[rows]
        residual = x - recon if residual is None else residual
        self.step_mse[t, rows] = np.einsum("nd,nd->n", residual, residual) / residual.shape[1]
        self.step_zeros[t, rows] = np.count_nonzero(z == 0, axis=1) / z.shape[1]
        r = np.exp(u) if rate is None else rate
        self.step_rate[t, rows] = r.mean(axis=1)
        if self.rate_metrics:
            self.step_rate_mse[t, rows] = np.mean((x - r @ self.net.phi.T) ** 2, axis=1)

    def add_block(self, t0, u, z, rows=slice(None), recon=None):
        """Record steps t0 … t0+B−1 at once: u (B, n, K) potentials u_t, z (B, n, K) counts.

        The read-out Φz is computed here unless given as ``recon`` (B, n, D).  Same
        results as B calls of :meth:`add`, without the per-step Python overhead;
        ``rows`` as in :meth:`add`.
        """
        b = u.shape[0]
        span = slice(t0, t0 + b)
        x = self.x[rows]
        if recon is None:
            recon = z @ self.net.phi.T  # (B, n, D)
        residual = x[None] - recon
        self.step_mse[span, rows] = (np.einsum("bnd,bnd->bn", residual, residual)
                                     / residual.shape[2])
        self.step_zeros[span, rows] = np.count_nonzero(z == 0, axis=2) / z.shape[2]
        r = np.exp(u)
        self.step_rate[span, rows] = r.mean(axis=2)
        if self.rate_metrics:
            self.step_rate_mse[span, rows] = np.mean((x[None] - r @ self.net.phi.T) ** 2, axis=2)
        lo, hi = np.searchsorted(self.steps, [t0, t0 + b])
        # The block's recorded steps, as indices into it: one fancy-indexed copy per array
        # (every step recorded, the default, is a plain slice).
        j = self.steps[lo:hi] - t0
        if hi > lo and j[-1] - j[0] == hi - lo - 1:
            j = slice(int(j[0]), int(j[-1]) + 1)
        self.spikes[lo:hi, rows], self.u[lo:hi, rows] = z[j], u[j]
        self.recon[lo:hi, rows] = recon[j]

    def finish(self, u_final=None) -> Trace:
        """Close the run with the final potentials u_T (N, K) (None: already in
        the storage of ``u_slot(T)``) and return the Trace."""
        if u_final is not None:
            self.u[-1] = u_final
        return Trace(x=self.x, steps=self.steps, spikes=self.spikes, u=self.u,
                     recon=self.recon, step_mse=self.step_mse, step_zeros=self.step_zeros,
                     step_rate=self.step_rate, step_rate_mse=self.step_rate_mse,
                     info=self.info)


def trace_from_run(net, x, spikes, u, record=None, rate_metrics=False, info=None) -> Trace:
    """Build a Trace from a backend's full arrays: spikes (T, N, K), u (T+1, N, K)."""
    steps = spikes.shape[0]
    rec = TraceRecorder(net, x, steps, record, rate_metrics, info)
    for t in range(steps):
        rec.add(t, u[t], spikes[t], spikes[t] @ net.phi.T)
    return rec.finish(u[steps])
