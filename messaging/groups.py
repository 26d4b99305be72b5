"""The channel-layer groups of one socket, and which conversation events it may forward.

A socket is in its user's group and in one group per conversation its user is a member
of; it remembers, per conversation, the `member_seq` it knows. An event carries the
`member_seq` of the membership it was logged under: one that is newer than the socket's
means the membership changed since the socket looked, so the socket asks the database
before forwarding (a removed member's socket never forwards what was logged after the
removal).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from django.db import DatabaseError, InterfaceError

from messaging import events


class MemberView(Protocol):
    """What a conversation summary must say for a socket to follow it."""

    @property
    def id(self) -> int: ...

    @property
    def member_seq(self) -> int: ...


class SocketGroups:
    """The groups of one connection (`layer`, `channel`); its user is set by `join_user`."""

    __slots__ = ("channel", "joined_at", "known", "layer", "user_id")  # one per socket

    def __init__(self, layer: Any, channel: str) -> None:
        self.layer = layer
        self.channel = channel
        self.user_id = 0
        self.known: dict[int, int] = {}  # conversation id -> member_seq known to this socket
        self.joined_at = time.monotonic()

    def __contains__(self, conversation: int) -> bool:
        return conversation in self.known

    def _names(self, conversations: Iterable[int]) -> list[str]:
        return [events.conversation_group(i) for i in conversations]

    async def _regroup(self, *, joined: Iterable[int], left: Iterable[int]) -> None:
        await events.join_groups(self.layer, self.channel, self._names(joined))
        await events.leave_groups(self.layer, self.channel, self._names(left))

    async def join_user(self, user_id: int) -> None:
        """Join the user's own group (membership changes, profile, presence echoes)."""
        self.user_id = user_id
        self.joined_at = time.monotonic()
        await events.join_groups(self.layer, self.channel, [events.user_group(self.user_id)])

    async def join(self, conversations: Iterable[int]) -> None:
        """Join conversations' groups before their state is read.

        An event racing the read then arrives after it, and the client's cursors absorb
        the duplicate.
        """
        await events.join_groups(self.layer, self.channel, self._names(conversations))

    async def settle(self, views: Iterable[MemberView], joined: Iterable[int]) -> None:
        """Make the groups match `views`, the user's conversations as just read.

        `joined` are the groups joined so far (on `sync`, those this socket knows).
        """
        current = {view.id: view.member_seq for view in views}
        joined = set(joined)
        await self._regroup(
            joined=[i for i in current if i not in joined],
            left=[i for i in joined if i not in current],
        )
        self.known = {i: max(self.known.get(i, 0), seq) for i, seq in current.items()}

    async def add(self, conversation: int, member_seq: int) -> None:
        """Follow a conversation the user joined or created."""
        self.known[conversation] = max(self.known.get(conversation, 0), member_seq)
        await self._regroup(joined=[conversation], left=[])

    async def drop(self, conversation: int) -> None:
        """Stop following a conversation the user left or was removed from."""
        self.known.pop(conversation, None)
        await self._regroup(joined=[], left=[conversation])

    async def admits(
        self,
        conversation: int,
        member_seq: int,
        current_member_seq: Callable[[], Awaitable[int | None]],
    ) -> bool:
        """Whether an event of `conversation` logged under `member_seq` may be forwarded.

        `current_member_seq` reads the user's membership now (None: not a member); it is
        called only when the event is newer than what the socket knows. If the database
        cannot answer the event is dropped: the client repairs the gap when it is back.
        """
        known = self.known.get(conversation)
        if known is None:
            return False
        if member_seq <= known:
            return True
        try:
            current = await current_member_seq()
        except (DatabaseError, InterfaceError):
            return False
        if current is None:
            await self.drop(conversation)
            return False
        self.known[conversation] = current
        return True

    def all_names(self) -> list[str]:
        """Name every group of this socket."""
        return [events.user_group(self.user_id), *self._names(self.known)]

    async def rejoin_all(self) -> None:
        """Join every group again (after Redis lost them, or before they expire)."""
        self.joined_at = time.monotonic()
        await events.join_groups(self.layer, self.channel, self.all_names())

    async def leave_all(self) -> None:
        """Leave every group (the socket is gone)."""
        await events.leave_groups(self.layer, self.channel, self.all_names())
