"""Deployment targets: which backend runs each, and the check for a real Loihi 2."""
from __future__ import annotations

TARGETS = {
    "lava-cpu": "lava",          # Lava's CPU simulator, floating_pt models
    "loihi2-sim": "lava-fixed",  # Lava's CPU simulator, bit-accurate fixed_pt models
    "loihi2": None,              # Lava's Loihi 2 hardware run configuration
}
"""Target name → ``simulate`` backend (None: hardware)."""


def loihi2_runtime_installed() -> bool:
    """True when Intel's Loihi runtime (lava-loihi) is importable."""
    try:
        from lava.utils.loihi import is_installed
    except ImportError:
        return False
    return bool(is_installed())


def check_loihi2() -> None:
    """Raise ImportError (one line) saying what a run on a Loihi 2 chip is missing."""
    if not loihi2_runtime_installed():
        raise ImportError("target loihi2 needs Intel's Loihi runtime (lava-loihi, given to "
                          "INRC members; not on the package index), which is not installed; "
                          "--target loihi2-sim runs the same fixed-point network bit-accurately "
                          "on Lava's CPU simulator")
    raise ImportError("Intel's Loihi runtime is installed, but the Poisson latent neuron has no "
                      "NeuroCore microcode model (NcProcessModel) in this project yet, so "
                      "Loihi2HwCfg cannot place it; --target loihi2-sim is the bit-accurate "
                      "stand-in")
