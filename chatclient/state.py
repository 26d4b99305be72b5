"""The per-conversation cursor rules of PROTOCOL.md section 1, with no I/O.

A `ConversationState` holds one conversation's messages and its `cursor`: the highest
log number applied with nothing missing below it. Invariant: every stored message has
`version <= cursor`, so a message beyond the cursor is never shown before the ones
below it have arrived.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any

Message = dict[str, Any]

MAX_HELD = 1000  # live messages held ahead of the cursor per conversation


class Offer(enum.Enum):
    """What the cursor rules decided about one live message."""

    APPLIED = "applied"  # version == cursor + 1: stored, cursor advanced
    GAP = "gap"  # version > cursor + 1: something was missed, fetch after=cursor
    DUPLICATE = "duplicate"  # version <= cursor: already covered, dropped


class ConversationState:
    """Hold one conversation's cursor and messages, and apply the cursor rules to them."""

    def __init__(self, conversation_id: int, cursor: int = 0) -> None:
        self.id = conversation_id
        self.cursor = cursor
        # The highest log number known to exist: `last_seq` from session.ready or
        # sync.state, or the version of a live event that arrived ahead of the cursor.
        self.known_seq = cursor
        self._messages: dict[int, Message] = {}
        # Live messages that arrived ahead of the cursor, by version, with a caller's tag
        # (how they arrived). Not in the view: they join it when the numbers below them
        # have arrived (`drain`), so the invariant holds.
        self._held: dict[int, tuple[Message, object]] = {}

    @property
    def behind(self) -> bool:
        """Return whether log numbers above the cursor are known to exist (fetch them)."""
        return self.known_seq > self.cursor

    def note_last_seq(self, last_seq: int) -> None:
        """Record that the log reaches `last_seq` (from a snapshot); never lowers it."""
        self.known_seq = max(self.known_seq, int(last_seq))

    def offer(self, message: Mapping[str, Any]) -> Offer:
        """Apply a live message (or a `message.sent` reply) if it is the next log number."""
        version = int(message["version"])
        if version <= self.cursor:
            return Offer.DUPLICATE
        if version > self.cursor + 1:
            # Do not apply out of order: the fetch after=cursor will bring this one too.
            self.note_last_seq(version)
            return Offer.GAP
        self._upsert(message)
        self.cursor = version
        self.note_last_seq(version)
        return Offer.APPLIED

    def hold(self, message: Mapping[str, Any], tag: object = None) -> None:
        """Keep a message `offer` called a GAP until the numbers below it arrive.

        The missing number is often already on its way (a member's own `message.sent`
        reply overtaking the push of a peer's message just below it); `drain` applies
        the held ones as soon as the gap closes, so no fetch is needed. At most
        MAX_HELD are kept; the fetch after=cursor brings anything else.
        """
        version = int(message["version"])
        if version > self.cursor + 1 and len(self._held) < MAX_HELD:
            self._held[version] = (dict(message), tag)

    def drain(self) -> list[tuple[Message, object]]:
        """Apply held messages that are now next in line; return them with their tags."""
        for version in [v for v in self._held if v <= self.cursor]:
            del self._held[version]
        applied = []
        while self.cursor + 1 in self._held:
            message, tag = self._held.pop(self.cursor + 1)
            self._upsert(message)
            self.cursor += 1
            applied.append((dict(message), tag))
        return applied

    def apply_batch(
        self, messages: Iterable[Mapping[str, Any]], upto: int | None, *, after: int
    ) -> list[Message]:
        """Apply a `messages.batch` fetched with `after`; return the messages that changed.

        A batch fetched after a number above the cursor would leave a hole below it, so
        it is ignored (nothing applied, cursor unchanged).
        """
        if after > self.cursor:
            return []
        applied = [dict(m) for m in messages if self._upsert(m)]
        if upto is not None:
            self.cursor = max(self.cursor, int(upto))
            self.note_last_seq(self.cursor)
        return applied

    def get(self, message_id: int) -> Message | None:
        """Return a copy of the stored message with this id, or None."""
        message = self._messages.get(message_id)
        return dict(message) if message is not None else None

    def view(self) -> list[Message]:
        """Return copies of the stored messages in `seq` (display) order."""
        return [dict(m) for m in sorted(self._messages.values(), key=lambda m: int(m["seq"]))]

    def __len__(self) -> int:
        """Return the number of stored messages."""
        return len(self._messages)

    def _upsert(self, message: Mapping[str, Any]) -> bool:
        """Store `message` by id unless a copy with the same or a newer version is stored."""
        current = self._messages.get(int(message["id"]))
        if current is not None and int(current["version"]) >= int(message["version"]):
            return False
        self._messages[int(message["id"])] = dict(message)
        self._cut(message)
        return True

    def _cut(self, message: Mapping[str, Any]) -> None:
        """Drop what a retention notice says the server removed (all up to `through_seq`)."""
        system = message.get("system")
        if not isinstance(system, Mapping) or system.get("event") != "retention":
            return
        through = int(system.get("through_seq", 0))
        notice = int(message["id"])
        for message_id, stored in list(self._messages.items()):
            if message_id != notice and int(stored["seq"]) <= through:
                del self._messages[message_id]
