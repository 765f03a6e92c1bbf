"""The shared-noise streams (design §2.2): one counter-based uniform stream per input.

Input n of a data set draws its uniforms ξ[t, k] from
``Generator(Philox(key=[seed, n]))`` in (t, k) order.  This module only builds
those streams, so that every backend (``networks.noise`` for the simulators, the
Lava latent model inside ``neurons``) constructs them in exactly one way.
"""
from __future__ import annotations

import numpy as np

KEY_LIMIT = 2**63
"""Seeds and input indices lie in [0, KEY_LIMIT): a key word is a signed 64-bit integer
in Brian2's and C's code, and Philox takes the key modulo 2**64 otherwise (silently)."""


def check_key(seed: int, index: int) -> None:
    """Raise ValueError unless ``seed`` and ``index`` both lie in [0, 2**63)."""
    if not (0 <= seed < KEY_LIMIT and 0 <= index < KEY_LIMIT):
        raise ValueError(f"seed and sample index must lie in [0, 2**63), got {seed}, {index}")


def sample_stream(seed: int, index: int) -> np.random.Generator:
    """The uniform stream of the input at ``index`` in the data set (design §2.2)."""
    seed, index = int(seed), int(index)
    check_key(seed, index)
    return np.random.Generator(np.random.Philox(key=[seed, index]))
