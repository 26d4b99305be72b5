"""The reference WebSocket client of PROTOCOL.md sections 1-3, on `websockets`' asyncio API.

What it does, in the order a connection lives (README.md in this package says why):

1. Connect to a random gateway URL with the headers `auth()` returns (and `?device=`).
2. Read `session.ready`: note every conversation's `last_seq`; for each one whose
   `last_seq` is above its cursor, fetch `after=cursor` until `has_more` is false.
3. Flush the outbox: (re)send every unacknowledged `message.send` with its original
   `client_msg_id`, which makes the retry safe.
4. While open: apply live events through the cursor rules (`state.py`), fetch on a gap,
   send `ping` every `heartbeat_interval` and `sync` about every `sync_interval`.
5. On a lost connection: wait a full-jitter backoff and go to 1 (except after close
   codes 4401 and 4409, which stop the client).

This module holds `ChatClient`: its public API, the connection loop, the frames in and
out and the sends. Catching up (fetches, gaps, `sync`, the log position) is its base
class `CatchUp` in catchup.py; one connection and its background tasks are a `Session`
(session.py); the cursor rules are in state.py and the outbox in outbox.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import random
import time
import urllib.parse
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Literal

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.uri import get_proxy, parse_uri

from chatclient.auth import Auth
from chatclient.backoff import full_jitter
from chatclient.catchup import CatchUp
from chatclient.errors import (
    DEFAULT_RETRY_AFTER,
    RETRYABLE_CODES,
    ChatError,
    ConnectionLost,
    SessionClosed,
)
from chatclient.history import History, ReconnectRecord, RecvRecord, SendRecord, Via
from chatclient.outbox import Outbox, OutboxEntry
from chatclient.session import Frame, Pending, Session, close_code, parse_frame, safe_url, wait_all
from chatclient.state import ConversationState, Message, Offer

logger = logging.getLogger(__name__)

# What `wait_for` predicates and `on_event` see: a server frame, or for every message
# applied to a view `{"type": "message.applied", "conversation", "via", "message"}`.
Update = dict[str, Any]

AUTH_FAILED = 4401
EVICTED = 4409
# Seconds between periodic `sync`s (on average; see `_periodic_sync`). A lost message is
# found sooner, by the `pong`'s log position, within a heartbeat.
SYNC_INTERVAL = 300.0

# Seconds between `ping`s when `session.ready` names no `heartbeat_interval`.
DEFAULT_HEARTBEAT_INTERVAL = 25.0
# A connection with no frame for two heartbeats and this many seconds more is dropped.
SILENCE_GRACE = 5.0

# Close codes after which reconnecting cannot help (4429 too slow and 4408 idle can).
TERMINAL_CLOSE_CODES = frozenset({AUTH_FAILED, EVICTED})
# Handshake statuses that mean "your credentials were refused": a consumer that closes
# before accepting makes the ASGI server answer 403.
AUTH_FAILED_STATUSES = frozenset({401, 403})

_names = itertools.count(1)

# Timeouts use `asyncio.timeout()`, never `asyncio.wait_for()`: on Python 3.11 wait_for
# swallows a cancellation that arrives as the awaited thing completes, which leaves a
# cancelled background task running forever.


@functools.cache
def proxy_for(url: str) -> str | None:
    """Return the proxy the system configures for `url` (None: connect directly).

    Looked up once per process and address: websockets would read every environment
    variable again on each connect (`proxy=True`), which was a twelfth of the load
    generator's CPU while 2,000 clients reconnected at once.
    """
    return get_proxy(parse_uri(url))


class ChatClient(CatchUp):
    """Keep a user's conversations in sync over one WebSocket, across reconnects.

    Start it with `await client.connect()` (or `async with ChatClient(...) as client`),
    stop it with `await client.close()`. All methods run on the event loop that called
    `connect()`.
    """

    def __init__(
        self,
        urls: Sequence[str],
        auth: Auth,
        *,
        device: str | None = None,
        name: str = "",
        history: History | None = None,
        reconnect: bool = True,
        backoff_base: float = 0.2,
        backoff_max: float = 5.0,
        send_timeout: float = 10.0,
        sync_interval: float = SYNC_INTERVAL,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        on_message: Callable[[Message, Via], None] | None = None,
        on_event: Callable[[Update], None] | None = None,
    ) -> None:
        """Configure the client; nothing connects until `connect()`.

        `urls` are gateway URLs (`ws://host:port/ws/v1/`), one picked at random per
        connect. `auth()` returns the handshake headers, called on every connect.
        `send_timeout` bounds every wait for a reply (a send is then retried).
        `sync_interval <= 0` turns the periodic `sync` off. `rng` makes the gateway
        choice and the backoff jitter reproducible. `on_message(message, via)` sees
        every message version applied to a view; `on_event(frame)` every other frame.
        """
        if not urls:
            raise ValueError("at least one gateway URL is needed")
        for url in urls:
            if urllib.parse.urlsplit(url).scheme not in ("ws", "wss"):
                raise ValueError(f"gateway URLs must be ws:// or wss://, not {url!r}")
        self.name = name or f"client-{next(_names)}"
        self.device = device
        self.history = history if history is not None else History()
        self.on_message = on_message
        self.on_event = on_event
        self.user: dict[str, Any] | None = None
        # (conversation, message) ids this user deleted for themself, heard live.
        self.hidden: set[tuple[int, int]] = set()
        self.heartbeat_interval: float | None = None
        self.closed_code: int | None = None
        self.gateway_url: str | None = None
        self.reconnect_durations: list[float] = []
        # How often a `pong` revealed a missed live event (see `_on_pong`).
        self.missed_event_syncs = 0
        # How often a connection that went silent was dropped (see `_heartbeat`).
        self.silent_drops = 0

        self._urls = list(urls)
        self._auth = auth
        self._reconnect = reconnect
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._send_timeout = send_timeout
        self._sync_interval = sync_interval
        self._clock = clock
        # Gateway choice and jitter need spread, not secrecy.
        self._rng = rng or random.Random()  # noqa: S311
        # The gateway that asked us to leave (`reconnect`): not chosen for the next
        # connection attempt while another address is known.
        self._leaving: str | None = None
        self.drain_moves = 0

        self._states: dict[int, ConversationState] = {}
        self._info: dict[int, dict[str, Any]] = {}
        self._active: set[int] = set()
        self._outbox = Outbox()
        self._send_waiters: dict[str, asyncio.Future[Message]] = {}
        self._pending: dict[str, Pending] = {}
        self._waiters: list[tuple[Callable[[Update], bool], asyncio.Future[Update]]] = []
        self._refs = itertools.count(1)
        self._session: Session | None = None
        # Set while a session is ready, and (for good) once the client has stopped.
        self._connected = asyncio.Event()
        self._outbox_wakeup = asyncio.Event()
        self._run_task: asyncio.Task[None] | None = None
        self._terminal: SessionClosed | None = None
        self._dropped_at: float | None = None
        self._gap_timers: dict[int, asyncio.TimerHandle] = {}

    # ------------------------------------------------------------------ lifecycle

    async def connect(self, timeout: float | None = 30.0) -> None:
        """Start the connection loop and wait for the first `session.ready`."""
        if self._terminal is not None:
            raise self._terminal
        if self._run_task is None:
            self._run_task = asyncio.create_task(self._run(), name=f"chatclient:{self.name}")
            self._run_task.add_done_callback(self._on_run_done)
        await self._wait_connected(timeout)

    async def close(self) -> None:
        """Close the connection and stop; unfinished sends fail with SessionClosed."""
        self._stop(SessionClosed(None))
        task = self._run_task
        if task is not None and not task.done():
            task.cancel()
            # asyncio.wait, not `await task`: a cancellation of close() itself must propagate.
            await asyncio.wait({task})

    def drop(self) -> bool:
        """Cut the connection as a network loss would (no close handshake); return if open.

        The client then behaves as after any loss: it reconnects with backoff and
        catches up. For load and fault tests (a reconnect storm).
        """
        session = self._session
        if session is None or session.ws.transport is None:
            return False
        session.ws.transport.abort()
        return True

    async def __aenter__(self) -> ChatClient:
        """Connect (see `connect`)."""
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close (see `close`)."""
        await self.close()

    @property
    def connected(self) -> bool:
        """Return whether a session is open (`session.ready` received, not lost)."""
        return self._session is not None

    @property
    def closed(self) -> bool:
        """Return whether the client has stopped for good."""
        return self._terminal is not None

    # ------------------------------------------------------------------ local view

    @property
    def conversations(self) -> list[int]:
        """Return the ids of the conversations the user is in, as last known."""
        return sorted(self._active)

    def conversation(self, conversation_id: int) -> dict[str, Any] | None:
        """Return the conversation as the last snapshot or update described it."""
        info = self._info.get(conversation_id)
        return dict(info) if info is not None else None

    def cursor(self, conversation_id: int) -> int:
        """Return the conversation's cursor (0 if nothing was applied)."""
        state = self._states.get(conversation_id)
        return state.cursor if state is not None else 0

    def view(self, conversation_id: int) -> list[Message]:
        """Return the conversation's messages in seq order (deleted ones included)."""
        state = self._states.get(conversation_id)
        return state.view() if state is not None else []

    def views(self) -> dict[int, list[Message]]:
        """Return the view of every conversation ever seen, including ones since left."""
        return {c: state.view() for c, state in sorted(self._states.items())}

    @property
    def pending_sends(self) -> int:
        """Return the number of sends waiting for their `message.sent`."""
        return len(self._outbox)

    # ------------------------------------------------------------------ waiting

    async def wait_for(
        self, predicate: Callable[[Update], bool], timeout: float | None = 10.0
    ) -> Update:
        """Return the first update satisfying `predicate` (raise TimeoutError after `timeout`).

        Messages already in a view count (as `message.applied` with `via: "view"`);
        other events count only from this call on, so start waiting before you act.
        """
        for conversation_id, state in self._states.items():
            for message in state.view():
                update = _applied_update(conversation_id, message, "view")
                if predicate(update):
                    return update
        future = self._watch(predicate)
        try:
            async with asyncio.timeout(timeout):
                return await future
        finally:
            self._unwatch(future)

    async def wait_for_message(
        self, predicate: Callable[[Message], bool], timeout: float | None = 10.0
    ) -> Message:
        """Return the first message (in a view already, or applied later) satisfying `predicate`."""
        update = await self.wait_for(
            lambda u: u.get("type") == "message.applied" and predicate(u["message"]), timeout
        )
        message: Message = update["message"]
        return message

    # ------------------------------------------------------------------ requests

    async def send(
        self,
        conversation_id: int,
        body: str,
        *,
        client_msg_id: str | None = None,
        attachments: Sequence[int] = (),
        reply_to: int | None = None,
        timeout: float | None = None,
    ) -> Message:
        """Send a message and return it as stored; retry with the same id until answered.

        `reply_to` quotes a message of the conversation (its id).

        Retries on `unavailable`, on `rate_limited` (after `retry_after`), on a lost
        connection and on `send_timeout` without a reply. Raises ChatError on any other
        error, SessionClosed if the client stops first, and TimeoutError after `timeout`
        (the send is then abandoned: its outcome is unknown).
        """
        if self._terminal is not None:
            raise self._terminal
        cmid = client_msg_id or str(uuid.uuid4())
        if cmid in self._outbox:
            raise ValueError(f"a send with client_msg_id {cmid} is already in progress")
        invoked_at = self._clock()
        entry = OutboxEntry(conversation_id, body, cmid, list(attachments), reply_to)
        waiter: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._outbox.add(entry)
        self._send_waiters[cmid] = waiter
        self._outbox_wakeup.set()
        try:
            async with asyncio.timeout(timeout):
                message = await waiter
        except (TimeoutError, asyncio.CancelledError) as exc:
            self._abandon_send(cmid)
            code = "timeout" if isinstance(exc, TimeoutError) else "cancelled"
            self._record_send(entry, invoked_at, "unknown" if entry.attempts else "fail", code)
            raise
        except SessionClosed:
            self._record_send(entry, invoked_at, "unknown" if entry.attempts else "fail", "closed")
            raise
        except ChatError as exc:
            self._record_send(entry, invoked_at, "fail", exc.code)
            raise
        self._record_send(entry, invoked_at, "ok", None, message)
        return message

    async def fetch(
        self,
        conversation_id: int,
        after: int | None = None,
        before: int | None = None,
        limit: int = 100,
    ) -> Frame:
        """Send `messages.fetch` and return the `messages.batch`.

        A fetch with `after <= cursor` is applied to the view and moves the cursor to
        `upto`; a scrollback (`before`) or one above the cursor is only returned.
        """
        frame: Frame = {"type": "messages.fetch", "conversation": conversation_id, "limit": limit}
        on_reply: Callable[[Frame], None] | None = None
        if after is not None:
            frame["after"] = after
            if before is None:
                on_reply = functools.partial(self._apply_batch, conversation_id, after=after)
        if before is not None:
            frame["before"] = before
        return await self._request(frame, "messages.batch", on_reply, conversation_id)

    async def sync(self) -> list[dict[str, Any]]:
        """Send `sync`, apply the `sync.state` snapshot, fetch what is behind; return it."""
        session = await self._wait_connected(self._send_timeout)
        return await self._sync_on(session)

    async def ping(self) -> Frame:
        """Send `ping` and return the `pong`."""
        return await self._request({"type": "ping"}, "pong")

    async def mark_read(self, conversation_id: int, seq: int) -> None:
        """Raise the read marker (and the delivered one) to `seq`; no reply."""
        frame = {"type": "receipt.read", "conversation": conversation_id, "seq": seq}
        await self._send_frame(frame)

    async def mark_delivered(self, conversation_id: int, seq: int) -> None:
        """Raise the delivered marker to `seq`; no reply."""
        await self._send_frame(
            {"type": "receipt.delivered", "conversation": conversation_id, "seq": seq}
        )

    async def typing(self, conversation_id: int, state: Literal["start", "stop"]) -> None:
        """Send `typing.start` or `typing.stop` (a start expires after 10 s unrefreshed)."""
        if state not in ("start", "stop"):
            raise ValueError("state must be 'start' or 'stop'")
        await self._send_frame({"type": f"typing.{state}", "conversation": conversation_id})

    async def edit(self, conversation_id: int, message_id: int, body: str) -> Message:
        """Edit a message; return it as updated (once applied to the view)."""
        frame = {
            "type": "message.edit",
            "conversation": conversation_id,
            "message": message_id,
            "body": body,
        }
        return await self._change(conversation_id, message_id, frame)

    async def delete(self, conversation_id: int, message_id: int) -> Message:
        """Delete a message; return it as updated (`deleted: true`, body emptied)."""
        frame = {"type": "message.delete", "conversation": conversation_id, "message": message_id}
        return await self._change(conversation_id, message_id, frame)

    async def react(
        self, conversation_id: int, message_id: int, emoji: str, *, add: bool = True
    ) -> Message:
        """Add (or, with `add=False`, take back) this user's emoji reaction to a message.

        Return the message as updated: its `reactions` list each emoji with its count and
        users. Adding a reaction already there (or removing one that is not) is harmless.
        """
        frame = {
            "type": "reaction.add" if add else "reaction.remove",
            "conversation": conversation_id,
            "message": message_id,
            "emoji": emoji,
        }
        return await self._change(conversation_id, message_id, frame)

    # ------------------------------------------------------------------ the connection loop

    async def _run(self) -> None:
        """Connect, serve, and reconnect with full-jitter backoff until stopped."""
        attempt = 0
        while True:
            others = [u for u in self._urls if safe_url(u) != self._leaving]
            url = self._rng.choice(others or self._urls)
            # Avoided for one attempt only: the drained gateway restarts, and the others
            # may be going away too (a rolling restart).
            self._leaving = None
            code, was_ready = await self._connect_once(url)
            if was_ready:
                attempt = 0
            if code in TERMINAL_CLOSE_CODES:
                logger.warning("%s: closed by the server with %s; stopping", self.name, code)
                self._stop(SessionClosed(code))
                return
            if not self._reconnect:
                self._stop(SessionClosed(code, f"connection ended ({code}); reconnect is off"))
                return
            delay = full_jitter(attempt, self._backoff_base, self._backoff_max, self._rng)
            attempt += 1
            logger.info("%s: reconnecting in %.3f s (close code %s)", self.name, delay, code)
            await asyncio.sleep(delay)

    async def _connect_once(self, url: str) -> tuple[int | None, bool]:
        """Open one connection and serve it; return (close code, whether it got ready)."""
        try:
            headers = await self._auth()
        except ChatError as exc:
            # A refused credential (e.g. a refresh the server rejects) cannot get better by
            # retrying; an unreachable token endpoint can.
            logger.warning("%s: auth() failed: %s", self.name, exc.code)
            return (None if exc.code in RETRYABLE_CODES else AUTH_FAILED), False
        try:
            ws = await connect(
                self._with_device(url),
                additional_headers=headers,
                proxy=proxy_for(url),
                open_timeout=self._send_timeout,
                # A batch of 200 messages of up to 100,000 characters has no sensible
                # fixed cap; the server is trusted to bound what it sends.
                max_size=None,
                compression=None,
                # No protocol pings: the `ping` heartbeat, which the server answers, shows
                # a dead connection (`_heartbeat`). The library's own keepalive (every 20 s)
                # only doubled the frames each idle socket costs the gateway.
                ping_interval=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            logger.warning(
                "%s: %s refused the handshake: HTTP %s", self.name, safe_url(url), status
            )
            return (AUTH_FAILED if status in AUTH_FAILED_STATUSES else None), False
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            logger.info("%s: cannot connect to %s: %s", self.name, safe_url(url), exc)
            return None, False
        try:
            return await self._serve(ws, url)
        finally:
            await ws.close()

    async def _serve(self, ws: ClientConnection, url: str) -> tuple[int | None, bool]:
        """Read `session.ready`, then every frame until the connection closes."""
        try:
            async with asyncio.timeout(self._send_timeout):
                first = parse_frame(await ws.recv())
        except ConnectionClosed as exc:
            return close_code(exc), False
        except TimeoutError:
            logger.warning("%s: no session.ready from %s", self.name, safe_url(url))
            return None, False
        if first is None or first.get("type") != "session.ready":
            logger.warning("%s: the first frame was not session.ready: %.200r", self.name, first)
            return None, False
        session = Session(ws, safe_url(url))
        code: int | None = None
        try:
            self._begin(session, first)
            while True:
                raw = await ws.recv()
                session.last_frame_at = time.monotonic()
                frame = parse_frame(raw)
                if frame is None:
                    continue
                try:
                    self._dispatch(frame)
                except (KeyError, TypeError, ValueError):
                    logger.exception("%s: cannot handle frame %.200r", self.name, frame)
        except ConnectionClosed as exc:
            code = close_code(exc)
        finally:
            await self._end(session, code)
        return code, True

    def _begin(self, session: Session, ready: Frame) -> None:
        """Take in `session.ready` and start the session's background work."""
        now = self._clock()
        self.user = ready.get("user")
        if isinstance(ready.get("device"), str):
            # Reuse a server-assigned device id on reconnects: it is the same install.
            self.device = ready["device"]
        interval = ready.get("heartbeat_interval")
        self.heartbeat_interval = (
            float(interval)
            if isinstance(interval, int | float) and interval > 0
            else DEFAULT_HEARTBEAT_INTERVAL
        )
        self._apply_snapshot(ready.get("conversations") or [])
        self._session = session
        self.gateway_url = session.url
        if self._dropped_at is not None:
            self.history.record(ReconnectRecord(self.name, self._dropped_at, now, session.url))
            self.reconnect_durations.append(now - self._dropped_at)
            self._dropped_at = None
        self._connected.set()
        session.spawn(self._resume(session), f"{self.name}:resume")
        session.spawn(self._heartbeat(session, self.heartbeat_interval), f"{self.name}:ping")
        if self._sync_interval > 0:
            session.spawn(self._periodic_sync(session), f"{self.name}:sync")
        self._emit(ready)

    async def _end(self, session: Session, code: int | None) -> None:
        """Tear a session down: stop its tasks, fail its requests, requeue its sends."""
        if self._terminal is None:
            self._dropped_at = self._clock()
        self._session = None
        for timer in self._gap_timers.values():
            timer.cancel()  # the next session.ready catches every conversation up
        self._gap_timers.clear()
        if self._terminal is None:
            self._connected.clear()
        await session.stop()
        self._outbox.connection_lost()
        for pending in list(self._pending.values()):
            if not pending.future.done():
                pending.future.set_exception(ConnectionLost())
        self._emit({"type": "client.disconnected", "code": code, "gateway_url": session.url})

    async def _resume(self, session: Session) -> None:
        """Catch up every conversation that is behind, then flush the outbox."""
        tasks = [self._ensure_catch_up(c, session) for c in sorted(self._active) if self._behind(c)]
        await wait_all(tasks)
        await self._pump_outbox(session)

    async def _heartbeat(self, session: Session, interval: float) -> None:
        """Send `ping` every `interval` seconds; drop a connection that went silent.

        The server answers every `ping`, so a connection with no frame for two intervals
        and `SILENCE_GRACE` seconds is dead even if the operating system has not noticed
        (a gateway that vanished, a network that drops everything): it is aborted and
        the client reconnects, as after any loss.
        """
        while True:
            await asyncio.sleep(interval)
            silent_for = time.monotonic() - session.last_frame_at
            if silent_for > 2 * interval + SILENCE_GRACE:
                logger.info(
                    "%s: no frame from %s for %.1f s; reconnecting",
                    self.name,
                    session.url,
                    silent_for,
                )
                self.silent_drops += 1
                session.ws.transport.abort()
                return
            try:
                # A ref nobody waits for: the pong is only emitted as an event.
                await session.send({"type": "ping", "ref": f"hb{next(self._refs)}"})
            except ConnectionClosed:
                return

    async def _periodic_sync(self, session: Session) -> None:
        """Send `sync` about every `sync_interval` seconds (0.5 to 1.5 of it, at random).

        The safety net for what the `pong`'s log position cannot show: a lost change of
        the user's own conversation state (a mute, a read on another device). Spread at
        random, so clients that connected together (after a restart) do not sync together.
        """
        while True:
            await asyncio.sleep(self._sync_interval * self._rng.uniform(0.5, 1.5))
            try:
                await self._sync_on(session)
            except (TimeoutError, ChatError) as exc:
                logger.info("%s: periodic sync failed: %s", self.name, exc)

    def _on_run_done(self, task: asyncio.Task[None]) -> None:
        """Stop the client if the connection loop died of a bug (and log it)."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            logger.error("%s: the connection loop crashed", self.name, exc_info=exc)
            self._stop(SessionClosed(None, f"the client crashed: {exc!r}"))

    def _stop(self, reason: SessionClosed) -> None:
        """Stop for good: fail every waiting send, request and waiter with `reason`."""
        if self._terminal is not None:
            return
        self._terminal = reason
        self.closed_code = reason.close_code
        for cmid in list(self._send_waiters):
            self._finish_send(cmid, reason)
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(reason)
        for _, future in self._waiters:
            if not future.done():
                future.set_exception(reason)
        self._connected.set()  # wake whoever waits for a connection: they see the reason

    async def _wait_connected(self, timeout: float | None) -> Session:
        """Return the open session, waiting up to `timeout` for one."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if self._terminal is not None:
                raise self._terminal
            if self._session is not None:
                return self._session
            if self._run_task is None:
                raise RuntimeError("call connect() first")
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            async with asyncio.timeout(remaining):
                await self._connected.wait()

    # ------------------------------------------------------------------ frames in

    def _dispatch(self, frame: Frame) -> None:
        """Handle one server frame (never awaits, so frames are handled in arrival order)."""
        kind = frame.get("type")
        if kind in ("message.created", "message.updated"):
            message = frame.get("message")
            if isinstance(message, dict):
                self._offer(int(message["conversation"]), message, "live")
            if isinstance(frame.get("ref"), str):
                self._resolve(frame)  # a server that echoes the ref of an edit or delete
            return
        if kind == "message.sent":
            self._on_sent(frame)
        elif kind == "error":
            self._on_error(frame)
        elif kind == "conversation.updated":
            self._on_conversation_updated(frame)
        elif kind == "session.ready":
            logger.warning("%s: session.ready in the middle of a session; ignored", self.name)
        elif kind == "reconnect":
            self._on_reconnect(frame)
        elif kind == "message.hidden":
            # Deleted for me on one of this user's devices; `hidden_since` catches up.
            self.hidden.add((int(frame["conversation"]), int(frame["message"])))
        elif kind == "pong":
            self._on_pong(frame)
            self._resolve(frame)
        else:
            self._resolve(frame)  # replies: messages.batch, sync.state, pong, ...
        self._emit(frame)

    def _on_reconnect(self, frame: Frame) -> None:
        """Leave a draining gateway after the delay it chose, then connect to another."""
        session = self._session
        if session is None:
            return
        after_ms = frame.get("after_ms")
        delay = max(0.0, float(after_ms) / 1000) if isinstance(after_ms, int | float) else 0.0
        self._leaving = session.url
        self.drain_moves += 1

        async def leave() -> None:
            await asyncio.sleep(delay)
            # The close ends `_serve`; `_run` connects again at once (the session was ready).
            await session.ws.close(code=1000, reason="gateway draining")

        session.spawn(leave(), f"{self.name}:drain")

    def _resolve(self, frame: Frame) -> None:
        """Complete the request this reply answers, if any."""
        ref = frame.get("ref")
        key: str | None = ref if isinstance(ref, str) and ref in self._pending else None
        if key is None and ref is None:
            key = next(
                (
                    k
                    for k, p in self._pending.items()
                    if p.match_without_ref
                    and p.reply == frame.get("type")
                    and p.conversation in (None, frame.get("conversation"))
                    and not p.future.done()
                ),
                None,
            )
        pending = self._pending.get(key) if key is not None else None
        if pending is None or pending.future.done():
            return
        if pending.on_reply is not None:
            pending.on_reply(frame)
        pending.future.set_result(frame)

    def _on_sent(self, frame: Frame) -> None:
        """Apply the stored message of a `message.sent` and complete its send."""
        message = frame.get("message")
        cmid = frame.get("client_msg_id")
        if isinstance(message, dict):
            cmid = cmid or message.get("client_msg_id")
            self._offer(int(message["conversation"]), message, "reply")
        if isinstance(cmid, str) and isinstance(message, dict):
            self._finish_send(cmid, message)

    def _on_error(self, frame: Frame) -> None:
        """Route an `error` to the send or request it answers (else it is only emitted)."""
        error = ChatError.from_frame(frame)
        cmid = frame.get("client_msg_id")
        entry = self._outbox.by_ref(error.ref) or self._outbox.get(
            cmid if isinstance(cmid, str) else None
        )
        if entry is not None:
            self._on_send_error(entry, error)
            return
        pending = self._pending.get(error.ref) if error.ref is not None else None
        if pending is not None and not pending.future.done():
            pending.future.set_exception(error)
            return
        logger.info("%s: server error not tied to a request: %s", self.name, error)

    def _on_send_error(self, entry: OutboxEntry, error: ChatError) -> None:
        """Schedule the retry of a send after a transient error, or fail it."""
        now = asyncio.get_running_loop().time()
        # A transient error answering an older attempt says nothing about the current one.
        current = error.ref is None or error.ref == entry.ref
        if error.code == "rate_limited":
            if current:
                wait = error.retry_after if error.retry_after is not None else DEFAULT_RETRY_AFTER
                self._outbox.defer(entry, now + wait)
        elif error.code == "unavailable":
            if current:
                entry.failures += 1
                delay = full_jitter(
                    entry.failures - 1, self._backoff_base, self._backoff_max, self._rng
                )
                self._outbox.defer(entry, now + delay)
        else:
            self._finish_send(entry.client_msg_id, error)
        self._outbox_wakeup.set()

    def _on_conversation_updated(self, frame: Frame) -> None:
        """Track joins and departures: fetch a new conversation's log, drop a left one."""
        conversation = frame.get("conversation")
        reason = frame.get("reason")
        if isinstance(conversation, dict):
            conversation_id = int(conversation["id"])
            self._info[conversation_id] = {**self._info.get(conversation_id, {}), **conversation}
        else:
            conversation_id = int(str(conversation))
        if reason in ("left", "removed"):
            self._deactivate(conversation_id, str(reason))
        elif reason in ("created", "joined"):
            state = self._state(conversation_id)
            if isinstance(conversation, dict) and "last_seq" in conversation:
                state.note_last_seq(int(conversation["last_seq"]))
            self._active.add(conversation_id)
            self._ensure_catch_up(conversation_id, force=True)

    def _offer(self, conversation_id: int, message: Message, via: Via) -> None:
        """Put one message through the cursor rules; fetch on a gap."""
        if conversation_id not in self._active:
            # The server sends events only to members: a join notice may still be on its way.
            logger.info("%s: event for conversation %s not active", self.name, conversation_id)
            self._active.add(conversation_id)
        state = self._state(conversation_id)
        outcome = state.offer(message)
        if outcome is Offer.APPLIED:
            self._applied(conversation_id, message, via)
            self._drain(conversation_id, state)
        elif outcome is Offer.GAP:
            state.hold(message, via)
            self._fetch_if_still_behind(conversation_id)

    def _drain(self, conversation_id: int, state: ConversationState) -> None:
        """Apply the held messages the last applied one made next in line."""
        for held, via in state.drain():
            self._applied(conversation_id, held, via)  # type: ignore[arg-type]

    def _deactivate(self, conversation_id: int, reason: str) -> None:
        """Drop a conversation from the active set; its view stays readable."""
        if conversation_id in self._active:
            logger.info("%s: leaving conversation %s (%s)", self.name, conversation_id, reason)
        self._active.discard(conversation_id)

    def _applied(self, conversation_id: int, message: Message, via: Via) -> None:
        """Record a message version that reached the view, and tell the listeners."""
        self.history.record(
            RecvRecord(
                client=self.name,
                conversation=conversation_id,
                seq=int(message["seq"]),
                version=int(message["version"]),
                message_id=int(message["id"]),
                client_msg_id=message.get("client_msg_id"),
                sender=message.get("sender"),
                received_at=self._clock(),
                via=via,
            )
        )
        if self.on_message is not None:
            try:
                self.on_message(message, via)
            except Exception:
                logger.exception("%s: on_message raised", self.name)
        self._notify(_applied_update(conversation_id, message, via))

    def _emit(self, frame: Update) -> None:
        """Tell the listeners about a frame that is not an applied message."""
        if self.on_event is not None:
            try:
                self.on_event(frame)
            except Exception:
                logger.exception("%s: on_event raised", self.name)
        self._notify(frame)

    def _notify(self, update: Update) -> None:
        """Resolve the `wait_for` waiters this update satisfies."""
        for predicate, future in self._waiters:
            if future.done():
                continue
            try:
                matched = predicate(update)
            except Exception as exc:  # noqa: BLE001 (the waiter gets its predicate's error)
                future.set_exception(exc)
                continue
            if matched:
                future.set_result(update)
        self._waiters = [(p, f) for p, f in self._waiters if not f.done()]

    def _watch(self, predicate: Callable[[Update], bool]) -> asyncio.Future[Update]:
        """Return a future resolved by the next update satisfying `predicate`."""
        future: asyncio.Future[Update] = asyncio.get_running_loop().create_future()
        if self._terminal is not None:
            future.set_exception(self._terminal)
        else:
            self._waiters.append((predicate, future))
        return future

    def _unwatch(self, future: asyncio.Future[Update]) -> None:
        """Forget a waiter (done or abandoned)."""
        self._waiters = [(p, f) for p, f in self._waiters if f is not future]
        if not future.done():
            future.cancel()

    # ------------------------------------------------------------------ edits and deletes

    async def _change(self, conversation_id: int, message_id: int, frame: Frame) -> Message:
        """Send an edit or delete and wait for its new version to reach the view."""
        session = await self._wait_connected(self._send_timeout)
        current = self._state(conversation_id).get(message_id)
        old_version = int(current["version"]) if current is not None else 0

        def changed(update: Update) -> bool:
            message = update.get("message") or {}
            return (
                update.get("type") == "message.applied"
                and message.get("id") == message_id
                and int(message.get("version", 0)) > old_version
            )

        watch = self._watch(changed)
        answer = asyncio.ensure_future(
            self._request_on(session, frame, "message.updated", match_without_ref=False)
        )
        try:
            await asyncio.wait({watch, answer}, return_when=asyncio.FIRST_COMPLETED)
            if watch.done():
                update = watch.result()
                message: Message = update["message"]
                return message
            error = answer.exception()
            if error is not None and not isinstance(error, TimeoutError):
                raise error
            if error is None and current is not None:
                answered: Message = answer.result().get("message") or {}
                if int(answered.get("version", 0)) <= old_version:
                    return current  # nothing to change (a repeated reaction): no new version
            # Answered but not applied (a gap), or no answer: the log has the truth.
            for _ in range(2):
                task = self._ensure_catch_up(conversation_id, force=True)
                await wait_all([task])
                stored = self._state(conversation_id).get(message_id)
                if stored is not None and int(stored["version"]) > old_version:
                    return stored
            raise TimeoutError(f"no new version of message {message_id} arrived")
        finally:
            self._unwatch(watch)
            if not answer.done():
                answer.cancel()
            await asyncio.gather(answer, return_exceptions=True)

    # ------------------------------------------------------------------ frames out

    async def _request(
        self,
        frame: Frame,
        reply: str,
        on_reply: Callable[[Frame], None] | None = None,
        conversation: int | None = None,
    ) -> Frame:
        """Send a request once connected and return its reply (ChatError on an error)."""
        session = await self._wait_connected(self._send_timeout)
        return await self._request_on(
            session, frame, reply, on_reply=on_reply, conversation=conversation
        )

    async def _request_on(
        self,
        session: Session,
        frame: Frame,
        reply: str,
        *,
        on_reply: Callable[[Frame], None] | None = None,
        conversation: int | None = None,
        match_without_ref: bool = True,
    ) -> Frame:
        """Send a request on `session` with a fresh ref and wait `send_timeout` for its reply."""
        ref = f"r{next(self._refs)}"
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._pending[ref] = Pending(reply, future, on_reply, match_without_ref, conversation)
        try:
            try:
                await session.send({**frame, "ref": ref})
            except ConnectionClosed as exc:
                raise ConnectionLost() from exc
            async with asyncio.timeout(self._send_timeout):
                return await future
        finally:
            del self._pending[ref]

    async def _send_frame(self, frame: Frame) -> None:
        """Send a frame that has no reply (an error, if any, is emitted as an event)."""
        session = await self._wait_connected(self._send_timeout)
        try:
            await session.send({**frame, "ref": f"r{next(self._refs)}"})
        except ConnectionClosed as exc:
            raise ConnectionLost() from exc

    async def _pump_outbox(self, session: Session) -> None:
        """Send due outbox entries, oldest first, for as long as the session lives."""
        loop = asyncio.get_running_loop()
        while True:
            self._outbox_wakeup.clear()
            for entry in self._outbox.due(loop.time()):
                now = loop.time()
                if not self._outbox.is_due(entry, now):
                    continue  # answered while an earlier entry was being sent
                if entry.in_flight:
                    logger.info("%s: no reply to %s; retrying", self.name, entry.client_msg_id)
                ref = f"r{next(self._refs)}"
                self._outbox.mark_sent(entry, ref, now, self._send_timeout)
                try:
                    await session.send(entry.frame(ref))
                except ConnectionClosed:
                    return  # the reader sees the close; the next session re-sends
            wakeup = self._outbox.next_wakeup()
            delay = None if wakeup is None else max(0.0, wakeup - loop.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._outbox_wakeup.wait()

    def _finish_send(self, cmid: str, result: Message | ChatError) -> None:
        """Complete a send with its stored message or its error, and drop it from the outbox."""
        self._outbox.remove(cmid)
        waiter = self._send_waiters.pop(cmid, None)
        if waiter is None or waiter.done():
            return
        if isinstance(result, ChatError):
            waiter.set_exception(result)
        else:
            waiter.set_result(result)

    def _abandon_send(self, cmid: str) -> None:
        """Give up on a send: it is no longer retried (a late `message.sent` still applies)."""
        self._outbox.remove(cmid)
        waiter = self._send_waiters.pop(cmid, None)
        if waiter is not None and not waiter.done():
            waiter.cancel()

    def _record_send(
        self,
        entry: OutboxEntry,
        invoked_at: float,
        outcome: Literal["ok", "fail", "unknown"],
        error_code: str | None,
        message: Message | None = None,
    ) -> None:
        """Record the outcome of one `send()` call."""
        self.history.record(
            SendRecord(
                client=self.name,
                conversation=entry.conversation,
                client_msg_id=entry.client_msg_id,
                invoked_at=invoked_at,
                completed_at=self._clock(),
                outcome=outcome,
                seq=int(message["seq"]) if message is not None else None,
                message_id=int(message["id"]) if message is not None else None,
                error_code=error_code,
                attempts=entry.attempts,
            )
        )

    def _with_device(self, url: str) -> str:
        """Return `url` with `?device=<id>` added when the client has a device id."""
        if not self.device:
            return url
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        query = [(k, v) for k, v in query if k != "device"] + [("device", self.device)]
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def _applied_update(conversation_id: int, message: Message, via: str) -> Update:
    """Build the update that announces an applied message."""
    return {
        "type": "message.applied",
        "conversation": conversation_id,
        "via": via,
        "message": message,
    }
