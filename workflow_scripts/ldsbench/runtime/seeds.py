"""Seeds as pure functions of keys (torch-free): every random stream of the
benchmark (noise draws, subsets, retraining seeds) is seeded from a tuple of
ints and strings that names it, so that it does not depend on job order."""

from __future__ import annotations

import numpy as np


def stream_seed(*keys) -> int:
    """A 63-bit seed derived from any tuple of ints and strings."""
    entropy = [k if isinstance(k, int) else int.from_bytes(str(k).encode()[:16].ljust(16, b"\0"), "little") for k in keys]
    state = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])
