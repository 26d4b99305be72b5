"""Reads: conversations and messages as the requesting user may see them.

Every read is scoped to the user's memberships; a non-member gets NotAMember whether or
not the conversation exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.db import connection
from django.db.models import Count, IntegerField, OuterRef, Q, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from accounts.models import User, avatar_path
from chatsite.limits import MAX_SEQ
from chatsite.sql import RowReader, any_of, fetch_prepared
from messaging import archive
from messaging.errors import BadRequest, MessageNotFound, NotAMember
from messaging.models import (
    Attachment,
    Block,
    Conversation,
    Device,
    HiddenMessage,
    Membership,
    Message,
    Notification,
    NotificationDue,
)
from messaging.wire import ConversationView


@dataclass(frozen=True)
class MessageBatch:
    """A page of the log: messages, the number it is complete up to, whether more exist."""

    conversation_id: int
    messages: list[Message]
    upto: int | None
    has_more: bool


def get_membership(*, user: User, conversation_id: int) -> Membership:
    """Return the user's membership (with its conversation), else raise NotAMember."""
    membership = (
        Membership.objects.select_related("conversation")
        .filter(conversation_id=conversation_id, user=user)
        .first()
    )
    if membership is None:
        raise NotAMember()
    return membership


def _clean_limit(limit: object) -> int:
    if limit is None:
        return int(settings.CHAT_FETCH_DEFAULT_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise BadRequest("limit must be an integer.", details={"field": "limit"})
    if not 1 <= limit <= settings.CHAT_FETCH_MAX_LIMIT:
        raise BadRequest(
            f"limit must be between 1 and {settings.CHAT_FETCH_MAX_LIMIT}.",
            details={"field": "limit"},
        )
    return limit


def _clean_position(value: object, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQ:
        raise BadRequest(f"{field} must be a non-negative integer.", details={"field": field})
    return value


def load_for_payload(messages: Sequence[Message]) -> None:
    """Read what the payloads of `messages` show beyond their own rows, in two queries.

    Their attachments (`load_attachments`) and the messages they reply to.
    """
    load_attachments(messages)
    load_quoted(messages)


def load_quoted(messages: Sequence[Message]) -> None:
    """Read the messages that `messages` reply to in one query; keep each on its reply."""
    wanted = {(m.conversation_id, m.reply_to_id) for m in messages if m.reply_to_id is not None}
    if not wanted:
        return
    found: dict[int, Message] = {}
    by_conversation: dict[int, list[int]] = {}
    for conversation_id, message_id in wanted:
        by_conversation.setdefault(conversation_id, []).append(message_id)
    query = Q()
    for conversation_id, ids in by_conversation.items():
        query |= Q(conversation_id=conversation_id, pk__in=ids)
    for quoted in Message.objects.filter(query):
        found[quoted.pk] = quoted
    for conversation_id, ids in by_conversation.items():
        missing = [pk for pk in ids if pk not in found]
        if missing:  # perhaps archived (`messaging.archive`)
            found.update(archive.find(conversation_id, missing))
    for message in messages:
        if message.reply_to_id is not None:
            message.loaded_reply = found.get(message.reply_to_id, False)


def load_attachments(messages: Sequence[Message]) -> None:
    """Read the attachments of `messages` in one query and keep them on each message.

    In the order they were attached. `prefetch_related("attachments")` reads the same in
    one query too, but builds a related manager and clones two querysets per message:
    most of the CPU of fetching a page of 200 messages without any attachment. The
    statement is written once (`_ATTACHMENTS_SQL`): compiling it with the ORM cost more
    than running it.
    """
    found: dict[int, list[Attachment]] = {m.pk: [] for m in messages if not m.archived}
    if found:
        condition, params = any_of("t.message_id", found)
        rows = fetch_prepared(_ATTACHMENTS_SQL.format(condition=condition), params)
        for row in rows:
            attachment, (message_id,) = _ATTACHMENTS.read(row)
            found[message_id].append(attachment)
    for message in messages:
        if not message.archived:  # an archived one got its own with it (`archive.attach`)
            message.loaded_attachments = found[message.pk]


_ATTACHMENTS = RowReader(Attachment)
_ATTACHMENTS_SQL = f"""
SELECT {_ATTACHMENTS.columns("a")}, t.message_id
  FROM {Message.attachments.through._meta.db_table} t
  JOIN {Attachment._meta.db_table} a ON a.id = t.attachment_id
 WHERE {{condition}}
 ORDER BY t.id
"""  # noqa: S608 - table names from the models' own metadata, values are parameters

_MESSAGES = RowReader(Message)
# The user's membership of a conversation and where the conversation's log stands.
_LOG_POSITION_SQL = f"""
SELECT m.visible_from_seq, c.last_seq, c.archived_through_seq
  FROM {Membership._meta.db_table} m
  JOIN {Conversation._meta.db_table} c ON c.id = m.conversation_id
 WHERE m.conversation_id = %s AND m.user_id = %s
"""  # noqa: S608 - table names from the models' own metadata, values are parameters
# A page of the log the user may read: from `visible_from_seq`, without the messages the
# user deleted for themself; `{window}` and `{order}` are the page's bounds and order.
_PAGE_SQL = f"""
SELECT {_MESSAGES.columns("x")}
  FROM {Message._meta.db_table} x
 WHERE x.conversation_id = %s AND x.seq >= %s AND {{window}}
   AND NOT EXISTS (SELECT 1 FROM {HiddenMessage._meta.db_table} h
                    WHERE h.user_id = %s AND h.message_id = x.id)
 ORDER BY {{order}}
 LIMIT %s
"""  # noqa: S608 - table names from the models' own metadata, values are parameters
_AFTER_SQL = _PAGE_SQL.format(window="x.version > %s AND x.version <= %s", order="x.version")
_BEFORE_SQL = _PAGE_SQL.format(window="x.seq < %s", order="x.seq DESC")
_NEWEST_SQL = _PAGE_SQL.format(window="1 = 1", order="x.seq DESC")


def _page(
    sql: str, conversation_id: int, floor: int, window: list[int], user_id: int, limit: int
) -> list[Message]:
    rows = fetch_prepared(sql, [conversation_id, floor, *window, user_id, limit])
    return [_MESSAGES.read(row)[0] for row in rows]


def list_messages_for_user(
    *,
    user: User,
    conversation_id: int,
    after: object = None,
    before: object = None,
    limit: object = None,
) -> MessageBatch:
    """Return a page of the log the user may read.

    With `after`: every message whose `version > after`, in version order, and `upto`,
    the log number the answer is complete up to. With `before`: the newest `limit`
    messages with `seq < before`, in seq order (`upto` is None). With neither: the
    newest page, like `before` past the end.
    """
    after_n = _clean_position(after, "after")
    before_n = _clean_position(before, "before")
    size = _clean_limit(limit)
    if after_n is not None and before_n is not None:
        raise BadRequest("Give either after or before, not both.", details={"field": "before"})
    # Read the log's end first: every change numbered up to it has committed (numbers are
    # taken under the row lock and committed in order), so the page below is complete.
    # Hand-written statements (`_LOG_POSITION_SQL`, `_PAGE_SQL`): built with the ORM, the
    # three queries of a fetch cost a gateway about 2 ms of CPU to compile, most of what a
    # reconnecting client's catch-up of one message cost.
    found = fetch_prepared(_LOG_POSITION_SQL, [conversation_id, user.pk])
    if not found:
        raise NotAMember()
    floor, last_seq, archived_through = found[0]
    window = _archive_window(user.pk, conversation_id, floor) if archived_through > 0 else None
    if after_n is not None:
        rows = _page(_AFTER_SQL, conversation_id, floor, [after_n, last_seq], user.pk, size + 1)
        if window is not None:  # merge what the archive holds (each message is in one)
            bound = rows[size].version if len(rows) > size else None
            rows += archive.after(
                window, after_version=after_n, upto=last_seq, want=size + 1, bound=bound
            )
            rows = sorted(rows, key=lambda message: message.version)[: size + 1]
        has_more = len(rows) > size
        rows = rows[:size]
        load_for_payload(rows)
        upto = rows[-1].version if has_more else max(last_seq, after_n)
        return MessageBatch(conversation_id, rows, upto, has_more)
    if before_n is not None:
        rows = _page(_BEFORE_SQL, conversation_id, floor, [before_n], user.pk, size + 1)
    else:
        rows = _page(_NEWEST_SQL, conversation_id, floor, [], user.pk, size + 1)
    if window is not None:
        above = rows[size].seq if len(rows) > size else 0
        rows += archive.before(window, before_seq=before_n, want=size + 1, above_seq=above)
        rows = sorted(rows, key=lambda message: -message.seq)[: size + 1]
    has_more = len(rows) > size
    rows = rows[:size]
    load_for_payload(rows)
    rows.reverse()
    return MessageBatch(conversation_id, rows, None, has_more)


def _archive_window(user_id: int, conversation_id: int, visible_from_seq: int) -> archive.Window:
    hidden = HiddenMessage.objects.filter(
        user_id=user_id, conversation_id=conversation_id
    ).values_list("message_id", flat=True)
    return archive.Window(conversation_id, visible_from_seq, frozenset(hidden))


def get_message_for_user(*, user: User, conversation_id: int, message_id: int) -> Message:
    """Return one message the user may read, else raise NotAMember or MessageNotFound."""
    membership = get_membership(user=user, conversation_id=conversation_id)
    message = Message.objects.filter(
        pk=message_id, conversation_id=conversation_id, seq__gte=membership.visible_from_seq
    ).first()
    if message is None and archive.has_segments(membership.conversation):
        message = archive.find_one(
            conversation_id, message_id, floor_seq=membership.visible_from_seq
        )
    if message is None:
        raise MessageNotFound()
    load_for_payload([message])
    return message


def _unread_subquery(user: User) -> Coalesce:
    unread = (
        Message.objects.filter(
            conversation_id=OuterRef("conversation_id"),
            seq__gt=OuterRef("read_seq"),
            kind=Message.Kind.TEXT,
            deleted=False,
        )
        .exclude(sender=user)
        .order_by()
        .values("conversation_id")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(unread, output_field=IntegerField()), Value(0))


def _view(membership: Membership, unread: int, peer: User | None) -> ConversationView:
    conversation = membership.conversation
    if conversation.kind == Conversation.Kind.DIRECT:
        title = (peer or membership.user).name
    else:
        title = conversation.title
    return ConversationView(
        id=conversation.pk,
        kind=conversation.kind,
        title=title,
        public=conversation.public,
        last_seq=conversation.last_seq,
        read_seq=membership.read_seq,
        delivered_seq=membership.delivered_seq,
        unread=unread,
        muted=membership.muted,
        notify=membership.notify,
        request=not membership.accepted,
        last_activity_at=conversation.last_activity_at,
        member_seq=conversation.member_seq,
        role=membership.role,
        description=conversation.description,
        picture_url=conversation.picture_url,
        post_policy=conversation.post_policy,
        peer=(peer.pk if peer else membership.user_id)
        if conversation.kind == Conversation.Kind.DIRECT
        else None,
        peer_avatar_url=(peer or membership.user).avatar_url
        if conversation.kind == Conversation.Kind.DIRECT
        else None,
    )


def _direct_peers(user: User, conversation_ids: list[int]) -> dict[int, User]:
    if not conversation_ids:
        return {}
    others = (
        Membership.objects.filter(conversation_id__in=conversation_ids)
        .exclude(user=user)
        .select_related("user")
    )
    return {m.conversation_id: m.user for m in others}


# One statement for the snapshot every connect and every `sync` (once a minute per
# socket) asks for. Built with the ORM (select_related, an unread subquery, ordering)
# it cost 3-4 ms of gateway CPU per call to compile, most of a gateway's CPU with
# 20,000 idle sockets (bench/, `connections`); the SQL is the same, written once. It is
# prepared (`fetch_prepared`): planning it took PostgreSQL three times as long as
# running it.
_CONVERSATIONS_SQL = f"""
SELECT c.id, c.kind, c.title, c.public, c.last_seq, c.member_seq, c.last_activity_at,
       c.created_by_id, m.read_seq, m.delivered_seq, m.muted, m.notify, m.accepted,
       m.role, c.description, c.picture, c.post_policy,
       (SELECT COUNT(*) FROM {Message._meta.db_table} x
         WHERE x.conversation_id = m.conversation_id AND x.seq > m.read_seq
           AND x.kind = %s AND x.deleted = %s
           AND (x.sender_id IS NULL OR x.sender_id <> m.user_id)),
       peer.id, peer.display_name, peer.username, peer.avatar
  FROM {Membership._meta.db_table} m
  JOIN {Conversation._meta.db_table} c ON c.id = m.conversation_id
  LEFT JOIN {User._meta.db_table} peer ON c.kind = %s AND peer.id = (
       SELECT pm.user_id FROM {Membership._meta.db_table} pm
        WHERE pm.conversation_id = m.conversation_id AND pm.user_id <> m.user_id
        ORDER BY pm.user_id LIMIT 1)
 WHERE m.user_id = %s
 ORDER BY c.last_activity_at DESC, c.id DESC
"""  # noqa: S608 - table names from the models' own metadata, values are parameters


def _aware(value: object) -> datetime | None:
    """Return a datetime column read by a raw cursor (SQLite gives text) as aware UTC."""
    if value is None:
        return None
    parsed = parse_datetime(value) if isinstance(value, str) else value
    assert isinstance(parsed, datetime)  # noqa: S101 - a DateTimeField column
    if settings.USE_TZ and timezone.is_naive(parsed):
        return timezone.make_aware(parsed, UTC)
    return parsed


def _unstarted(kind: str, last_seq: int, created_by: int | None, user_id: int) -> bool:
    """Whether a conversation is a direct chat someone else opened, with no message yet.

    It is not shown to this user until its first message (`services.send_message` then
    announces it). `created_by` is cleared once both members opened it.
    """
    return (
        kind == Conversation.Kind.DIRECT
        and last_seq == 0
        and created_by is not None
        and created_by != user_id
    )


def list_conversations_for_user(*, user: User) -> list[ConversationView]:
    """Return the user's conversations, most recently active first, with unread counts.

    Every membership is listed (the gateway follows them all); a direct chat someone
    else opened that has no message yet is `hidden` (`wire.shown` leaves it out).
    """
    rows = fetch_prepared(
        _CONVERSATIONS_SQL,
        [Message.Kind.TEXT.value, False, Conversation.Kind.DIRECT.value, user.pk],
    )
    views: list[ConversationView] = []
    for (
        cid, kind, title, public, last_seq, member_seq, last_activity_at,
        created_by, read_seq, delivered_seq, muted, notify, accepted,
        role, description, picture, post_policy, unread,
        peer_id, peer_display, peer_username, peer_avatar,
    ) in rows:  # fmt: skip
        direct = kind == Conversation.Kind.DIRECT
        if direct:
            title = (peer_display or peer_username) if peer_id is not None else user.name
        views.append(
            ConversationView(
                id=cid,
                kind=kind,
                title=title,
                public=bool(public),
                last_seq=last_seq,
                read_seq=read_seq,
                delivered_seq=delivered_seq,
                unread=int(unread or 0),
                muted=bool(muted),
                notify=notify,
                request=not accepted,
                last_activity_at=_aware(last_activity_at),
                member_seq=member_seq,
                role=role,
                description=description,
                picture_url=avatar_path(picture, 256) if picture else None,
                post_policy=post_policy,
                hidden=_unstarted(kind, last_seq, created_by, user.pk),
                peer=(peer_id if peer_id is not None else user.pk) if direct else None,
                peer_avatar_url=(
                    (avatar_path(peer_avatar, 256) if peer_avatar else None)
                    if peer_id is not None
                    else user.avatar_url
                )
                if direct
                else None,
            )
        )
    return views


def conversation_view_for_member(conversation: Conversation, user: User) -> ConversationView:
    """Return one member's view of a conversation (two or three queries)."""
    membership = (
        Membership.objects.select_related("conversation", "user")
        .annotate(unread=_unread_subquery(user))
        .filter(conversation=conversation, user=user)
        .first()
    )
    if membership is None:
        raise NotAMember()
    peer = None
    if conversation.kind == Conversation.Kind.DIRECT:
        peer = _direct_peers(user, [conversation.pk]).get(conversation.pk)
    return _view(membership, membership.unread, peer)


def get_conversation_for_user(*, user: User, conversation_id: int) -> ConversationView:
    """Return the user's view of a conversation they belong to, else raise NotAMember."""
    membership = get_membership(user=user, conversation_id=conversation_id)
    return conversation_view_for_member(membership.conversation, user)


def list_members(*, user: User, conversation_id: int) -> list[Membership]:
    """Return a conversation's memberships (with users), if `user` is one of its members."""
    get_membership(user=user, conversation_id=conversation_id)
    return list(
        Membership.objects.filter(conversation_id=conversation_id)
        .select_related("user")
        .order_by("joined_at", "pk")
    )


def list_public_groups(*, query: str = "", limit: int = 50) -> list[Conversation]:
    """Return public groups whose title contains `query`, most recently active first."""
    groups = Conversation.objects.filter(kind=Conversation.Kind.GROUP, public=True)
    if query:
        groups = groups.filter(Q(title__icontains=query))
    return list(groups.order_by("-last_activity_at")[:limit])


def list_conversation_ids_for_user(*, user: User) -> list[int]:
    """Return the ids of the user's conversations (one indexed query)."""
    return list(Membership.objects.filter(user=user).values_list("conversation_id", flat=True))


# What a connecting socket needs before its snapshot, in one statement: the ids of the
# user's conversations (to join their groups first) and the users in a block with them
# (its typing and presence filters). Two ORM queries cost a connect two compiles and two
# hops to a database thread.
_CONNECT_FACTS_SQL = f"""
SELECT 'c', conversation_id FROM {Membership._meta.db_table} WHERE user_id = %s
UNION ALL SELECT 'b', blocked_id FROM {Block._meta.db_table} WHERE blocker_id = %s
UNION ALL SELECT 'b', blocker_id FROM {Block._meta.db_table} WHERE blocked_id = %s
"""  # noqa: S608 - table names from the models' own metadata, values are parameters


def connect_facts(*, user_id: int) -> tuple[list[int], set[int]]:
    """Return the user's conversation ids and block set (`block_set`) in one query."""
    rows = fetch_prepared(_CONNECT_FACTS_SQL, [user_id, user_id, user_id])
    return [int(v) for k, v in rows if k == "c"], {int(v) for k, v in rows if k == "b"}


def get_member_seq_if_member(*, user: User, conversation_id: int) -> int | None:
    """Return the conversation's `member_seq` if `user` is a member, else None."""
    return (
        Membership.objects.filter(conversation_id=conversation_id, user=user)
        .values_list("conversation__member_seq", flat=True)
        .first()
    )


@dataclass(frozen=True)
class TypingTarget:
    """What a gateway needs to relay typing: the group's size and its membership number."""

    member_count: int
    member_seq: int
    # False for a message request not accepted yet: its typing is not shared.
    accepted: bool = True


def get_typing_target(*, user: User, conversation_id: int) -> TypingTarget:
    """Return the size and `member_seq` of a conversation the user is in, else NotAMember."""
    row = (
        Membership.objects.filter(conversation_id=conversation_id, user=user)
        .values_list("conversation__member_seq", "accepted")
        .first()
    )
    if row is None:
        raise NotAMember()
    count = Membership.objects.filter(conversation_id=conversation_id).count()
    return TypingTarget(member_count=count, member_seq=row[0], accepted=row[1])


def contacts_among(*, user: User, user_ids: Sequence[int]) -> set[int]:
    """Return which of `user_ids` are contacts of `user`: they share an accepted conversation.

    Both memberships must be accepted: a message request makes no contact until it is
    accepted, so a stranger who starts one learns nothing (presence, receipts, typing).
    """
    if not user_ids:
        return set()
    mine = Membership.objects.filter(user=user, accepted=True).values("conversation_id")
    return set(
        Membership.objects.filter(conversation_id__in=mine, user_id__in=user_ids, accepted=True)
        .exclude(user=user)
        .values_list("user_id", flat=True)
        .distinct()
    )


def filter_visible_users(*, user: User, user_ids: list[int]) -> set[int]:
    """Return which of `user_ids` may see each other's presence with `user`.

    Its contacts, but for a pair where one blocked the other.
    """
    shared = _unblocked_contacts_among(user=user, user_ids=user_ids)
    if user.pk in user_ids:
        shared.add(user.pk)
    return shared


def get_log_positions(*, user_ids: list[int]) -> dict[int, int]:
    """Return each user's log position: the sum of `last_seq` over their conversations.

    It only grows while the user's conversations do, and changes with every change in
    any of them, so a client whose own sum differs has missed an event (`pong`).
    """
    condition, params = any_of("m.user_id", user_ids)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT m.user_id, SUM(c.last_seq) FROM {Membership._meta.db_table} m"  # noqa: S608 - our tables
            f" JOIN {Conversation._meta.db_table} c ON c.id = m.conversation_id"
            f" WHERE {condition} GROUP BY m.user_id",
            params,
        )
        rows = cursor.fetchall()
    positions = {user_id: 0 for user_id in user_ids}
    positions.update({user_id: int(position or 0) for user_id, position in rows})
    return positions


def get_marker_sums(*, conversation_ids: list[int]) -> dict[int, int]:
    """Return each conversation's marker sum: `read_seq + delivered_seq` over its members.

    A member who has not accepted a message request counts 0, as the member list shows
    them (`wire.member_payload`). Markers only grow, so a client whose own sum over the
    member list it holds is lower has missed a `receipt.updated` (`pong`).
    """
    condition, params = any_of("conversation_id", conversation_ids)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conversation_id, SUM(CASE WHEN accepted THEN read_seq + delivered_seq"  # noqa: S608 - our table
            f" ELSE 0 END) FROM {Membership._meta.db_table} WHERE {condition}"
            " GROUP BY conversation_id",
            params,
        )
        rows = cursor.fetchall()
    sums = {conversation_id: 0 for conversation_id in conversation_ids}
    sums.update({conversation_id: int(total or 0) for conversation_id, total in rows})
    return sums


def list_notifications_for_user(
    *, user: User, conversation_id: int, message_id: int
) -> list[Notification]:
    """Return the trace of a message's notifications to `user` (members only).

    While the message's delay runs nothing is decided yet: the answer is then a pending
    row per device (and email, if on), as the decision will be taken for each of them.
    """
    message = get_message_for_user(
        user=user, conversation_id=conversation_id, message_id=message_id
    )
    rows = list(
        Notification.objects.filter(message=message, user=user).order_by("created_at", "pk")
    )
    due = NotificationDue.objects.filter(message=message).values_list("due_at", flat=True).first()
    if rows or due is None or message.sender_id == user.pk:
        return rows
    pending = Notification.Decision.PENDING

    def planned(channel: str, device: Device | None) -> Notification:
        return Notification(
            user=user,
            conversation_id=conversation_id,
            message=message,
            seq=message.seq,
            channel=channel,
            device=device,
            device_key=device.pk if device else 0,
            decision=pending,
            updated_at=due,
        )

    planned_rows = [planned(d.platform, d) for d in Device.objects.filter(user=user).order_by("pk")]
    if user.email and user.email_notifications:
        planned_rows.append(planned(Notification.Channel.EMAIL, None))
    return planned_rows or [planned(Notification.Channel.PUSH, None)]


def list_devices_for_user(*, user: User) -> list[Device]:
    """Return the user's push targets, newest first."""
    return list(Device.objects.filter(user=user).order_by("-created_at", "-pk"))


# --- blocking, reports, delete for me ---------------------------------------------------


def is_blocked_pair(user_id: int, other_id: int) -> bool:
    """Return whether either of two users blocked the other."""
    return Block.objects.filter(
        Q(blocker_id=user_id, blocked_id=other_id) | Q(blocker_id=other_id, blocked_id=user_id)
    ).exists()


def block_set(*, user_id: int) -> set[int]:
    """Return the users `user_id` blocked or was blocked by (one query; both directions)."""
    made = Block.objects.filter(blocker_id=user_id).values_list("blocked_id", flat=True)
    received = Block.objects.filter(blocked_id=user_id).values_list("blocker_id", flat=True)
    return set(made.union(received))


def list_blocks(*, user: User) -> list[Block]:
    """Return the people `user` blocked, newest first."""
    return list(
        Block.objects.filter(blocker=user).select_related("blocked").order_by("-created_at", "-pk")
    )


def list_hidden_messages(*, user: User, after: int, limit: int) -> list[HiddenMessage]:
    """Return the user's hidden messages with an id past `after`, in id order."""
    return list(HiddenMessage.objects.filter(user=user, pk__gt=after).order_by("pk")[:limit])


def _unblocked_contacts_among(*, user: User, user_ids: Sequence[int]) -> set[int]:
    """Return `contacts_among` but a pair where one blocked the other (in one query)."""
    if not user_ids:
        return set()
    mine = Membership.objects.filter(user=user, accepted=True).values("conversation_id")
    blocked = Block.objects.filter(blocker=user).values("blocked_id")
    blocked_by = Block.objects.filter(blocked=user).values("blocker_id")
    return set(
        Membership.objects.filter(conversation_id__in=mine, user_id__in=user_ids, accepted=True)
        .exclude(user=user)
        .exclude(user_id__in=blocked)
        .exclude(user_id__in=blocked_by)
        .values_list("user_id", flat=True)
        .distinct()
    )
