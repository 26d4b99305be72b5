"""The WebSocket gateway (`/ws/v1/`): one thin consumer that parses frames and calls services.

Frames and replies are those of PROTOCOL.md section 3 (docs/protocol.md records our
choices). Rules live in the services; this module checks shapes, maps errors to
`error` frames, and forwards channel-layer events (which are wire frames) to the socket.
Work shared by all connections of a process (idle and credential checks, re-joining
groups after a Redis restart) runs in one periodic task per process, not per socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError
from django.utils import timezone
from redis.exceptions import RedisError
from uvicorn.protocols.utils import ClientDisconnected

from accounts.models import User
from chatsite.dbthreads import Coalescer, db
from chatsite.errors import BadRequest, DomainError, InternalError, Unavailable, UnknownType
from chatsite.redis import async_client
from chatsite.wire import iso
from chatsite.wsauth import Credential, find_revoked
from messaging import events, selectors, services
from messaging.errors import NotAMember
from presence import connections
from presence import events as presence_events
from presence import services as presence
from presence.store import get_store

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_FRAME_BYTES = 256 * 1024
MAX_INT = 2**62
DEVICE_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CLOSE_UNAUTHENTICATED = 4401
CLOSE_IDLE = 4408
CLOSE_EVICTED = 4409
CLOSE_TOO_SLOW = 4429
CLOSE_TRY_LATER = 1013
GROUP_REJOIN_AFTER = 12 * 3600

# --- frame fields ----------------------------------------------------------------------


def _int(frame: dict[str, Any], name: str, *, required: bool = True) -> int | None:
    value = frame.get(name)
    if value is None:
        if required:
            raise BadRequest(f"{name} is required.", details={"field": name})
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise BadRequest(f"{name} must be a non-negative integer.", details={"field": name})
    return int(value)


def _conversation(frame: dict[str, Any]) -> int:
    value = _int(frame, "conversation")
    assert value is not None  # noqa: S101 - required=True guarantees it
    return value


LONE_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


def _encodable(frame: dict[str, Any]) -> bool:
    try:
        json.dumps(frame, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _str(frame: dict[str, Any], name: str) -> str:
    value = frame.get(name)
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string.", details={"field": name})
    return value


# --- the process's connections ---------------------------------------------------------


class Gateway:
    """The live connections of this process and the periodic work done for all of them."""

    def __init__(self) -> None:
        self.consumers: set[ChatConsumer] = set()
        self.task: asyncio.Task[None] | None = None
        self.instance = uuid.uuid4().hex
        self.sentinel_seen = False
        self.next_auth_check = 0.0
        self.next_group_check = 0.0
        self.next_sweep = 0.0

    def add(self, consumer: ChatConsumer) -> None:
        """Track a connection; start the periodic task on first use in this loop."""
        self.consumers.add(consumer)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    def discard(self, consumer: ChatConsumer) -> None:
        """Stop tracking a connection."""
        self.consumers.discard(consumer)

    async def _run(self) -> None:
        tick = max(
            0.2, min(settings.WS_HEARTBEAT_INTERVAL / 2, settings.WS_AUTH_CHECK_INTERVAL, 1.0)
        )
        while True:
            await asyncio.sleep(tick)
            try:
                await self._tick()
            except Exception:
                logger.exception("gateway periodic task failed")

    async def _tick(self) -> None:
        now = time.monotonic()
        idle_limit = settings.WS_HEARTBEAT_INTERVAL * settings.WS_IDLE_TIMEOUT_FACTOR
        for consumer in list(self.consumers):
            if now - consumer.last_frame_at > idle_limit:
                await consumer.close_with(CLOSE_IDLE)
        if now >= self.next_auth_check:
            self.next_auth_check = now + settings.WS_AUTH_CHECK_INTERVAL
            await self._check_credentials()
        if now >= self.next_group_check:
            self.next_group_check = now + settings.WS_GROUP_REFRESH_INTERVAL
            await self._check_groups()
        if now >= self.next_sweep:
            self.next_sweep = now + settings.PRESENCE_SWEEP_INTERVAL
            try:
                await presence.sweep(get_store(), now=time.time())
            except (RedisError, OSError, TimeoutError) as exc:
                logger.warning("presence sweep failed: %r", exc)

    async def _check_credentials(self) -> None:
        live = [c for c in self.consumers if c.credential is not None]
        if not live:
            return
        creds: list[Credential] = [c.credential for c in live]  # type: ignore[misc]
        try:
            revoked = await db(find_revoked, credentials=creds, now=time.time())
        except (DatabaseError, InterfaceError):
            return  # checked again next time; the database being down revokes nothing
        for index in revoked:
            await live[index].close_with(CLOSE_UNAUTHENTICATED)

    def _sentinel_key(self) -> str:
        return f"{settings.REDIS_KEY_PREFIX}:gateway:{self.instance}"

    async def ensure_sentinel(self) -> None:
        """Write this process's sentinel key before its first socket joins any group.

        Redis losing the key later is how the periodic check knows the groups are gone.
        """
        if self.sentinel_seen:
            return
        client = async_client()
        if client is None:
            return
        with contextlib.suppress(RedisError, OSError):
            await client.set(self._sentinel_key(), "1", nx=True)
            self.sentinel_seen = True

    async def _check_groups(self) -> None:
        """Re-join every group if Redis lost them (a restart or flush wipes groups)."""
        client = async_client()
        if client is None or not self.consumers:
            return
        try:
            created = await client.set(self._sentinel_key(), "1", nx=True)
        except (RedisError, OSError):
            return
        lost = bool(created and self.sentinel_seen)
        if lost:
            logger.warning("Redis lost this gateway's groups; re-joining them")
        self.sentinel_seen = True
        # channels-redis forgets group members after `group_expiry` (a day): sockets older
        # than half of it join their groups again.
        stale_before = time.monotonic() - GROUP_REJOIN_AFTER
        for consumer in list(self.consumers):
            if lost or consumer.groups_joined_at < stale_before:
                await consumer.rejoin_groups()
        if lost:
            # Presence lived in the Redis that was lost: write back this process's sockets.
            live = [c for c in self.consumers if c.credential is not None]
            entries = [
                (c.user.pk, c.channel_name, c.idle, c.user.status == User.Status.BUSY) for c in live
            ]
            try:
                await presence.rebuild(get_store(), entries, now=time.time())
            except (RedisError, OSError, TimeoutError) as exc:
                logger.warning("presence rebuild failed: %r", exc)


gateway = Gateway()

# Pings arrive at every socket's own pace; their log positions are read together.
_log_positions: Coalescer[int, int] = Coalescer(
    lambda user_ids: selectors.get_log_positions(user_ids=user_ids), window=0.02
)


# --- the consumer ----------------------------------------------------------------------


class ChatConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    """One WebSocket connection: a device session of one user."""

    user: User
    credential: Credential | None = None

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Call the handler of a frame or event, without Channels' `aclose_old_connections`.

        Channels runs `close_old_connections` on its one database thread before every
        message: a thread hop per frame and per forwarded event. This consumer never uses
        that thread's connection; `db` (and the auth middleware) close their own.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        """Authenticate, subscribe, read the snapshot, send `session.ready` (in that order)."""
        self.closing = False
        self.last_frame_at = self.groups_joined_at = time.monotonic()
        self.conversations: dict[int, int] = {}  # id -> member_seq known to this socket
        self.typing_targets: dict[int, tuple[float, selectors.TypingTarget]] = {}
        self.typing_tokens = (float(settings.CHAT_TYPING_BURST), time.monotonic())
        self.typing_pending: dict[int, str] = {}
        self.typing_task: asyncio.Task[None] | None = None
        self.receipts: dict[int, tuple[int, int]] = {}
        self.receipt_tasks: dict[int, asyncio.Task[None]] = {}
        self.receipt_flushed_at: dict[int, float] = {}
        self.idle = False
        self.presence_written_at = 0.0
        self.following: set[int] = set()
        await self.accept()
        auth = self.scope.get("auth")
        if auth is None:
            code = CLOSE_TRY_LATER if self.scope.get("auth_unavailable") else CLOSE_UNAUTHENTICATED
            await self.close(code=code)
            self.closing = True
            return
        query = dict(
            part.split("=", 1) if "=" in part else (part, "")
            for part in self.scope.get("query_string", b"").decode("latin-1").split("&")
            if part
        )
        device = query.get("device") or f"d-{uuid.uuid4().hex[:12]}"
        if not DEVICE_RE.match(device):
            await self.send_error(
                BadRequest(
                    "device must be 1-64 characters of A-Z a-z 0-9 _ -.",
                    details={"field": "device"},
                )
            )
            await self.close(code=1008)
            self.closing = True
            return
        self.user = auth.user
        self.credential = auth.credential
        self.device = device
        events.start_fanout(self.channel_layer)
        gateway.add(self)
        try:
            await self._subscribe_and_greet()
        except (DatabaseError, InterfaceError, RedisError, OSError, TimeoutError) as exc:
            logger.warning("connect failed for user %s: %r", self.user.pk, exc)
            await self.close_with(CLOSE_TRY_LATER)

    async def _subscribe_and_greet(self) -> None:
        await gateway.ensure_sentinel()
        layer, channel = self.channel_layer, self.channel_name
        self.groups_joined_at = time.monotonic()
        await events.join_groups(layer, channel, [events.user_group(self.user.pk)])
        ids = await db(selectors.list_conversation_ids_for_user, user=self.user)
        await events.join_groups(layer, channel, [events.conversation_group(i) for i in ids])
        views = await db(selectors.list_conversations_for_user, user=self.user)
        self.conversations = {v.id: v.member_seq for v in views}
        # Reconcile with changes made between the two reads.
        await events.join_groups(
            layer,
            channel,
            [events.conversation_group(i) for i in self.conversations if i not in ids],
        )
        await events.leave_groups(
            layer,
            channel,
            [events.conversation_group(i) for i in ids if i not in self.conversations],
        )
        evicted = await connections.register(
            self.user.pk, channel, limit=settings.WS_MAX_CONNECTIONS_PER_USER
        )
        await self._presence(
            presence.connection_opened(
                get_store(),
                self.user.pk,
                channel,
                busy=self.user.status == User.Status.BUSY,
                now=time.time(),
            )
        )
        self.presence_written_at = time.monotonic()
        for old in evicted:
            await events.send_to_channel(layer, old, {"type": "connection.evict"})
        await self.send_frame(
            {
                "type": "session.ready",
                "user": {
                    "id": self.user.pk,
                    "username": self.user.username,
                    "display_name": self.user.name,
                },
                "device": self.device,
                "heartbeat_interval": settings.WS_HEARTBEAT_INTERVAL,
                "server_time": iso(timezone.now()),
                "status": self.user.status,
                "conversations": [events.conversation_payload(v) for v in views],
            }
        )

    async def disconnect(self, code: int) -> None:
        """Leave every group and forget the connection."""
        self.closing = True
        gateway.discard(self)
        for task in getattr(self, "receipt_tasks", {}).values():
            task.cancel()
        typing_task = getattr(self, "typing_task", None)
        if typing_task is not None:
            typing_task.cancel()
        if self.credential is None:
            return
        groups = [events.user_group(self.user.pk)]
        groups += [events.conversation_group(i) for i in self.conversations]
        try:
            await events.leave_groups(self.channel_layer, self.channel_name, groups)
            await presence_events.follow(
                self.channel_layer, self.channel_name, add=(), drop=self.following
            )
            await connections.unregister(self.user.pk, self.channel_name)
        except (RedisError, OSError, TimeoutError) as exc:
            logger.info("cleanup after disconnect failed: %r", exc)
        await self._presence(
            presence.connection_closed(
                get_store(), self.user.pk, self.channel_name, now=time.time()
            )
        )

    async def _presence(self, work: Awaitable[Any]) -> None:
        """Run a presence update; presence is a hint, so a Redis failure is only logged."""
        try:
            await work
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning("presence update failed: %r", exc)

    async def rejoin_groups(self) -> None:
        """Join this connection's groups again (after Redis lost them, or before they expire)."""
        self.groups_joined_at = time.monotonic()
        groups = [events.user_group(self.user.pk)]
        groups += [events.conversation_group(i) for i in self.conversations]
        try:
            await events.join_groups(self.channel_layer, self.channel_name, groups)
        except (RedisError, OSError, TimeoutError):
            await self.close_with(CLOSE_TRY_LATER)

    async def close_with(self, code: int) -> None:
        """Close the socket with `code` once."""
        if self.closing:
            return
        self.closing = True
        try:
            await self.close(code=code)
        except Exception:  # noqa: BLE001 - the socket may already be gone
            logger.debug("close %s failed", code, exc_info=True)

    # --- outbound ---------------------------------------------------------------------

    async def send_frame(self, frame: dict[str, Any]) -> None:
        """Send a frame; a client that does not read within WS_SEND_TIMEOUT is closed (4429)."""
        if self.closing:
            return
        data = json.dumps(frame, ensure_ascii=False, separators=(",", ":"))
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
            async with asyncio.timeout(settings.WS_SEND_TIMEOUT):
                await self.send(text_data=data)
        except (ClientDisconnected, ConnectionError, RuntimeError):
            # The client left while we answered. Returning quietly lets the consumer take
            # the `websocket.disconnect` that follows, so `disconnect()` cleans up.
            self.closing = True
        except TimeoutError:
            logger.info("closing a socket of user %s: outbound queue full", self.user.pk)
            await self.close_with(CLOSE_TOO_SLOW)

    async def send_error(
        self, error: DomainError, *, ref: str | None = None, client_msg_id: str | None = None
    ) -> None:
        """Send an `error` frame for a domain error."""
        frame: dict[str, Any] = {"type": "error", "code": error.code, "message": error.message}
        if ref is not None:
            frame["ref"] = ref
        if error.details:
            frame["details"] = error.details
        retry_after = error.details.get("retry_after")
        if retry_after is not None:
            frame["retry_after"] = retry_after
        if client_msg_id is not None:
            frame["client_msg_id"] = client_msg_id
        await self.send_frame(frame)

    # --- inbound ----------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Parse one frame and dispatch it; every failure is an `error` frame."""
        if self.closing or self.credential is None:
            return
        self.last_frame_at = time.monotonic()
        if self.last_frame_at - self.presence_written_at >= settings.PRESENCE_WRITE_INTERVAL:
            # Any frame is a heartbeat; the store is written at most every half heartbeat.
            self.presence_written_at = self.last_frame_at
            await self._presence(
                presence.heartbeat(
                    get_store(),
                    self.user.pk,
                    self.channel_name,
                    idle=self.idle,
                    changed=False,
                    now=time.time(),
                )
            )
        if text_data is None:
            await self.send_error(BadRequest("Binary frames are not supported; send JSON text."))
            return
        if len(text_data) > MAX_FRAME_BYTES:
            await self.close_with(1009)
            return
        try:
            frame = json.loads(text_data)
        except (ValueError, RecursionError):
            await self.send_error(BadRequest("The frame is not valid JSON."))
            return
        if not isinstance(frame, dict):
            await self.send_error(BadRequest("A frame must be a JSON object."))
            return
        if LONE_SURROGATE.search(text_data) and not _encodable(frame):
            # JSON escapes can spell lone surrogates, which no UTF-8 reply could carry.
            await self.send_error(BadRequest("Strings must be valid Unicode text."))
            return
        ref = frame.get("ref")
        if ref is not None and (not isinstance(ref, str) or len(ref) > 64):
            await self.send_error(BadRequest("ref must be a string of at most 64 characters."))
            return
        kind = frame.get("type")
        if not isinstance(kind, str):
            await self.send_error(BadRequest("A frame needs a string type."), ref=ref)
            return
        handler = HANDLERS.get(kind)
        if handler is None:
            await self.send_error(
                UnknownType(f"Unknown frame type {kind[:64]!r}.", details={"type": kind[:64]}),
                ref=ref,
            )
            return
        cmid = frame.get("client_msg_id") if kind == "message.send" else None
        cmid = cmid if isinstance(cmid, str) and len(cmid) <= 64 else None
        try:
            await handler(self, frame, ref)
        except DomainError as error:
            await self.send_error(error, ref=ref, client_msg_id=cmid)
        except (OperationalError, InterfaceError) as exc:
            logger.warning("database unavailable: %r", exc)
            await self.send_error(Unavailable(), ref=ref, client_msg_id=cmid)
        except Exception:  # a bug must not take the socket down; logger.exception records it
            logger.exception("frame %s failed", kind)
            await self.send_error(InternalError(), ref=ref, client_msg_id=cmid)

    async def on_message_send(self, frame: dict[str, Any], ref: str | None) -> None:
        """Store a message; reply `message.sent` after commit (also for a replay)."""
        conversation = _conversation(frame)
        client_msg_id = _str(frame, "client_msg_id")
        body = _str(frame, "body")
        attachments = frame.get("attachments") or []
        if not isinstance(attachments, list):
            raise BadRequest("attachments must be a list of ids.", details={"field": "attachments"})

        def send() -> events.MessagePayload:
            result = services.send_message(
                sender=self.user,
                conversation_id=conversation,
                client_msg_id=client_msg_id,
                body=body,
                attachment_ids=attachments,
            )
            return events.message_payload(result.message)

        message = await db(send)
        await self.send_frame(
            {"type": "message.sent", "ref": ref, "client_msg_id": client_msg_id, "message": message}
        )

    async def on_messages_fetch(self, frame: dict[str, Any], ref: str | None) -> None:
        """Answer a page of the log (`after` for sync, `before` for scrollback)."""
        conversation = _conversation(frame)

        def fetch() -> dict[str, Any]:
            batch = selectors.list_messages_for_user(
                user=self.user,
                conversation_id=conversation,
                after=frame.get("after"),
                before=frame.get("before"),
                limit=frame.get("limit"),
            )
            return {
                "type": "messages.batch",
                "ref": ref,
                "conversation": conversation,
                "messages": [events.message_payload(m) for m in batch.messages],
                "upto": batch.upto,
                "has_more": batch.has_more,
            }

        await self.send_frame(await db(fetch))

    async def on_message_edit(self, frame: dict[str, Any], ref: str | None) -> None:
        """Edit an own message; the reply and the members' event are `message.updated`."""
        conversation = _conversation(frame)
        message_id = _int(frame, "message")
        body = _str(frame, "body")

        def edit() -> events.MessagePayload:
            return events.message_payload(
                services.edit_message(
                    user=self.user,
                    conversation_id=conversation,
                    message_id=message_id or 0,
                    body=body,
                )
            )

        await self.send_frame({"type": "message.updated", "ref": ref, "message": await db(edit)})

    async def on_message_delete(self, frame: dict[str, Any], ref: str | None) -> None:
        """Delete a message for everyone; reply `message.updated` with `deleted: true`."""
        conversation = _conversation(frame)
        message_id = _int(frame, "message")

        def delete() -> events.MessagePayload:
            return events.message_payload(
                services.delete_message(
                    user=self.user, conversation_id=conversation, message_id=message_id or 0
                )
            )

        await self.send_frame({"type": "message.updated", "ref": ref, "message": await db(delete)})

    async def on_receipt(self, frame: dict[str, Any], ref: str | None, *, read: bool) -> None:
        """Queue a marker raise; a conversation's markers are written at most every 500 ms."""
        conversation = _conversation(frame)
        seq = _int(frame, "seq")
        assert seq is not None  # noqa: S101 - required=True guarantees it
        if conversation not in self.conversations:
            raise NotAMember()
        delivered, was_read = self.receipts.get(conversation, (0, 0))
        self.receipts[conversation] = (max(delivered, seq), max(was_read, seq if read else 0))
        if conversation in self.receipt_tasks:
            return
        wait = self.receipt_flushed_at.get(conversation, 0.0) + settings.CHAT_RECEIPT_COALESCE
        delay = max(0.0, wait - time.monotonic())
        self.receipt_tasks[conversation] = asyncio.get_running_loop().create_task(
            self._flush_receipts(conversation, delay)
        )

    async def on_receipt_delivered(self, frame: dict[str, Any], ref: str | None) -> None:
        """Raise the delivered marker (coalesced)."""
        await self.on_receipt(frame, ref, read=False)

    async def on_receipt_read(self, frame: dict[str, Any], ref: str | None) -> None:
        """Raise the read marker, and so the delivered marker (coalesced)."""
        await self.on_receipt(frame, ref, read=True)

    async def _flush_receipts(self, conversation: int, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        self.receipt_tasks.pop(conversation, None)
        delivered, read = self.receipts.pop(conversation, (0, 0))
        self.receipt_flushed_at[conversation] = time.monotonic()
        try:
            if read:
                await db(services.mark_read, user=self.user, conversation_id=conversation, seq=read)
            if delivered > read:
                await db(
                    services.mark_delivered,
                    user=self.user,
                    conversation_id=conversation,
                    seq=delivered,
                )
        except DomainError as error:
            await self.send_error(error)
        except (OperationalError, InterfaceError):
            await self.send_error(Unavailable())

    async def on_typing(self, frame: dict[str, Any], ref: str | None, *, state: str) -> None:
        """Relay typing to the other members (never stored; limited; off in big groups)."""
        conversation = _conversation(frame)
        if conversation not in self.conversations:
            raise NotAMember()
        tokens, at = self.typing_tokens
        now = time.monotonic()
        tokens = min(settings.CHAT_TYPING_BURST, tokens + (now - at) * settings.CHAT_TYPING_RATE)
        if tokens < 1:
            # Past the rate, the latest state waits for the next token rather than being
            # dropped: a dropped `start` would leave the others never seeing the typing.
            self.typing_tokens = (tokens, now)
            self.typing_pending[conversation] = state
            if self.typing_task is None or self.typing_task.done():
                wait = (1 - tokens) / settings.CHAT_TYPING_RATE
                self.typing_task = asyncio.get_running_loop().create_task(
                    self._relay_pending_typing(wait)
                )
            return
        self.typing_tokens = (tokens - 1, now)
        self.typing_pending.pop(conversation, None)
        await self._relay_typing(conversation, state)

    async def _relay_pending_typing(self, wait: float) -> None:
        await asyncio.sleep(wait)
        while self.typing_pending and not self.closing:
            conversation, state = self.typing_pending.popitem()
            tokens, at = self.typing_tokens
            now = time.monotonic()
            tokens = min(
                settings.CHAT_TYPING_BURST, tokens + (now - at) * settings.CHAT_TYPING_RATE
            )
            self.typing_tokens = (max(0.0, tokens - 1), now)
            try:
                await self._relay_typing(conversation, state)
            except DomainError:
                continue  # left the conversation meanwhile

    async def _relay_typing(self, conversation: int, state: str) -> None:
        now = time.monotonic()
        cached = self.typing_targets.get(conversation)
        if cached is None or now - cached[0] > 30:
            target = await db(
                selectors.get_typing_target, user=self.user, conversation_id=conversation
            )
            self.typing_targets[conversation] = (now, target)
        else:
            target = cached[1]
        if target.member_count > settings.CHAT_TYPING_MAX_MEMBERS:
            return
        try:
            await events.relay_typing(
                self.channel_layer,
                conversation_id=conversation,
                user_id=self.user.pk,
                state=state,
                member_seq=target.member_seq,
            )
        except (RedisError, OSError, TimeoutError) as exc:
            logger.info("typing relay failed: %r", exc)

    async def on_typing_start(self, frame: dict[str, Any], ref: str | None) -> None:
        """Relay `typing` with state start."""
        await self.on_typing(frame, ref, state="start")

    async def on_typing_stop(self, frame: dict[str, Any], ref: str | None) -> None:
        """Relay `typing` with state stop."""
        await self.on_typing(frame, ref, state="stop")

    async def on_sync(self, frame: dict[str, Any], ref: str | None) -> None:
        """Answer `sync.state` (as `session.ready`); fix group memberships that drifted."""
        views = await db(selectors.list_conversations_for_user, user=self.user)
        current = {v.id for v in views}
        gone = [i for i in self.conversations if i not in current]
        new = [i for i in current if i not in self.conversations]
        await events.leave_groups(
            self.channel_layer, self.channel_name, [events.conversation_group(i) for i in gone]
        )
        await events.join_groups(
            self.channel_layer, self.channel_name, [events.conversation_group(i) for i in new]
        )
        for conversation in gone:
            self.conversations.pop(conversation, None)
        for view in views:
            self.conversations[view.id] = max(self.conversations.get(view.id, 0), view.member_seq)
        await self.send_frame(
            {
                "type": "sync.state",
                "ref": ref,
                "conversations": [events.conversation_payload(v) for v in views],
            }
        )

    async def on_activity(self, frame: dict[str, Any], ref: str | None) -> None:
        """Record whether the user is idle on this device (all devices idle: `away`)."""
        idle = frame.get("idle")
        if not isinstance(idle, bool):
            raise BadRequest("idle must be true or false.", details={"field": "idle"})
        changed, self.idle = idle != self.idle, idle
        self.presence_written_at = time.monotonic()
        await self._presence(
            presence.heartbeat(
                get_store(),
                self.user.pk,
                self.channel_name,
                idle=idle,
                changed=changed,
                now=time.time(),
            )
        )

    async def on_status_set(self, frame: dict[str, Any], ref: str | None) -> None:
        """Set the sticky status; reply with this user's `presence.changed`."""
        state = await presence.set_status(
            get_store(), self.user, frame.get("status"), now=time.time()
        )
        reply = presence_events.presence_changed_event(self.user.pk, state, time.time())
        await self.send_frame({**reply, "ref": ref})

    async def on_presence_subscribe(self, frame: dict[str, Any], ref: str | None) -> None:
        """Follow the presence of up to 1,000 users (replacing the set); answer a snapshot.

        Users who share no conversation with this user are answered as offline and
        never seen, and are not followed: presence is visible only to contacts.
        """
        raw = frame.get("users")
        limit = settings.PRESENCE_MAX_SUBSCRIPTIONS
        if not isinstance(raw, list) or any(
            isinstance(u, bool) or not isinstance(u, int) or not 0 < u <= MAX_INT for u in raw
        ):
            raise BadRequest("users must be a list of user ids.", details={"field": "users"})
        if len(raw) > limit:
            raise BadRequest(
                f"Subscribe to at most {limit} users.", details={"field": "users", "max": limit}
            )
        wanted = list(dict.fromkeys(raw))
        visible = await db(selectors.filter_visible_users, user=self.user, user_ids=wanted)
        await presence_events.follow(
            self.channel_layer,
            self.channel_name,
            add=visible - self.following,
            drop=self.following - visible,
        )
        self.following = set(visible)
        shown = {
            entry["id"]: entry
            for entry in await presence.snapshot(
                get_store(), [u for u in wanted if u in visible], now=time.time()
            )
        }
        users = [shown.get(u) or presence.hidden_entry(u) for u in wanted]
        await self.send_frame({"type": "presence.snapshot", "ref": ref, "users": users})

    async def on_ping(self, frame: dict[str, Any], ref: str | None) -> None:
        """Answer `pong` with the server's time and the user's log position.

        A client whose own position differs has missed a live event (the channel layer
        may drop) and sends `sync`: a lost event is repaired within one heartbeat.
        """
        pong: dict[str, Any] = {"type": "pong", "ref": ref, "server_time": iso(timezone.now())}
        try:
            position = await _log_positions.get(self.user.pk)
        except (DatabaseError, InterfaceError) as exc:
            logger.info("log position unavailable: %r", exc)
            position = None
        if position is not None:
            pong["log_position"] = position
        await self.send_frame(pong)

    # --- channel-layer events ----------------------------------------------------------

    async def _forward(self, event: dict[str, Any], conversation: int) -> None:
        """Forward a conversation's event if this socket's user is (still) a member."""
        frame = dict(event)
        member_seq = int(frame.pop("member_seq", 0))
        known = self.conversations.get(conversation)
        if known is None:
            return
        if member_seq > known:
            # Membership changed since this socket last looked: check before forwarding, so
            # a removed member's socket never forwards what was logged after the removal.
            try:
                current = await db(
                    selectors.get_member_seq_if_member, user=self.user, conversation_id=conversation
                )
            except (DatabaseError, InterfaceError):
                return  # dropped; the client repairs the gap when the database is back
            if current is None:
                self.conversations.pop(conversation, None)
                await events.leave_groups(
                    self.channel_layer, self.channel_name, [events.conversation_group(conversation)]
                )
                return
            self.conversations[conversation] = current
        await self.send_frame(frame)

    async def message_created(self, event: dict[str, Any]) -> None:
        """Forward `message.created`."""
        await self._forward(event, event["message"]["conversation"])

    async def message_updated(self, event: dict[str, Any]) -> None:
        """Forward `message.updated`."""
        await self._forward(event, event["message"]["conversation"])

    async def receipt_updated(self, event: dict[str, Any]) -> None:
        """Forward `receipt.updated`."""
        await self._forward(event, event["conversation"])

    async def typing(self, event: dict[str, Any]) -> None:
        """Forward `typing` from other users."""
        if event["user"] != self.user.pk:
            await self._forward(event, event["conversation"])

    async def conversation_updated(self, event: dict[str, Any]) -> None:
        """Join or leave the conversation's group as membership changes, then forward."""
        reason = event["reason"]
        conversation = int(event["conversation"]["id"])
        if reason == "renamed":
            await self._forward(event, conversation)
            return
        frame = dict(event)
        member_seq = int(frame.pop("member_seq", 0))
        group = [events.conversation_group(conversation)]
        if reason in ("created", "joined"):
            self.conversations[conversation] = max(
                self.conversations.get(conversation, 0), member_seq
            )
            await events.join_groups(self.channel_layer, self.channel_name, group)
        else:
            self.conversations.pop(conversation, None)
            await events.leave_groups(self.channel_layer, self.channel_name, group)
        await self.send_frame(frame)

    async def presence_changed(self, event: dict[str, Any]) -> None:
        """Forward `presence.changed` of a followed user."""
        if event["user"] in self.following:
            await self.send_frame(event)

    async def connection_evict(self, event: dict[str, Any]) -> None:
        """Close: the user opened more than WS_MAX_CONNECTIONS_PER_USER connections."""
        await self.close_with(CLOSE_EVICTED)

    async def test_marker(self, event: dict[str, Any]) -> None:
        """Ignore markers used by tests that watch the channel layer."""


Handler = Callable[[ChatConsumer, dict[str, Any], str | None], Awaitable[None]]

HANDLERS: dict[str, Handler] = {
    "message.send": ChatConsumer.on_message_send,
    "messages.fetch": ChatConsumer.on_messages_fetch,
    "message.edit": ChatConsumer.on_message_edit,
    "message.delete": ChatConsumer.on_message_delete,
    "receipt.delivered": ChatConsumer.on_receipt_delivered,
    "receipt.read": ChatConsumer.on_receipt_read,
    "typing.start": ChatConsumer.on_typing_start,
    "typing.stop": ChatConsumer.on_typing_stop,
    "sync": ChatConsumer.on_sync,
    "activity": ChatConsumer.on_activity,
    "status.set": ChatConsumer.on_status_set,
    "presence.subscribe": ChatConsumer.on_presence_subscribe,
    "ping": ChatConsumer.on_ping,
}
