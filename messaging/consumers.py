"""The WebSocket consumer (`/ws/v1/`): a table from frame type to one call.

A frame is parsed into a typed request (`messaging.frames`), handed to one service or
selector on the database pool, and answered with a frame built in `messaging.wire`.
Socket lifetime (parsing and error frames, the handshake, idle and credential checks,
fan-out, receipt and typing pacing) is the gateway package's (`chatsite.gateway`);
presence frames are `presence.consumer`'s; rules are the services'. This is the one
module that uses both messaging and presence.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable
from typing import Any, cast

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError
from django.utils import timezone
from redis.exceptions import RedisError

from chatsite import metrics
from chatsite.errors import DomainError, Unavailable
from chatsite.gateway.batching import ReceiptBatcher, TypingBudget
from chatsite.gateway.dbthreads import AnsweredInWindows, Batcher, db, db_by
from chatsite.gateway.socket import CLOSE_TRY_LATER, FrameSocket
from chatsite.gateway.supervisor import supervisor
from chatsite.logs import correlation_id, trace
from messaging import events, frames, selectors, services, wire
from messaging.errors import NotAMember
from messaging.groups import SocketGroups
from presence.consumer import NOBODY, PresenceMixin, parse_presence_subscribe

logger = logging.getLogger(__name__)

CLOSE_EVICTED = 4409
TYPING_TARGET_TTL = 30.0

# Sends are stored together when they arrive while WS_SEND_WRITES statements are
# already storing earlier ones (`services.send_messages`).
_sends: Batcher[services.SendRequest, services.SendResult] = Batcher(
    services.send_messages,
    limit=settings.WS_SEND_WRITES,
    size=settings.WS_SEND_BATCH,
    observe=metrics.SEND_BATCH.observe,
)
# A ping as gathered (user, ref, conversation), and what one read of a window finds:
# each user's log position and each named conversation's marker sum.
PingAsked = tuple[int, str | None, int | None]
PingFound = tuple[dict[int, int], dict[int, int]]


class ChatConsumer(PresenceMixin, FrameSocket):
    """One WebSocket connection: a device session of one user."""

    # --- lifetime -----------------------------------------------------------------------

    def init_state(self) -> None:
        """Give this socket its attributes before `prepare` (see `FrameSocket.__init__`)."""
        self.layer_groups = cast(SocketGroups, None)  # set by `prepare`
        # Made by the socket's first receipt or typing frame: most sockets never send one.
        self.receipts: ReceiptBatcher | None = None
        self.typing: TypingBudget | None = None
        self.typing_targets: dict[int, tuple[float, selectors.TypingTarget]] | None = None
        self.init_presence()

    def prepare(self) -> None:
        """Set up this socket's groups."""
        self.layer_groups = SocketGroups(self.channel_layer, self.channel_name)

    @property
    def groups_joined_at(self) -> float:
        return self.layer_groups.joined_at

    async def greet(self) -> None:
        """Subscribe, read the snapshot, send `session.ready` (in that order)."""
        await supervisor.ensure_sentinel()
        await self.layer_groups.join_user(self.user.pk)
        # Dropped (`Shed`, close 1013) if the gateway is too far behind to start in time.
        start_by = self.scope.get("ready_by")
        # The conversations to follow, and who this user blocked or was blocked by: the
        # typing and presence filters (kept current by `block.event`, no query per event).
        ids, blocked = await db_by(start_by, selectors.connect_facts, user_id=self.user.pk)
        self.blocked = blocked or NOBODY
        await self.layer_groups.join(ids)
        views = await db_by(start_by, selectors.list_conversations_for_user, user=self.user)
        await self.layer_groups.settle(views, joined=ids)  # changes made between the two reads
        evicted = await self.presence_opened()  # and the oldest past the per-user cap
        for old in evicted:
            await events.send_to_channel(self.channel_layer, old, {"type": "connection.evict"})
        await self.send_frame(
            wire.session_ready_frame(
                user=self.user,
                device=self.device,
                heartbeat_interval=settings.WS_HEARTBEAT_INTERVAL,
                server_time=timezone.now(),
                views=views,
            )
        )

    def release(self) -> None:
        """Drop pending receipt writes and typing relays."""
        if self.receipts is not None:
            self.receipts.cancel()
        if self.typing is not None:
            self.typing.cancel()

    async def goodbye(self) -> None:
        """Leave every group and forget the connection."""
        try:
            await self.layer_groups.leave_all()
        except (RedisError, OSError, TimeoutError) as exc:
            logger.info("cleanup after disconnect failed: %r", exc)
        await self.presence_closed()

    async def rejoin_groups(self) -> None:
        """Join this connection's groups again (after Redis lost them, or before they expire)."""
        try:
            await self.layer_groups.rejoin_all()
        except (RedisError, OSError, TimeoutError):
            await self.close_with(CLOSE_TRY_LATER)

    async def frame_arrived(self) -> None:
        """Any frame is a heartbeat: of the socket, and of the user's presence."""
        await super().frame_arrived()
        self.presence_heartbeat()

    def _member_of(self, conversation: int) -> None:
        """Refuse at once what concerns a conversation this socket's user is not in."""
        if conversation not in self.layer_groups:
            raise NotAMember()

    async def send_message(self, request: frames.Send, ref: str | None) -> None:
        """Store a message; answer `message.sent` after commit (also for a replay)."""
        result = await _sends.submit(
            services.SendRequest(
                sender=self.user,
                conversation_id=request.conversation,
                client_msg_id=request.client_msg_id,
                body=request.body,
                attachment_ids=request.attachments,
                reply_to=request.reply_to,
                origin=self.channel_name or None,
                cid=correlation_id.get(),
            )
        )
        await self.send_frame(
            wire.message_sent_frame(ref, str(request.client_msg_id), result.message)
        )

    async def fetch_messages(self, request: frames.Fetch, ref: str | None) -> None:
        """Answer a page of the log (`after` for sync, `before` for scrollback)."""

        def fetch() -> wire.MessagesBatchFrame:
            batch = selectors.list_messages_for_user(
                user=self.user,
                conversation_id=request.conversation,
                after=request.after,
                before=request.before,
                limit=request.limit,
            )
            return wire.messages_batch_frame(
                ref, request.conversation, batch.messages, batch.upto, batch.has_more
            )

        await self.send_frame(await db(fetch))

    async def edit_message(self, request: frames.Edit, ref: str | None) -> None:
        """Edit an own message; the answer and the members' event are `message.updated`."""

        def edit() -> wire.MessageUpdatedFrame:
            message = services.edit_message(
                user=self.user,
                conversation_id=request.conversation,
                message_id=request.message,
                body=request.body,
            )
            return wire.message_updated_frame(message, ref)

        await self.send_frame(await db(edit))

    async def delete_message(self, request: frames.Delete, ref: str | None) -> None:
        """Delete a message for everyone; answer `message.updated` with `deleted: true`."""

        def delete() -> wire.MessageUpdatedFrame:
            message = services.delete_message(
                user=self.user, conversation_id=request.conversation, message_id=request.message
            )
            return wire.message_updated_frame(message, ref)

        await self.send_frame(await db(delete))

    async def react(self, request: frames.Reaction, ref: str | None) -> None:
        """Add or take back a reaction; the answer and the members' event: `message.updated`."""

        def react() -> wire.MessageUpdatedFrame:
            message = services.react(
                user=self.user,
                conversation_id=request.conversation,
                message_id=request.message,
                emoji=request.emoji,
                add=request.add,
            )
            return wire.message_updated_frame(message, ref)

        await self.send_frame(await db(react))

    async def receipt(self, request: frames.Receipt, ref: str | None) -> None:
        """Queue a marker raise; a conversation's markers are written at most every 500 ms."""
        self._member_of(request.conversation)
        if self.receipts is None:
            self.receipts = ReceiptBatcher(self._write_receipts, settings.CHAT_RECEIPT_COALESCE)
        self.receipts.add(request.conversation, request.seq, read=request.read)

    async def _write_receipts(self, conversation: int, delivered: int, read: int) -> None:
        try:
            await db(
                services.mark_receipts,
                user=self.user,
                conversation_id=conversation,
                delivered=delivered,
                read=read,
            )
        except DomainError as error:
            await self.send_error(error)
        except (OperationalError, InterfaceError):
            await self.send_error(Unavailable())

    async def typing_frame(self, request: frames.Typing, ref: str | None) -> None:
        """Relay typing to the other members (never stored; within the socket's budget)."""
        self._member_of(request.conversation)
        if self.typing is None:
            self.typing = TypingBudget(
                self._relay_typing, rate=settings.CHAT_TYPING_RATE, burst=settings.CHAT_TYPING_BURST
            )
        await self.typing.offer(request.conversation, request.state)

    async def _relay_typing(self, conversation: int, state: str) -> None:
        now = time.monotonic()
        if self.typing_targets is None:
            self.typing_targets = {}
        cached = self.typing_targets.get(conversation)
        if cached is None or now - cached[0] > TYPING_TARGET_TTL:
            target = await db(
                selectors.get_typing_target, user=self.user, conversation_id=conversation
            )
            self.typing_targets[conversation] = (now, target)
        else:
            target = cached[1]
        relay = services.typing_event(
            user=self.user, target=target, conversation_id=conversation, state=state
        )
        if relay is None:
            return
        try:
            await events.send_event(self.channel_layer, *relay)
        except (RedisError, OSError, TimeoutError) as exc:
            metrics.count_dropped("publish_failed")
            logger.info("typing relay failed: %r", exc)

    async def sync(self, request: frames.Empty, ref: str | None) -> None:
        """Answer `sync.state` (as `session.ready`); fix group memberships that drifted."""
        views = await db(selectors.list_conversations_for_user, user=self.user)
        await self.layer_groups.settle(views, joined=list(self.layer_groups.known))
        await self.send_frame(wire.sync_state_frame(ref, views))

    async def ping(self, request: frames.Ping, ref: str | None) -> None:
        """Answer `pong` with the server's time and the user's log position.

        A client whose own position differs has missed a live event (the channel layer
        may drop) and sends `sync`: a lost event is repaired within one heartbeat. For a
        `conversation` of the user's, the pong also carries its members' marker sum: a
        client whose own sum differs has missed a `receipt.updated` and reads the
        members again. (A conversation the user is not in is left out, not refused: the
        ping is a heartbeat whatever it names.) Answered with the other pings of the
        window (`_pings`); the socket goes on meanwhile.
        """
        _pings.ask(self, (self.user.pk, ref, request.conversation))

    async def pong(self, asked: PingAsked, found: PingFound | Exception) -> None:
        """Send the `pong` of a ping asked in the window just read (`_pings`)."""
        _, ref, conversation = asked
        position: int | None = None
        markers: wire.PongMarkers | None = None
        if isinstance(found, (DatabaseError, InterfaceError)):
            logger.info("log position unavailable: %r", found)
        elif isinstance(found, Exception):
            logger.error("reading the pings' positions failed", exc_info=found)
        else:
            positions, sums = found
            position = positions.get(self.user.pk)
            if conversation is not None and conversation in self.layer_groups:
                total = sums.get(conversation)
                if total is not None:
                    markers = {"conversation": conversation, "sum": total}
        await self.send_frame(wire.pong_frame(ref, timezone.now(), position, markers), unheld=True)

    # --- channel-layer events -----------------------------------------------------------

    async def conv_event(self, event: dict[str, Any]) -> None:
        """Forward a conversation's frame if this socket's user is (still) a member.

        Not to the socket that caused it (`origin`): its reply already carried it.
        """
        if event.get("origin") == self.channel_name:
            return
        conversation = int(event["conversation"])
        frame = event["frame"]
        if frame["type"] == "typing" and (
            frame["user"] == self.user.pk or frame["user"] in self.blocked
        ):
            return

        def current_member_seq() -> Awaitable[int | None]:
            return db(
                selectors.get_member_seq_if_member, user=self.user, conversation_id=conversation
            )

        member_seq = int(event["member_seq"])
        if not await self.layer_groups.admits(conversation, member_seq, current_member_seq):
            return
        if not await self.send_frame(frame, shared=True):
            return
        if frame["type"] == "message.created":
            metrics.observe_delivery(frame["message"]["created_at"])
        if trace.isEnabledFor(logging.INFO):
            extra = {"cid": event.get("cid"), "frame": frame["type"], "user": self.user.pk}
            trace.info("frame out %s", frame["type"], extra=extra)

    async def user_event(self, event: dict[str, Any]) -> None:
        """Join or leave the conversation's group as membership changes, then forward."""
        conversation = int(event["conversation"])
        frame = event["frame"]
        if frame["reason"] in ("left", "removed"):
            await self.layer_groups.drop(conversation)
        else:  # created, joined, accepted
            await self.layer_groups.add(conversation, int(event["member_seq"]))
        if event.get("follow_only"):
            return  # a direct chat not shown yet: its first message makes the client sync
        await self.send_frame(frame)

    async def block_event(self, event: dict[str, Any]) -> None:
        """Update the filters when a block with another user began or ended; tell the blocker."""
        other = int(event["user"])
        if event["blocked"]:
            self.blocked = self.blocked | {other}
        else:
            self.blocked = self.blocked - {other}
        await self.presence_block_changed(other, blocked=bool(event["blocked"]))
        if event.get("frame") is not None:
            await self.send_frame(event["frame"])

    async def own_event(self, event: dict[str, Any]) -> None:
        """Forward a frame meant for this user's devices only (`message.hidden`)."""
        await self.send_frame(event["frame"])

    async def connection_evict(self, event: dict[str, Any]) -> None:
        """Close: the user opened more than WS_MAX_CONNECTIONS_PER_USER connections."""
        await self.close_with(CLOSE_EVICTED)


def _read_pings(asked: list[PingAsked]) -> PingFound:
    """Read the log positions and marker sums of a window's pings: one query each."""
    users = list({user for user, _, _ in asked})
    conversations = list({c for _, _, c in asked if c is not None})
    sums = selectors.get_marker_sums(conversation_ids=conversations) if conversations else {}
    return selectors.get_log_positions(user_ids=users), sums


# Pings arrive at every socket's own pace; they are answered together, one read per
# WS_PING_WINDOW per gateway. A pong waits at most that long (clients compare the
# position, never time the pong), and the socket's deliveries do not wait with it.
_pings: AnsweredInWindows[ChatConsumer, PingAsked, PingFound] = AnsweredInWindows(
    _read_pings, ChatConsumer.pong, window=settings.WS_PING_WINDOW
)


ChatConsumer.HANDLERS = {
    "message.send": (frames.parse_send, ChatConsumer.send_message),
    "messages.fetch": (frames.parse_fetch, ChatConsumer.fetch_messages),
    "message.edit": (frames.parse_edit, ChatConsumer.edit_message),
    "message.delete": (frames.parse_delete, ChatConsumer.delete_message),
    "reaction.add": (frames.parse_reaction, ChatConsumer.react),
    "reaction.remove": (frames.parse_reaction, ChatConsumer.react),
    "receipt.delivered": (frames.parse_receipt, ChatConsumer.receipt),
    "receipt.read": (frames.parse_receipt, ChatConsumer.receipt),
    "typing.start": (frames.parse_typing, ChatConsumer.typing_frame),
    "typing.stop": (frames.parse_typing, ChatConsumer.typing_frame),
    "sync": (frames.parse_empty, ChatConsumer.sync),
    "activity": (frames.parse_activity, ChatConsumer.activity),
    "status.set": (frames.parse_status, ChatConsumer.set_status),
    "presence.subscribe": (parse_presence_subscribe, ChatConsumer.subscribe_presence),
    "ping": (frames.parse_ping, ChatConsumer.ping),
}

ChatConsumer.BUDGET_CLASSES = frames.BUDGET_CLASSES
