"""Per-socket pacing: receipts coalesced before they are written, typing within a budget.

Both are socket lifetime, not rules: the writes go through services
(`services.mark_receipts`), the typing relay through the consumer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from chatsite.errors import DomainError

ReceiptFlush = Callable[[int, int, int], Awaitable[None]]
TypingRelay = Callable[[int, str], Awaitable[None]]


class ReceiptBatcher:
    """Write a socket's markers of one conversation at most every `interval` seconds.

    A burst of receipts becomes one write of the highest delivered and read numbers seen,
    so members get one `receipt.updated` per interval at most.
    """

    __slots__ = ("flush", "flushed_at", "interval", "pending", "tasks")

    def __init__(self, flush: ReceiptFlush, interval: float) -> None:
        self.flush = flush
        self.interval = interval
        self.pending: dict[int, tuple[int, int]] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.flushed_at: dict[int, float] = {}

    def add(self, conversation: int, seq: int, *, read: bool) -> None:
        """Note a receipt; its write happens at most `interval` after the previous one."""
        delivered, was_read = self.pending.get(conversation, (0, 0))
        self.pending[conversation] = (max(delivered, seq), max(was_read, seq if read else 0))
        if conversation in self.tasks:
            return
        due = self.flushed_at.get(conversation, 0.0) + self.interval
        delay = max(0.0, due - time.monotonic())
        self.tasks[conversation] = asyncio.get_running_loop().create_task(
            self._flush(conversation, delay)
        )

    async def _flush(self, conversation: int, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        self.tasks.pop(conversation, None)
        delivered, read = self.pending.pop(conversation, (0, 0))
        self.flushed_at[conversation] = time.monotonic()
        await self.flush(conversation, delivered, read)

    def cancel(self) -> None:
        """Drop what is not written yet (the socket closed)."""
        for task in self.tasks.values():
            task.cancel()
        self.tasks.clear()


class TypingBudget:
    """A socket's token bucket for typing frames that defers instead of dropping.

    Past the rate, the latest state of each conversation waits for the next token: a
    dropped `start` would leave the others never seeing the typing, a dropped `stop` would
    leave it on for 10 s.
    """

    __slots__ = ("at", "burst", "pending", "rate", "relay", "task", "tokens")

    def __init__(self, relay: TypingRelay, *, rate: float, burst: float) -> None:
        self.relay = relay
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.at = time.monotonic()
        self.pending: dict[int, str] = {}
        self.task: asyncio.Task[None] | None = None

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now

    async def offer(self, conversation: int, state: str) -> None:
        """Relay now if the budget allows, else keep the latest state for later."""
        self._refill()
        if self.tokens < 1:
            self.pending[conversation] = state
            if self.task is None or self.task.done():
                wait = (1 - self.tokens) / self.rate
                self.task = asyncio.get_running_loop().create_task(self._later(wait))
            return
        self.tokens -= 1
        self.pending.pop(conversation, None)
        await self.relay(conversation, state)

    async def _later(self, wait: float) -> None:
        await asyncio.sleep(wait)
        while self.pending:
            conversation, state = self.pending.popitem()
            self._refill()
            self.tokens = max(0.0, self.tokens - 1)
            try:
                await self.relay(conversation, state)
            except DomainError:
                continue  # left the conversation meanwhile

    def cancel(self) -> None:
        """Drop what waits (the socket closed)."""
        if self.task is not None:
            self.task.cancel()
