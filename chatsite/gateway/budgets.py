"""Per-socket frame budgets: one token bucket per frame class, in the gateway's memory.

Every frame type a consumer handles belongs to a class (`sync`, `presence`, `status`,
`fetch`, `edit`, `receipt`, `typing`, `ping`) whose bucket refills at its rate up to its
burst (`WS_FRAME_BUDGETS`, from settings). A well-formed frame over its class's budget
is answered `rate_limited` with `retry_after` and not handled; the socket stays open.
The buckets belong to the socket, so checking one is arithmetic, never a Redis round
trip. `message.send` has no class here: it is limited per user across every gateway
(`CHAT_SEND_RATE`, `CHAT_SEND_BURST`) in the send service.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping


class FrameBudgets:
    """A socket's buckets, by frame class; a class without a budget is not limited."""

    __slots__ = ("buckets", "budgets")  # one per socket: no dict of its own

    def __init__(self, budgets: Mapping[str, tuple[float, float]]) -> None:
        self.budgets = budgets  # class -> (rate per second, burst)
        self.buckets: dict[str, tuple[float, float]] = {}  # class -> (tokens, at)

    def take(self, name: str | None) -> float:
        """Take a token of class `name`: 0.0 if there was one, else the seconds to wait."""
        if name is None:
            return 0.0
        budget = self.budgets.get(name)
        if budget is None:
            return 0.0
        rate, burst = budget
        now = time.monotonic()
        tokens, at = self.buckets.get(name, (burst, now))
        tokens = min(burst, tokens + (now - at) * rate)
        if tokens >= 1:
            self.buckets[name] = (tokens - 1, now)
            return 0.0
        self.buckets[name] = (tokens, now)
        # Whole milliseconds, rounded up: a client that waits this long gets its token.
        return math.ceil((1 - tokens) / rate * 1000) / 1000
