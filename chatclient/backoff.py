"""Reconnect and retry delays: exponential backoff with full jitter."""

from __future__ import annotations

import random


def full_jitter(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Return a delay drawn uniformly from [0, min(cap, base * 2**attempt)].

    Full jitter (rather than a fixed exponential delay) spreads the reconnects of many
    clients that lost the same gateway at the same moment, so they do not all land on
    the surviving gateway in one burst.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    # Cap the exponent so a long outage cannot overflow the float.
    ceiling = min(cap, base * 2 ** min(attempt, 64))
    return rng.uniform(0.0, ceiling)
