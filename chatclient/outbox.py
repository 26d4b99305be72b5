"""The send outbox: messages waiting for their `message.sent`, with their retry timers.

Pure bookkeeping with times passed in (monotonic seconds), so the retry rules are
testable without a server. An entry keeps its `client_msg_id` for its whole life: every
retry repeats it, which is what makes a retry safe (PROTOCOL.md section 2).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class OutboxEntry:
    """One message to send, and the state of its latest attempt."""

    conversation: int
    body: str
    client_msg_id: str
    attachments: list[int] = field(default_factory=list)
    reply_to: int | None = None  # the id of the message this one replies to
    attempts: int = 0  # frames sent so far
    failures: int = 0  # `unavailable` answers so far (drives the retry backoff)
    ref: str | None = None  # the ref of the attempt in flight; None when not in flight
    refs: list[str] = field(default_factory=list)  # the refs of every attempt so far
    deadline: float = 0.0  # when the attempt in flight times out
    not_before: float = 0.0  # the earliest time of the next attempt

    @property
    def in_flight(self) -> bool:
        """Return whether an attempt was sent and neither answered nor timed out."""
        return self.ref is not None

    def frame(self, ref: str) -> dict[str, Any]:
        """Build the `message.send` frame of one attempt."""
        frame: dict[str, Any] = {
            "type": "message.send",
            "conversation": self.conversation,
            "client_msg_id": self.client_msg_id,
            "body": self.body,
            "ref": ref,
        }
        if self.attachments:
            frame["attachments"] = list(self.attachments)
        if self.reply_to is not None:
            frame["reply_to"] = self.reply_to
        return frame


class Outbox:
    """Keep unsent and unacknowledged messages in the order they were sent."""

    def __init__(self) -> None:
        self._entries: dict[str, OutboxEntry] = {}  # by client_msg_id, insertion-ordered

    def add(self, entry: OutboxEntry) -> None:
        """Queue `entry`; its `client_msg_id` must not be queued already."""
        if entry.client_msg_id in self._entries:
            raise ValueError(f"client_msg_id {entry.client_msg_id} is already in the outbox")
        self._entries[entry.client_msg_id] = entry

    def get(self, client_msg_id: str | None) -> OutboxEntry | None:
        """Return the entry with this `client_msg_id`, or None."""
        return self._entries.get(client_msg_id) if client_msg_id else None

    def by_ref(self, ref: str | None) -> OutboxEntry | None:
        """Return the entry one of whose attempts (current or earlier) had this ref, or None."""
        if ref is None:
            return None
        return next((e for e in self._entries.values() if ref in e.refs), None)

    def remove(self, client_msg_id: str) -> OutboxEntry | None:
        """Remove and return the entry with this `client_msg_id` (answered or abandoned)."""
        return self._entries.pop(client_msg_id, None)

    def is_due(self, entry: OutboxEntry, now: float) -> bool:
        """Return whether `entry` should be (re)sent at `now`."""
        if entry.client_msg_id not in self._entries:
            return False
        if entry.in_flight:
            return entry.deadline <= now  # reply timeout: retry with the same client_msg_id
        return entry.not_before <= now

    def due(self, now: float) -> list[OutboxEntry]:
        """Return the entries to (re)send at `now`, oldest first."""
        return [e for e in self._entries.values() if self.is_due(e, now)]

    def mark_sent(self, entry: OutboxEntry, ref: str, now: float, timeout: float) -> None:
        """Record that an attempt of `entry` went out with `ref` and times out after `timeout`."""
        entry.ref = ref
        entry.refs.append(ref)
        entry.attempts += 1
        entry.deadline = now + timeout

    def defer(self, entry: OutboxEntry, until: float) -> None:
        """Take `entry` out of flight and hold its next attempt until `until`."""
        entry.ref = None
        entry.not_before = until

    def connection_lost(self) -> None:
        """Mark every attempt in flight as lost: all are re-sent on the next connection."""
        for entry in self._entries.values():
            entry.ref = None

    def next_wakeup(self) -> float | None:
        """Return the next time an entry becomes due (a timeout or a retry), or None."""
        times = [e.deadline if e.in_flight else e.not_before for e in self._entries.values()]
        return min(times, default=None)

    def __len__(self) -> int:
        """Return the number of entries."""
        return len(self._entries)

    def __iter__(self) -> Iterator[OutboxEntry]:
        """Iterate over the entries, oldest first."""
        return iter(list(self._entries.values()))

    def __contains__(self, client_msg_id: object) -> bool:
        """Return whether an entry with this `client_msg_id` is queued."""
        return client_msg_id in self._entries
