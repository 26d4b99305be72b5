"""A WebSocket that speaks in JSON frames: parse, look up the handler, answer, map errors.

`FrameSocket` is the socket lifetime every consumer shares: frames over the size limit
close with 1009, shapes are checked by the parser the consumer's table names, a
`DomainError` becomes an `error` frame, a database failure `unavailable`, a bug
`internal_error` (logged), and a client that does not read is closed with 4429. A
well-formed frame over its class's per-socket budget (`chatsite.gateway.budgets`) is
answered `rate_limited` with `retry_after` instead of being handled. The consumer
(`messaging.consumers.ChatConsumer`) adds the table, the frame classes and the calls.

It also counts for `/metrics` (`chatsite.metrics`): frames in and out by type, the send
latency (`message.send` in to `message.sent` out) and each close by its code.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, ClassVar, cast

import orjson
from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError
from redis.exceptions import RedisError
from uvicorn.protocols.utils import ClientDisconnected

from accounts.models import User
from chatsite import metrics
from chatsite.errors import (
    BadRequest,
    DomainError,
    InternalError,
    RateLimited,
    Unavailable,
    UnknownType,
)
from chatsite.gateway.auth import Credential
from chatsite.gateway.budgets import FrameBudgets
from chatsite.gateway.dbthreads import Shed
from chatsite.gateway.supervisor import CLOSE_UNAUTHENTICATED, supervisor
from chatsite.gateway.websocket import SEND_TIMEOUT_EXTENSION
from chatsite.limits import DEVICE_ID_PATTERN, MAX_FRAME_BYTES
from chatsite.logs import correlation_id, new_id, trace
from messaging import frames, wire

logger = logging.getLogger(__name__)

DEVICE_RE = re.compile(DEVICE_ID_PATTERN)
CLOSE_TOO_SLOW = 4429
CLOSE_TRY_LATER = 1013
Parser = Callable[[dict[str, Any]], Any]
Handler = Callable[[Any, Any, str | None], Awaitable[None]]
# A socket's sources (the client's frames, the channel layer's events) and its dispatch.
Receive = Callable[[], Awaitable[dict[str, Any]]]
Dispatch = Callable[[dict[str, Any]], Awaitable[None]]

_frames_in = metrics.FRAMES_RECEIVED.knowing(frames.CLIENT_FRAMES)
_frames_out = metrics.FRAMES_SENT.knowing(wire.FRAMES)


def encode(frame: Any) -> str:
    """Return the JSON text of a frame as it goes on the wire.

    orjson gives what `json.dumps(frame, ensure_ascii=False, separators=(",", ":"))`
    gives for our frames (keys that are not strings become strings, as there), in a
    twentieth of the time: a pong 0.2 µs against 12, a message 0.8 against 8.
    """
    return orjson.dumps(frame, option=orjson.OPT_NON_STR_KEYS).decode()


# The JSON of the frames encoded last for many sockets, by the frame object's identity.
# The pub/sub channel layer decodes an event once per process and hands the same dict to
# every local socket of the group: a message to a group of 1,000 is encoded once per
# gateway, not once per member. Holding the frame keeps its id from being reused.
_SHARED: OrderedDict[int, tuple[Any, str]] = OrderedDict()
_SHARED_SIZE = 256


def encode_shared(frame: Any) -> str:
    """Return `encode(frame)`, computed once for a frame object sent to many sockets.

    The frame must not change after its first send (events from the layer never do).
    """
    key = id(frame)
    hit = _SHARED.get(key)
    if hit is not None and hit[0] is frame:
        return hit[1]
    data = encode(frame)
    _SHARED[key] = (frame, data)
    if len(_SHARED) > _SHARED_SIZE:
        _SHARED.popitem(last=False)
    return data


async def dispatch_in_turn(sources: list[Receive], dispatch: Dispatch) -> None:
    """Hand what each source receives to `dispatch`, one message at a time, until it stops.

    What Channels' `await_many_dispatch` does, with one long-lived loop per source: that
    loop makes a new task per message and waits on all of them again each time (about
    10 µs more per message, a frame in or an event out to one socket: 15 µs against 5 µs
    in a loop of queued messages). The first source is read in the calling task, each
    other in a task of its own (a socket: the caller's task and one more, no task
    waiting on both). The first exception `dispatch` raises (`StopConsumer` at the
    disconnect) ends the loop, and no message is dispatched after it.
    """
    turn = asyncio.Lock()
    stopped = False
    here = asyncio.current_task()
    if here is None:
        raise RuntimeError("dispatch_in_turn runs in a task")
    failure: list[BaseException] = []
    pumping = True  # the caller's own loop is still running

    async def pump(receive: Receive) -> None:
        nonlocal stopped
        while True:
            message = await receive()
            async with turn:
                if stopped:
                    return
                try:
                    await dispatch(message)
                except BaseException:
                    stopped = True
                    raise
            # Let the rest of the loop run between two messages, as a task per message
            # did: a socket with many queued events does not hold the loop, and work
            # that a message started (a receipt's first write) begins before the next.
            await asyncio.sleep(0)

    def ended(task: asyncio.Task[None]) -> None:
        # Another source's loop failed while the caller's waits: stop it with the failure.
        if pumping and not failure and not task.cancelled():
            error = task.exception()
            if error is not None:
                failure.append(error)
                here.cancel()

    others = [asyncio.ensure_future(pump(receive)) for receive in sources[1:]]
    for task in others:
        task.add_done_callback(ended)
    try:
        # Let the other loops start waiting on their sources first: a source cleans up
        # when its wait is cancelled (channels-redis unsubscribes the socket's channel).
        await asyncio.sleep(0)
        await pump(sources[0])
    except asyncio.CancelledError:
        if not failure:
            raise  # cancelled from outside (the server shuts down)
        here.uncancel()
        raise failure[0] from None
    finally:
        pumping = False
        for task in others:
            task.cancel()
        results = await asyncio.gather(*others, return_exceptions=True)
    # The caller's loop saw another's failure first (and stopped): raise that failure.
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            raise result


class FrameSocket(AsyncWebsocketConsumer):  # type: ignore[misc]
    """One authenticated WebSocket of one user that handles frames through `HANDLERS`."""

    # Frame type -> (its parser, the method that answers it); set by the subclass.
    HANDLERS: ClassVar[dict[str, tuple[Parser, Handler]]] = {}
    # Frame type -> its budget class (WS_FRAME_BUDGETS); a type not listed is not limited
    # here (`message.send`: per user, in the service). Set by the subclass.
    BUDGET_CLASSES: ClassVar[dict[str, str]] = {}

    user: User
    credential: Credential | None = None
    device = ""
    closing = False
    # The code this gateway closed the socket with (None: the client or the server did).
    closed_with: int | None = None
    last_frame_at = 0.0
    ready = False  # the first frame (the subclass's greeting) has gone out
    # Set while an answer gathered with other sockets' (a `pong`) reads its data and is
    # sent: no other frame goes out until it is done (`dbthreads.AnsweredInWindows`).
    held: asyncio.Future[None] | None = None
    budgets: FrameBudgets
    send_timeout = 5.0  # WS_SEND_TIMEOUT, read once per socket
    # The server times a send's wait for room itself (`FlowControlledWebSocket`).
    server_times_sends = False

    # Channels' groups of names to join on connect: none (`layer_groups` joins them), so
    # no empty list per socket.
    groups: tuple[str, ...] = ()

    def __init__(self) -> None:
        """Give the socket every attribute it will have, here, in one order.

        CPython (3.11) keeps the attributes of a class's instances in one shared table of
        names plus a small array of values each, as long as the names are added while the
        table has room, and every instance created takes a little of that room. A name
        first set later, in `connect`, after hundreds of sockets were created in a burst of
        handshakes, gives each socket a dict of its own instead: 832 bytes for its 24
        attributes, against 296 even when the shared form is turned into a dict
        (measured). So anything set on a socket later must get a value here first
        (subclasses: `init_state`).
        """
        super().__init__()
        self.scope: MutableMapping[str, Any] = {}
        self.channel_layer: Any = None
        self.channel_name = ""
        self.channel_receive: Any = None
        self.base_send: Any = None
        self.closing = False
        self.closed_with = None
        self.last_frame_at = 0.0
        self.budgets = FrameBudgets(settings.WS_FRAME_BUDGETS)
        self.send_timeout = settings.WS_SEND_TIMEOUT
        self.server_times_sends = False
        # Set by `connect` before anything reads them.
        self.user = cast(User, None)
        self.credential = None
        self.device = ""
        self.ready = False
        self.held = None
        self.init_state()

    def init_state(self) -> None:
        """Give a subclass's attributes their first values (see `__init__`)."""

    async def __call__(self, scope: MutableMapping[str, Any], receive: Receive, send: Any) -> None:
        """Run the socket: Channels' `AsyncConsumer.__call__`, with `dispatch_in_turn`."""
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        sources = [receive]
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
            receiver = getattr(self.channel_layer, "receiver", None)  # chatsite.layers
            self.channel_receive = (
                receiver(self.channel_name)
                if receiver is not None
                else functools.partial(self.channel_layer.receive, self.channel_name)
            )
            sources.append(self.channel_receive)
        self.base_send = send
        with contextlib.suppress(StopConsumer):
            await dispatch_in_turn(sources, self.dispatch)

    async def connect(self) -> None:
        """Accept; close unauthenticated (4401) or bad-device (1008) handshakes; greet."""
        self.closing = False
        self.closed_with = None
        self.last_frame_at = time.monotonic()
        self.server_times_sends = SEND_TIMEOUT_EXTENSION in (self.scope.get("extensions") or {})
        self.prepare()
        await self.accept()
        auth = self.scope.get("auth")
        if auth is None:
            unavailable = self.scope.get("auth_unavailable")
            await self._close_now(CLOSE_TRY_LATER if unavailable else CLOSE_UNAUTHENTICATED)
            return
        device = self._query().get("device") or f"d-{uuid.uuid4().hex[:12]}"
        if not DEVICE_RE.match(device):
            error = BadRequest(
                "device must be 1-64 characters of A-Z a-z 0-9 _ -.", details={"field": "device"}
            )
            await self.send_error(error)
            await self._close_now(1008)
            return
        self.user, self.credential, self.device = auth.user, auth.credential, device
        # Nothing reads the handshake's headers again (the credential among them): free
        # them for the socket's lifetime, in the one list every copy of the scope shares.
        headers = self.scope.get("headers")
        if isinstance(headers, list):
            headers.clear()
        supervisor.add(self)
        try:
            await self.greet()
            self.ready = True
        except Shed:
            # Too far behind to greet in time: the client has given up on this handshake.
            metrics.HANDSHAKES_SHED.inc()
            await self.close_with(CLOSE_TRY_LATER)
        except (DatabaseError, InterfaceError, RedisError, OSError, TimeoutError) as exc:
            logger.warning("connect failed for user %s: %r", self.user.pk, exc)
            await self.close_with(CLOSE_TRY_LATER)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        """Channels' handler of the end of the socket, without its `aclose_old_connections`.

        It uses no connection of Channels' database thread (see `dispatch`): the hop to that one
        thread only queued every closing socket behind the others (a twentieth of the
        gateways' time when 2,000 sockets dropped at once).
        """
        for group in self.groups:  # none: a socket's groups are its own (`SocketGroups`)
            await self.channel_layer.group_discard(group, self.channel_name)
        await self.disconnect(message["code"])
        raise StopConsumer()

    async def disconnect(self, code: int) -> None:
        """Stop supervising the socket; let the subclass clean up after an authenticated one."""
        # After our own close the server reports 1005 (no code), so count ours instead.
        metrics.count_close(code if self.closed_with is None else self.closed_with)
        self.closing = True
        supervisor.discard(self)
        self.release()
        if self.credential is not None:
            await self.goodbye()

    def prepare(self) -> None:
        """Set up the socket's state before anything arrives (subclasses)."""

    async def greet(self) -> None:
        """Subscribe and send the first frame, once authenticated (subclasses)."""

    def release(self) -> None:
        """Stop the socket's timers (subclasses; also for unauthenticated sockets)."""

    async def goodbye(self) -> None:
        """Leave what an authenticated socket joined (subclasses)."""

    def _query(self) -> dict[str, str]:
        raw = self.scope.get("query_string", b"").decode("latin-1")
        pairs = [part.split("=", 1) if "=" in part else (part, "") for part in raw.split("&")]
        return {key: value for key, value in pairs if key}

    async def _close_now(self, code: int) -> None:
        self.closed_with = code
        await self.close(code=code)
        self.closing = True

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Call the handler of a frame or event, without Channels' `aclose_old_connections`.

        Channels runs `close_old_connections` on its one database thread before every
        message: a thread hop per frame and per forwarded event. Nothing here uses that
        thread's connection; `db` (and the auth middleware) close their own.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def close_with(self, code: int) -> None:
        """Close the socket with `code` once."""
        if self.closing:
            return
        self.closing = True
        self.closed_with = code
        try:
            await self.close(code=code)
        except Exception:  # noqa: BLE001 - the socket may already be gone
            logger.debug("close %s failed", code, exc_info=True)

    async def send_frame(self, frame: Any, *, shared: bool = False, unheld: bool = False) -> bool:
        """Send a frame; a client that does not read within WS_SEND_TIMEOUT is closed (4429).

        `shared`: the frame is one object handed to many sockets of this process (a
        channel-layer event), encoded once for all of them (`encode_shared`). While the
        socket is `held`, the frame waits, unless it is the one the socket is held for
        (`unheld`). Return whether it went out.
        """
        if not unheld:
            while (held := self.held) is not None and not held.done():
                # Shielded: a sender that is cancelled must not cancel the hold itself.
                await asyncio.shield(held)
        if self.closing:
            return False
        data = encode_shared(frame) if shared else encode(frame)
        try:
            if self.server_times_sends:
                # No timer per send: the server starts one only for a send that waits.
                message = {"type": "websocket.send", "text": data, "timeout": self.send_timeout}
                if shared:
                    message["shared"] = True  # framed once for every socket
                await self.base_send(message)
            else:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
                async with asyncio.timeout(self.send_timeout):
                    await self.send(text_data=data)
        except (ClientDisconnected, ConnectionError, RuntimeError):
            # The client left while we answered. Returning quietly lets the consumer take
            # the `websocket.disconnect` that follows, so `disconnect()` cleans up.
            self.closing = True
            return False
        except TimeoutError:
            logger.info("closing a socket of user %s: outbound queue full", self.user.pk)
            await self.close_with(CLOSE_TOO_SLOW)
            return False
        kind = frame["type"]
        _frames_out.count(kind)
        if kind == "message.sent":
            # Frames of a socket are handled one at a time, so the last one to arrive is
            # the `message.send` this answers.
            metrics.SEND_LATENCY.observe(time.monotonic() - self.last_frame_at)
        return True

    async def send_error(
        self, error: DomainError, *, ref: str | None = None, client_msg_id: str | None = None
    ) -> None:
        """Send an `error` frame for a domain error."""
        await self.send_frame(
            wire.error_frame(
                code=error.code,
                message=error.message,
                details=error.details,
                ref=ref,
                client_msg_id=client_msg_id,
            )
        )

    async def frame_arrived(self) -> None:
        """Note that the client is alive (any frame is a heartbeat); subclasses extend it."""
        self.last_frame_at = time.monotonic()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Parse one frame and call its handler; every failure is an `error` frame."""
        if self.closing or self.credential is None:
            return
        await self.frame_arrived()
        if text_data is None:
            _frames_in.count(metrics.OTHER)
            await self.send_error(BadRequest("Binary frames are not supported; send JSON text."))
            return
        if len(text_data) > MAX_FRAME_BYTES:
            _frames_in.count(metrics.OTHER)
            await self.close_with(1009)
            return
        try:
            envelope = frames.parse_envelope(text_data)
        except frames.BadFrame as bad:
            _frames_in.count(metrics.OTHER)
            await self.send_error(bad.error, ref=bad.ref)
            return
        ref, kind = envelope.ref, envelope.kind
        _frames_in.count(kind)
        route = self.HANDLERS.get(kind)
        if route is None:
            unknown = UnknownType(f"Unknown frame type {kind[:64]!r}.", details={"type": kind[:64]})
            await self.send_error(unknown, ref=ref)
            return
        cmid = envelope.data.get("client_msg_id") if kind == "message.send" else None
        cmid = cmid if isinstance(cmid, str) and len(cmid) <= 64 else None
        parse, handle = route
        # Every line logged while this frame is handled (on database threads too) and
        # the events it causes carry one correlation id.
        token = correlation_id.set(new_id())
        try:
            if trace.isEnabledFor(logging.INFO):
                trace.info("frame in %s", kind, extra={"frame": kind, "user": self.user.pk})
            request = parse(envelope.data)
            wait = self.budgets.take(self.BUDGET_CLASSES.get(kind))
            if wait:
                metrics.count_rate_limited("frame")
                raise RateLimited(wait)
            await handle(self, request, ref)
        except DomainError as error:
            await self.send_error(error, ref=ref, client_msg_id=cmid)
        except (OperationalError, InterfaceError) as exc:
            logger.warning("database unavailable: %r", exc)
            await self.send_error(Unavailable(), ref=ref, client_msg_id=cmid)
        except Exception:  # a bug must not take the socket down; logger.exception records it
            logger.exception("frame %s failed", kind)
            await self.send_error(InternalError(), ref=ref, client_msg_id=cmid)
        finally:
            correlation_id.reset(token)
