"""Catching up: fetching what a conversation's cursor is missing, and noticing it is.

`CatchUp` is the part of `ChatClient` (client.py, which derives from it) that keeps
every cursor moving up to the log (README.md, "The rules, as this client applies them"):

- After `session.ready`, a join, or an edit whose version did not arrive: fetch
  `after=cursor` until `has_more` is false and nothing known is missing (`_catch_up`,
  at most CATCH_UP_CONCURRENCY fetches in flight per connection).
- A gap in the live events: fetch if it is still open GAP_GRACE seconds later.
- `sync`: the `sync.state` snapshot is the whole active set; catch up what it shows behind.
- Every `pong` carries the server's log position: a difference from ours that lasts
  POSITION_GRACE seconds is a missed live event, and a `sync` repairs it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from chatclient.backoff import full_jitter
from chatclient.errors import DEFAULT_RETRY_AFTER, RETRYABLE_CODES, ChatError, ConnectionLost
from chatclient.history import History, SyncRecord
from chatclient.session import Frame, Session, wait_all
from chatclient.state import ConversationState

if TYPE_CHECKING:
    from chatclient.history import Via
    from chatclient.state import Message

logger = logging.getLogger(__name__)

FETCH_LIMIT = 200
GAP_GRACE = 0.25  # seconds a gap may stay open before it is fetched
# Seconds a log position below the server's (`pong`) may last before the client syncs:
# an event committed just before the pong may still be on its way.
POSITION_GRACE = 0.5
# A `sync` refused `rate_limited` is sent again after its `retry_after`, this many times
# in all (DEFAULT_RETRY_AFTER when the error does not say).
MAX_SYNC_ATTEMPTS = 5
MAX_STALLS = 3  # fetches in a row that move nothing before a catch-up gives up until later


class CatchUp:
    """The catch-up part of `ChatClient`: fetches, gaps, `sync` and the log position."""

    # Set by ChatClient.__init__ (declared here for the type checker).
    name: str
    history: History
    missed_event_syncs: int
    _states: dict[int, ConversationState]
    _info: dict[int, dict[str, Any]]
    _active: set[int]
    _session: Session | None
    _gap_timers: dict[int, asyncio.TimerHandle]
    _clock: Callable[[], float]
    _rng: random.Random
    _backoff_base: float
    _backoff_max: float

    if TYPE_CHECKING:  # ChatClient's own, used here

        async def _request_on(
            self,
            session: Session,
            frame: Frame,
            reply: str,
            *,
            on_reply: Callable[[Frame], None] | None = None,
            conversation: int | None = None,
            match_without_ref: bool = True,
        ) -> Frame: ...

        def _deactivate(self, conversation_id: int, reason: str) -> None: ...

        def _applied(self, conversation_id: int, message: Message, via: Via) -> None: ...

        def _drain(self, conversation_id: int, state: ConversationState) -> None: ...

    def _state(self, conversation_id: int) -> ConversationState:
        """Return the conversation's state, creating it (cursor 0) on first sight."""
        state = self._states.get(conversation_id)
        if state is None:
            state = self._states[conversation_id] = ConversationState(conversation_id)
        return state

    def _behind(self, conversation_id: int) -> bool:
        """Return whether the conversation's log is known to go past its cursor."""
        return self._state(conversation_id).behind

    def _ensure_catch_up(
        self, conversation_id: int, session: Session | None = None, *, force: bool = False
    ) -> asyncio.Task[None] | None:
        """Start fetching `after=cursor` for a conversation unless a fetch loop already runs."""
        session = session or self._session
        if session is None:
            return None  # the next session.ready catches up
        task = session.catch_ups.get(conversation_id)
        if task is None or task.done():
            task = session.spawn(
                self._catch_up(session, conversation_id, force=force),
                f"{self.name}:catch-up:{conversation_id}",
            )
            session.catch_ups[conversation_id] = task
        return task

    async def _catch_up(self, session: Session, conversation_id: int, *, force: bool) -> None:
        """Fetch `after=cursor` until `has_more` is false and nothing known is missing."""
        state = self._state(conversation_id)
        more = force
        stalls = 0
        failures = 0
        while conversation_id in self._active and (more or state.behind):
            before = state.cursor
            try:
                batch = await self._fetch_after(session, conversation_id, state.cursor)
            except TimeoutError:
                logger.info("%s: fetch in %s timed out; again", self.name, conversation_id)
                continue
            except ConnectionLost:
                return  # the next session.ready resumes from the cursor
            except ChatError as exc:
                if exc.code == "forbidden":
                    self._deactivate(conversation_id, "forbidden")
                    return
                if exc.code not in RETRYABLE_CODES:
                    logger.warning("%s: fetch in %s failed: %s", self.name, conversation_id, exc)
                    return
                failures += 1
                await asyncio.sleep(
                    exc.retry_after
                    or full_jitter(failures - 1, self._backoff_base, self._backoff_max, self._rng)
                )
                continue
            failures = 0
            more = bool(batch.get("has_more"))
            if state.cursor > before:
                stalls = 0
                continue
            # Nothing moved: the fetch raced a live event, or the server is inconsistent.
            stalls += 1
            if stalls >= MAX_STALLS:
                logger.warning(
                    "%s: conversation %s stuck at %s (known %s); next sync retries",
                    self.name,
                    conversation_id,
                    state.cursor,
                    state.known_seq,
                )
                return

    async def _fetch_after(self, session: Session, conversation_id: int, after: int) -> Frame:
        """Fetch one page `after` a log number; the reply is applied as it arrives."""
        async with session.fetch_slots:
            frame = {
                "type": "messages.fetch",
                "conversation": conversation_id,
                "after": after,
                "limit": FETCH_LIMIT,
            }
            on_reply = functools.partial(self._apply_batch, conversation_id, after=after)
            return await self._request_on(
                session, frame, "messages.batch", on_reply=on_reply, conversation=conversation_id
            )

    def _apply_batch(self, conversation_id: int, frame: Frame, *, after: int) -> None:
        """Apply a `messages.batch` fetched with `after` (called as the reply arrives)."""
        state = self._state(conversation_id)
        applied = state.apply_batch(frame.get("messages") or [], frame.get("upto"), after=after)
        for message in applied:
            self._applied(conversation_id, message, "fetch")
        self._drain(conversation_id, state)

    def _fetch_if_still_behind(self, conversation_id: int) -> None:
        """Fetch after=cursor if the gap is still open GAP_GRACE seconds from now.

        Fetching at once (PROTOCOL.md section 1) mostly fetched a message that was
        already in flight: under concurrent sends the gap fetches were 43% of a
        gateway's CPU (docs/performance.md). A gap that the missing push closes in time
        costs nothing; one that stays open is fetched, GAP_GRACE later.
        """
        if conversation_id in self._gap_timers or self._session is None:
            return
        loop = asyncio.get_running_loop()
        self._gap_timers[conversation_id] = loop.call_later(
            GAP_GRACE, self._gap_grace_over, conversation_id
        )

    def _gap_grace_over(self, conversation_id: int) -> None:
        self._gap_timers.pop(conversation_id, None)
        if self._state(conversation_id).behind:
            self._ensure_catch_up(conversation_id)

    async def _sync_on(self, session: Session) -> list[dict[str, Any]]:
        """Send `sync` on `session`, apply the snapshot and catch up what is behind."""
        invoked_at = self._clock()
        for attempt in range(1, MAX_SYNC_ATTEMPTS + 1):
            try:
                reply = await self._request_on(
                    session,
                    {"type": "sync"},
                    "sync.state",
                    on_reply=lambda f: self._apply_snapshot(f.get("conversations") or []),
                )
                break
            except ChatError as exc:
                # Over the socket's sync budget: the server says when to ask again.
                if exc.code != "rate_limited" or attempt == MAX_SYNC_ATTEMPTS:
                    raise
                await asyncio.sleep(
                    exc.retry_after if exc.retry_after is not None else DEFAULT_RETRY_AFTER
                )
        behind = [c for c in sorted(self._active) if self._behind(c)]
        await wait_all([self._ensure_catch_up(c, session) for c in behind])
        if self._session is not session:
            raise ConnectionLost()
        self.history.record(SyncRecord(self.name, invoked_at, self._clock(), behind))
        conversations: list[dict[str, Any]] = reply.get("conversations") or []
        return conversations

    def _apply_snapshot(self, conversations: Iterable[Mapping[str, Any]]) -> None:
        """Take in a `session.ready` / `sync.state` list: it is the user's whole active set."""
        seen: set[int] = set()
        for conversation in conversations:
            conversation_id = int(conversation["id"])
            seen.add(conversation_id)
            self._state(conversation_id).note_last_seq(int(conversation.get("last_seq") or 0))
            self._info[conversation_id] = dict(conversation)
            self._active.add(conversation_id)
        for conversation_id in self._active - seen:
            self._deactivate(conversation_id, "not in the snapshot")

    def _on_pong(self, frame: Frame) -> None:
        """Compare the server's log position with ours: a difference is a missed event.

        The channel layer may drop a live event; if it was the last one of a
        conversation, nothing later reveals the gap. The `pong` of every heartbeat carries
        the sum of `last_seq` over the user's conversations: if ours is still lower
        POSITION_GRACE seconds later (an event may be in flight), or higher (a departure
        we missed), `sync` repairs it within one heartbeat.
        """
        position = frame.get("log_position")
        session = self._session
        if session is None or isinstance(position, bool) or not isinstance(position, int):
            return
        mine = self.log_position()
        if mine == position:
            return
        if mine > position:
            session.spawn(self._position_sync(session, position, 0.0), f"{self.name}:position")
        else:
            session.spawn(
                self._position_sync(session, position, POSITION_GRACE), f"{self.name}:position"
            )

    def log_position(self) -> int:
        """Return the sum of the cursors of the active conversations (compare `pong`)."""
        return sum(self._state(c).cursor for c in self._active)

    async def _position_sync(self, session: Session, position: int, grace: float) -> None:
        if grace:
            await asyncio.sleep(grace)
            if self.log_position() >= position:
                return
        logger.info(
            "%s: log position %d, server %d: a live event was missed; syncing",
            self.name,
            self.log_position(),
            position,
        )
        self.missed_event_syncs += 1
        try:
            await self._sync_on(session)
        except (TimeoutError, ChatError, ConnectionLost) as exc:
            logger.info("%s: sync after a missed event failed: %s", self.name, exc)
