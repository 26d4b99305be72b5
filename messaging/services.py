"""Writes: the one path every transport (WebSocket, REST, admin, commands) calls.

Every change to a conversation takes the next log number under the conversation's row
lock, inside the transaction that makes the change, so numbers are gap-free and in
commit order (PROTOCOL.md section 1). Broadcasts and task enqueues happen on commit.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

from django.conf import settings
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import F, OuterRef, Q, Subquery, Value
from django.db.models.functions import Greatest, Least, Lower
from django.utils import timezone

from accounts import avatars
from accounts.models import User
from chatsite import metrics, ratelimit, text
from chatsite.errors import DomainError
from chatsite.logs import correlated, trace
from chatsite.sql import fetch_prepared
from messaging import archive, events, housekeeping, reactions, selectors, wire
from messaging.errors import (
    AdminsOnly,
    BadRequest,
    CannotSend,
    Conflict,
    EmptyMessage,
    GroupFull,
    MessageArchived,
    MessageNotFound,
    MessageTooLong,
    NotAllowed,
    NotAMember,
    RateLimited,
    UserNotFound,
)
from messaging.mentions import mention_candidates
from messaging.models import (
    Block,
    Conversation,
    HiddenMessage,
    Membership,
    Message,
    NotificationDue,
    NotifyLevel,
    PushWindow,
    Report,
)
from messaging.selectors import TypingTarget

logger = logging.getLogger(__name__)

Role = Membership.Role


@dataclass(frozen=True)
class SendResult:
    """The stored message, and whether this call created it (False for a replay).

    The message carries what its payload shows beyond its row (its attachments, the
    message it quotes): `wire.message_payload` asks no query for it.
    """

    message: Message
    created: bool


@dataclass(frozen=True)
class Markers:
    """A member's delivered and read markers after a receipt."""

    conversation_id: int
    user_id: int
    delivered_seq: int
    read_seq: int
    changed: bool


# --- helpers ---------------------------------------------------------------------------


def _clean_body(body: str, *, allow_empty: bool = False) -> str:
    """Return the body if it is within the limits, else raise."""
    if len(body) > settings.CHAT_MAX_MESSAGE_LENGTH:
        raise MessageTooLong(
            f"The message is longer than {settings.CHAT_MAX_MESSAGE_LENGTH} characters.",
            details={"max_length": settings.CHAT_MAX_MESSAGE_LENGTH},
        )
    if "\x00" in body:
        # PostgreSQL text cannot hold NUL; refuse it as bad input, not a database error.
        raise BadRequest("body must not contain NUL characters.", details={"field": "body"})
    if not allow_empty and not body.strip():
        raise EmptyMessage()
    return body


def _clean_title(title: str) -> str:
    """Return the title cleaned by the one rule for names (`chatsite.text`), else raise."""
    if not title.strip():
        raise BadRequest("A group needs a title.", details={"field": "title"})
    return text.clean_name(title, field="title", max_length=settings.CHAT_MAX_TITLE_LENGTH)


def _distinct(ids: Iterable[int]) -> list[int]:
    """Return the ids without repeats, in their first order."""
    return list(dict.fromkeys(ids))


def _active_users(user_ids: Sequence[int]) -> list[User]:
    """Return the users for `user_ids`, or raise UserNotFound naming the missing ones."""
    users = {u.pk: u for u in User.objects.filter(pk__in=user_ids, is_active=True)}
    missing = [uid for uid in user_ids if uid not in users]
    if missing:
        raise UserNotFound(details={"users": missing})
    return [users[uid] for uid in user_ids]


def _lock_conversation(conversation_id: int) -> Conversation:
    """Return the conversation with its row locked until commit, or raise NotAMember."""
    conversation = Conversation.objects.select_for_update().filter(pk=conversation_id).first()
    if conversation is None:
        raise NotAMember()
    return conversation


def _take_seq(
    conversation: Conversation, *, membership_change: bool = False, activity: bool = True
) -> int:
    """Give the next log number of a conversation locked by this transaction.

    `activity=False` leaves `last_activity_at` (the conversation list's order) as it is.
    """
    conversation.last_seq += 1
    changes: dict[str, Any] = {"last_seq": conversation.last_seq}
    if activity:
        conversation.last_activity_at = changes["last_activity_at"] = timezone.now()
    if membership_change:
        conversation.member_seq = changes["member_seq"] = conversation.last_seq
    Conversation.objects.filter(pk=conversation.pk).update(**changes)
    return conversation.last_seq


def _membership(conversation: Conversation, user: User) -> Membership:
    """Return the user's membership of a conversation, or raise NotAMember."""
    membership = Membership.objects.filter(conversation=conversation, user=user).first()
    if membership is None:
        raise NotAMember()
    return membership


def _without_attachments(message: Message) -> None:
    """Tell the payload builders a new message has no attachments (no query to ask)."""
    message.loaded_attachments = []


def _write_system_message(
    conversation: Conversation,
    *,
    actor: User,
    seq: int,
    event: str,
    users: Sequence[User],
    body: str,
    title: str | None = None,
    read_seq: int | None = None,
    extra: dict[str, Any] | None = None,
) -> Message:
    """Store a system message at `seq` and broadcast it on commit (`extra`: more facts)."""
    system: dict[str, Any] = {"event": event, "users": [u.pk for u in users], **(extra or {})}
    if title is not None:
        system["title"] = title
    if read_seq is not None:
        system["read_seq"] = read_seq
    message = Message.objects.create(
        conversation=conversation,
        seq=seq,
        version=seq,
        kind=Message.Kind.SYSTEM,
        sender=actor,
        body=body,
        system=system,
    )
    _without_attachments(message)
    events.to_conversation_on_commit(
        conversation.pk, conversation.member_seq, wire.message_created_frame(message)
    )
    return message


def _names(users: Sequence[User]) -> str:
    return ", ".join(u.name for u in users)


def _summary(conversation: Conversation) -> wire.ConversationSummary:
    return wire.conversation_summary(
        id=conversation.pk,
        kind=conversation.kind,
        title=conversation.title,
        public=conversation.public,
        last_seq=conversation.last_seq,
        description=conversation.description,
        picture_url=conversation.picture_url,
        post_policy=conversation.post_policy,
    )


def _welcomed(actor: User, users: Sequence[User], *, direct: bool = False) -> set[int]:
    """Return the ids of `users` that `actor` may put in a conversation without asking.

    The others get a message request. A direct chat is a request unless they are
    contacts; a group add follows each user's `group_adds` (everyone, contacts, nobody).
    """
    asked = [
        u.pk
        for u in users
        if u.pk != actor.pk and (direct or u.group_adds == User.GroupAdds.CONTACTS)
    ]
    contacts = selectors.contacts_among(user=actor, user_ids=asked)
    return {
        u.pk
        for u in users
        if u.pk == actor.pk
        or u.pk in contacts
        or (not direct and u.group_adds == User.GroupAdds.EVERYONE)
    }


def _announce_membership(
    conversation: Conversation,
    users: Iterable[User],
    reason: wire.ConversationReason,
    *,
    requests: Iterable[int] = (),
    shown_to: Iterable[int] | None = None,
) -> None:
    """Tell each user's connections on commit that they joined or left a conversation.

    A newcomer's view needs no query: their markers start at the log's end, nothing is
    unread. A departing user is told the summary every member may see. `shown_to`: only
    these of `users` get the frame (all by default); the others' gateways just follow
    the conversation (`follow_only`).
    """
    people = list(users)
    asked = set(requests)
    shown = None if shown_to is None else set(shown_to)
    items = []
    for user in people:
        payload: wire.ConversationSummary | wire.ConversationPayload
        if reason in ("left", "removed"):
            payload = _summary(conversation)
        else:
            peer = next((p for p in people if p.pk != user.pk), user)
            is_direct = conversation.kind == Conversation.Kind.DIRECT
            view = wire.ConversationView(
                id=conversation.pk,
                kind=conversation.kind,
                title=peer.name if is_direct else conversation.title,
                public=conversation.public,
                last_seq=conversation.last_seq,
                read_seq=conversation.last_seq,
                delivered_seq=conversation.last_seq,
                unread=0,
                muted=False,
                request=user.pk in asked,
                last_activity_at=conversation.last_activity_at,
                peer=peer.pk if is_direct else None,
                peer_avatar_url=peer.avatar_url if is_direct else None,
                member_seq=conversation.member_seq,
                # Only a group's creator is anything but a plain member on arrival.
                role=Role.OWNER
                if reason == "created" and not is_direct and user.pk == conversation.created_by_id
                else Role.MEMBER,
                description=conversation.description,
                picture_url=conversation.picture_url,
                post_policy=conversation.post_policy,
            )
            payload = wire.conversation_payload(view)
        frame = wire.conversation_updated_frame(payload, reason)
        event = events.user_event(conversation.pk, conversation.member_seq, frame)
        if shown is not None and user.pk not in shown:
            event["follow_only"] = True
        items.append((events.user_group(user.pk), event))
    events.send_events_on_commit(items)


def _announce_view(
    conversation: Conversation, user_ids: Iterable[int], reason: wire.ConversationReason
) -> None:
    """Tell these members' connections on commit their view of the conversation as it is now.

    For a conversation they were in but not shown (`selectors._unstarted`): its gateway
    follows it from this event on, and the client lists it.
    """
    items = []
    for user_id in user_ids:
        user = User.objects.get(pk=user_id)
        view = selectors.conversation_view_for_member(conversation, user)
        frame = wire.conversation_updated_frame(wire.conversation_payload(view), reason)
        event = events.user_event(conversation.pk, view.member_seq, frame)
        items.append((events.user_group(user_id), event))
    events.send_events_on_commit(items)


def announce_user_updated(user_id: int) -> int:
    """Tell every conversation of the user what others now see of them (`user.updated`).

    Run when a display name or picture changed (`accounts.services.profile_changed`):
    the members' clients redraw names and pictures live. Answer how many conversations
    were told.
    """
    user = User.objects.filter(pk=user_id).first()
    if user is None:
        return 0
    frame = wire.user_updated_frame(user)
    rows = Conversation.objects.filter(memberships__user_id=user_id).values_list("pk", "member_seq")
    items = [
        (events.conversation_group(cid), events.conversation_event(cid, member_seq, frame))
        for cid, member_seq in rows
    ]
    events.send_events_on_commit(items)
    return len(items)


# --- conversations ---------------------------------------------------------------------


def create_direct_conversation(*, user: User, other_user_id: int) -> tuple[Conversation, bool]:
    """Return the direct conversation of two users, creating it if needed (idempotent).

    The second value is True when this call created it. Creating writes nothing to
    the log: a direct conversation's log starts empty. With someone who is not a
    contact, it is a message request to them. One who declined a request is asked
    again when the other opens the chat again.
    """
    (other,) = _active_users([other_user_id])
    low, high = sorted((user.pk, other.pk))
    key = f"{low}:{high}"
    people = [user] if user.pk == other.pk else [user, other]
    existing = Conversation.objects.filter(direct_key=key).first()
    if existing is not None:
        _rejoin_direct(existing, user, people)
        if existing.last_seq == 0 and existing.created_by_id not in (None, user.pk):
            # The other one opened it first, and it has no message yet: now both did, and
            # it is listed for both (`selectors._unstarted`); tell this one's devices.
            with transaction.atomic():
                cleared = Conversation.objects.filter(
                    pk=existing.pk, last_seq=0, created_by=existing.created_by_id
                ).update(created_by=None)
                if cleared:
                    _announce_view(existing, [user.pk], "created")
        return existing, False
    welcomed = _welcomed(user, people, direct=True)
    try:
        with transaction.atomic():
            conversation = Conversation.objects.create(
                kind=Conversation.Kind.DIRECT, direct_key=key, created_by=user
            )
            Membership.objects.bulk_create(
                Membership(
                    conversation=conversation,
                    user=p,
                    role=Role.MEMBER,
                    accepted=p.pk in welcomed,
                )
                for p in people
            )
            asked = [p.pk for p in people if p.pk not in welcomed]
            # Shown to its creator only: the other person's gateway follows it, and their
            # client lists it when its first message arrives (then `sync` shows it).
            _announce_membership(
                conversation, people, "created", requests=asked, shown_to=[user.pk]
            )
    except IntegrityError:
        # Both users asked at once; the other request created it first.
        return Conversation.objects.get(direct_key=key), False
    return conversation, True


def _rejoin_direct(conversation: Conversation, user: User, people: list[User]) -> None:
    """Give back the membership of a direct chat's member who declined it."""
    present = set(
        Membership.objects.filter(conversation=conversation).values_list("user_id", flat=True)
    )
    missing = [p for p in people if p.pk not in present]
    if not missing:
        return
    welcomed = _welcomed(user, people, direct=True)
    with transaction.atomic():
        conversation = _lock_conversation(conversation.pk)
        for p in missing:
            Membership.objects.get_or_create(
                conversation=conversation,
                user=p,
                defaults={
                    "role": Role.MEMBER,
                    "accepted": p.pk in welcomed,
                    "read_seq": conversation.last_seq,
                    "delivered_seq": conversation.last_seq,
                },
            )
        asked = [p.pk for p in missing if p.pk not in welcomed]
        _announce_membership(conversation, missing, "joined", requests=asked)


def create_group(
    *, creator: User, title: str, member_ids: Iterable[int] = (), public: bool = False
) -> Conversation:
    """Create a group owned by `creator` with the given members; log `created` as seq 1."""
    title = _clean_title(title)
    ids = [uid for uid in _distinct(member_ids) if uid != creator.pk]
    members = _active_users(ids)
    if 1 + len(members) > settings.CHAT_MAX_GROUP_MEMBERS:
        raise GroupFull(
            f"A group has at most {settings.CHAT_MAX_GROUP_MEMBERS} members.",
            details={"max_members": settings.CHAT_MAX_GROUP_MEMBERS},
        )
    everyone = [creator, *members]
    welcomed = _welcomed(creator, everyone)
    with transaction.atomic():
        conversation = Conversation.objects.create(
            kind=Conversation.Kind.GROUP, title=title, public=public, created_by=creator
        )
        seq = _take_seq(conversation, membership_change=True)
        Membership.objects.bulk_create(
            Membership(
                conversation=conversation,
                user=u,
                role=Role.OWNER if u.pk == creator.pk else Role.MEMBER,
                read_seq=seq,
                delivered_seq=seq,
                accepted=u.pk in welcomed,
            )
            for u in everyone
        )
        _write_system_message(
            conversation,
            actor=creator,
            seq=seq,
            event="created",
            users=everyone,
            title=title,
            body=f"{creator.name} created the group “{title}”.",
        )
        asked = [u.pk for u in everyone if u.pk not in welcomed]
        _announce_membership(conversation, everyone, "created", requests=asked)
    return conversation


def _check_room(conversation: Conversation, adding: int) -> None:
    count = Membership.objects.filter(conversation=conversation).count()
    if count + adding > settings.CHAT_MAX_GROUP_MEMBERS:
        raise GroupFull(
            f"A group has at most {settings.CHAT_MAX_GROUP_MEMBERS} members.",
            details={"max_members": settings.CHAT_MAX_GROUP_MEMBERS, "members": count},
        )


def _new_membership(
    conversation: Conversation, user: User, seq: int, *, accepted: bool = True
) -> Membership:
    # Public groups show their whole history; a private group shows a new member the
    # log from their addition on (so a removed and re-added member never sees the gap).
    return Membership(
        conversation=conversation,
        user=user,
        role=Role.MEMBER,
        read_seq=seq,
        delivered_seq=seq,
        visible_from_seq=0 if conversation.public else seq,
        accepted=accepted,
    )


def add_members(*, actor: User, conversation_id: int, user_ids: Iterable[int]) -> list[int]:
    """Add users to a group (owners and admins only); return the ids actually added."""
    ids = _distinct(user_ids)
    if not ids:
        raise BadRequest("Name at least one user to add.", details={"field": "users"})
    users = _active_users(ids)
    with transaction.atomic():
        conversation = _lock_conversation(conversation_id)
        membership = _membership(conversation, actor)
        if conversation.kind != Conversation.Kind.GROUP:
            raise BadRequest("Members can only be added to groups.")
        if not membership.is_admin:
            raise NotAllowed("Only the group's owner and admins can add members.")
        present = set(
            Membership.objects.filter(conversation=conversation, user__in=users).values_list(
                "user_id", flat=True
            )
        )
        new = [u for u in users if u.pk not in present]
        if not new:
            return []
        _check_room(conversation, len(new))
        welcomed = _welcomed(actor, new)
        seq = _take_seq(conversation, membership_change=True)
        Membership.objects.bulk_create(
            _new_membership(conversation, u, seq, accepted=u.pk in welcomed) for u in new
        )
        _write_system_message(
            conversation,
            actor=actor,
            seq=seq,
            event="added",
            users=new,
            body=f"{actor.name} added {_names(new)}.",
        )
        asked = [u.pk for u in new if u.pk not in welcomed]
        _announce_membership(conversation, new, "joined", requests=asked)
    return [u.pk for u in new]


def accept_request(*, user: User, conversation_id: int) -> Conversation:
    """Accept a message request: from now on the conversation is like any other.

    Idempotent. The user's devices get `conversation.updated` (`accepted`) with their
    view, whose `request` is now false.
    """
    with transaction.atomic():
        conversation = _lock_conversation(conversation_id)
        membership = _membership(conversation, user)
        if membership.accepted:
            return conversation
        membership.accepted = True
        membership.save(update_fields=["accepted"])
        if conversation.last_seq == 0 and conversation.created_by_id not in (None, user.pk):
            # Accepted before its first message: it is listed for both from now on.
            conversation.created_by = None
            conversation.save(update_fields=["created_by"])
        _announce_accepted(conversation.pk, user)
    return conversation


def _announce_accepted(conversation_id: int, user: User) -> None:
    """Tell everyone concerned on commit that `user` accepted a message request.

    The user's devices get `conversation.updated` (`accepted`) with their view; in a
    direct chat the other member's devices get theirs too (their client may now follow
    the user's presence); and the members get the user's markers as `receipt.updated`,
    which were kept from them until now.
    """
    conversation = Conversation.objects.get(pk=conversation_id)
    member_seq = conversation.member_seq
    people = [user]
    if conversation.kind == Conversation.Kind.DIRECT:
        people += [
            m.user
            for m in Membership.objects.filter(conversation=conversation)
            .exclude(user=user)
            .select_related("user")
        ]
    items = []
    for person in people:
        view = selectors.conversation_view_for_member(conversation, person)
        frame = wire.conversation_updated_frame(wire.conversation_payload(view), "accepted")
        items.append(
            (events.user_group(person.pk), events.user_event(conversation_id, member_seq, frame))
        )
    markers = Membership.objects.get(conversation=conversation, user=user)
    receipt = wire.receipt_updated_frame(
        conversation_id=conversation_id,
        user_id=user.pk,
        delivered_seq=markers.delivered_seq,
        read_seq=markers.read_seq,
    )
    items.append(
        (
            events.conversation_group(conversation_id),
            events.conversation_event(conversation_id, member_seq, receipt),
        )
    )
    events.send_events_on_commit(items)


def decline_request(*, user: User, conversation_id: int) -> None:
    """Decline a message request: the user leaves it (a group logs it, a direct chat not).

    A direct chat's requester may ask again by opening the chat again; a group's admin
    by adding the user again.
    """
    with transaction.atomic():
        conversation = _lock_conversation(conversation_id)
        membership = _membership(conversation, user)
        if membership.accepted:
            raise BadRequest("Only a message request can be declined; leave the group instead.")
        if conversation.kind == Conversation.Kind.GROUP:
            _depart(conversation, membership, user, actor=user, event="left")
            return
        membership.delete()
        _announce_membership(conversation, [user], "left")


def join_conversation(*, user: User, conversation_id: int) -> Conversation:
    """Join a public group (idempotent); anything else looks like a missing conversation."""
    with transaction.atomic():
        conversation = _lock_conversation(conversation_id)
        if conversation.kind != Conversation.Kind.GROUP or not conversation.public:
            if not Membership.objects.filter(conversation=conversation, user=user).exists():
                raise NotAMember()
            return conversation
        if Membership.objects.filter(conversation=conversation, user=user).exists():
            return conversation
        _check_room(conversation, 1)
        seq = _take_seq(conversation, membership_change=True)
        _new_membership(conversation, user, seq).save()
        _write_system_message(
            conversation,
            actor=user,
            seq=seq,
            event="joined",
            users=[user],
            body=f"{user.name} joined.",
        )
        _announce_membership(conversation, [user], "joined")
    return conversation


def _depart(
    conversation: Conversation, departing: Membership, user: User, *, actor: User, event: str
) -> None:
    """Log a departure, delete the membership, hand ownership on if the owner left."""
    seq = _take_seq(conversation, membership_change=True)
    body = f"{user.name} left." if event == "left" else f"{actor.name} removed {user.name}."
    # How far they had read: their reads keep counting in "Read by k of N" (the client).
    _write_system_message(
        conversation,
        actor=actor,
        seq=seq,
        event=event,
        users=[user],
        body=body,
        read_seq=departing.read_seq,
    )
    departing.delete()
    if departing.role == Role.OWNER:
        # The longest-standing admin inherits the group, else the longest-standing member.
        remaining = Membership.objects.filter(conversation=conversation).order_by("joined_at", "pk")
        heir = remaining.filter(role=Role.ADMIN).first() or remaining.first()
        if heir is not None:
            heir.role = Role.OWNER
            heir.save(update_fields=["role"])
    _announce_membership(conversation, [user], "left" if event == "left" else "removed")


def leave_conversation(*, user: User, conversation_id: int) -> None:
    """Leave a group; the log records it, and an owner's role passes to an admin or member."""
    with transaction.atomic():
        conversation = _lock_conversation(conversation_id)
        membership = _membership(conversation, user)
        if conversation.kind != Conversation.Kind.GROUP:
            raise BadRequest("You cannot leave a direct conversation.")
        _depart(conversation, membership, user, actor=user, event="left")


def remove_member(*, actor: User, conversation_id: int, user_id: int) -> None:
    """Remove a member from a group (owner: anyone; admin: plain members); self means leave."""
    target_id = user_id
    if target_id == actor.pk:
        leave_conversation(user=actor, conversation_id=conversation_id)
        return
    with transaction.atomic():
        conversation = _lock_conversation(conversation_id)
        membership = _membership(conversation, actor)
        if conversation.kind != Conversation.Kind.GROUP:
            raise BadRequest("Members can only be removed from groups.")
        if not membership.is_admin:
            raise NotAllowed("Only the group's owner and admins can remove members.")
        target = (
            Membership.objects.select_related("user")
            .filter(conversation=conversation, user_id=target_id)
            .first()
        )
        if target is None:
            raise UserNotFound("That user is not a member of this group.")
        if target.role != Role.MEMBER and membership.role != Role.OWNER:
            raise NotAllowed("Only the owner can remove the owner or an admin.")
        _depart(conversation, target, target.user, actor=actor, event="removed")


def rename_conversation(*, actor: User, conversation_id: int, title: str) -> Conversation:
    """Rename a group (owners and admins); the log records it."""
    title = _clean_title(title)
    with transaction.atomic():
        conversation = _lock_conversation(conversation_id)
        membership = _membership(conversation, actor)
        if conversation.kind != Conversation.Kind.GROUP:
            raise BadRequest("Only groups have a title.")
        if not membership.is_admin:
            raise NotAllowed("Only the group's owner and admins can rename it.")
        if title == conversation.title:
            return conversation
        seq = _take_seq(conversation)
        conversation.title = title
        Conversation.objects.filter(pk=conversation.pk).update(title=title)
        _write_system_message(
            conversation,
            actor=actor,
            seq=seq,
            event="renamed",
            users=[],
            title=title,
            body=f"{actor.name} renamed the group to “{title}”.",
        )
        events.to_conversation_on_commit(
            conversation.pk,
            conversation.member_seq,
            wire.conversation_updated_frame(_summary(conversation), "renamed"),
        )
    return conversation


def _group_admin(conversation_id: int, actor: User, doing: str) -> tuple[Conversation, Membership]:
    """Lock a group and return it with the actor's membership, if they may manage it."""
    conversation = _lock_conversation(conversation_id)
    membership = _membership(conversation, actor)
    if conversation.kind != Conversation.Kind.GROUP:
        raise BadRequest("Only groups have settings.")
    if not membership.is_admin:
        raise NotAllowed(f"Only the group's owner and admins can {doing}.")
    return conversation, membership


def _announce_settings(conversation: Conversation) -> None:
    """Tell every member's connections on commit the group's settings as they are now."""
    events.to_conversation_on_commit(
        conversation.pk,
        conversation.member_seq,
        wire.conversation_updated_frame(_summary(conversation), "settings"),
    )


def _clean_description(description: str) -> str:
    limit = settings.CHAT_MAX_DESCRIPTION_LENGTH
    if len(description) > limit:
        raise BadRequest(
            f"The description is longer than {limit} characters.",
            details={"field": "description", "max_length": limit},
        )
    if "\x00" in description:
        raise BadRequest(
            "description must not contain NUL characters.", details={"field": "description"}
        )
    return description.strip()


def _log_setting(
    conversation: Conversation,
    actor: User,
    field: str,
    value: str,
    body: str,
    *,
    extra: dict[str, Any] | None = None,
) -> None:
    """Set one of a locked group's settings and log it (event `field`) at the next seq."""
    seq = _take_seq(conversation, activity=False)
    setattr(conversation, field, value)
    Conversation.objects.filter(pk=conversation.pk).update(**{field: value})
    _write_system_message(
        conversation, actor=actor, seq=seq, event=field, users=[], body=body, extra=extra
    )


def update_group(
    *,
    actor: User,
    conversation_id: int,
    description: str | None = None,
    post_policy: str | None = None,
) -> Conversation:
    """Change a group's description or who may post (owners and admins).

    Each change that changes something is a system message in the log (`description`,
    `post_policy`) and a `conversation.updated` (`settings`) to every member.
    """
    if description is not None:
        description = _clean_description(description)
    if post_policy is not None and post_policy not in Conversation.PostPolicy.values:
        raise BadRequest(
            "post_policy must be one of: everyone, admins.", details={"field": "post_policy"}
        )
    with transaction.atomic():
        conversation, _ = _group_admin(conversation_id, actor, "change its settings")
        changed = False
        if description is not None and description != conversation.description:
            said = "changed" if description else "removed"
            _log_setting(
                conversation,
                actor,
                "description",
                description,
                f"{actor.name} {said} the group description.",
            )
            changed = True
        if post_policy is not None and post_policy != conversation.post_policy:
            who = "only admins" if post_policy == Conversation.PostPolicy.ADMINS else "everyone"
            _log_setting(
                conversation,
                actor,
                "post_policy",
                post_policy,
                f"{actor.name} changed who can send messages: {who}.",
                extra={"post_policy": post_policy},
            )
            changed = True
        if changed:
            _announce_settings(conversation)
    return conversation


def set_group_picture(
    *, actor: User, conversation_id: int, upload: Any = None, crop: Any = None
) -> Conversation:
    """Set (`upload`, cropped like a profile picture) or remove (None) a group's picture.

    The picture is checked and stored before the group is locked; a refused upload, or
    an actor who may not change it, leaves the picture there was.
    """
    with transaction.atomic():
        _group_admin(conversation_id, actor, "change its picture")  # before any decoding
    picture = "" if upload is None else avatars.store_picture(upload, crop, namespace=b"group")
    with transaction.atomic():
        conversation, _ = _group_admin(conversation_id, actor, "change its picture")
        old = conversation.picture
        if picture == old:
            return conversation
        said = "changed" if picture else "removed"
        _log_setting(
            conversation, actor, "picture", picture, f"{actor.name} {said} the group picture."
        )
        _announce_settings(conversation)
    if old and not Conversation.objects.filter(picture=old).exists():
        avatars.delete_picture_files(old)
    return conversation


def set_role(*, actor: User, conversation_id: int, user_id: int, role: str) -> Membership:
    """Make a member an admin, or an admin a plain member again.

    Owners and admins may make members admins; the owner may dismiss any admin, and an
    admin may step down. The owner's own role does not change here (they hand the
    group on by leaving it). The log records each change (`role`).
    """
    if role not in (Role.ADMIN, Role.MEMBER):
        raise BadRequest("role must be one of: admin, member.", details={"field": "role"})
    with transaction.atomic():
        conversation, membership = _group_admin(conversation_id, actor, "change roles")
        target = (
            Membership.objects.select_related("user")
            .filter(conversation=conversation, user_id=user_id)
            .first()
        )
        if target is None:
            raise UserNotFound("That user is not a member of this group.")
        if target.role == Role.OWNER:
            raise NotAllowed("The owner's role cannot be changed.")
        if target.role == role:
            return target
        if role == Role.MEMBER and membership.role != Role.OWNER and target.user_id != actor.pk:
            raise NotAllowed("Only the owner can dismiss another admin.")
        seq = _take_seq(conversation, activity=False)
        target.role = role
        target.save(update_fields=["role"])
        if role == Role.ADMIN:
            body = f"{actor.name} made {target.user.name} an admin."
        elif target.user_id == actor.pk:
            body = f"{actor.name} is no longer an admin."
        else:
            body = f"{actor.name} dismissed {target.user.name} as admin."
        _write_system_message(
            conversation,
            actor=actor,
            seq=seq,
            event="role",
            users=[target.user],
            body=body,
            extra={"role": role},
        )
        _announce_view(conversation, [target.user_id], "role")
    return target


def set_muted(*, user: User, conversation_id: int, muted: bool) -> None:
    """Mute or unmute a conversation for one user (no push while muted)."""
    updated = Membership.objects.filter(conversation_id=conversation_id, user=user).update(
        muted=bool(muted)
    )
    if not updated:
        raise NotAMember()


def set_notify_level(*, user: User, conversation_id: int, level: NotifyLevel) -> None:
    """Choose what notifies one member while away: all, mentions (of them), none."""
    updated = Membership.objects.filter(conversation_id=conversation_id, user=user).update(
        notify=level
    )
    if not updated:
        raise NotAMember()


# --- messages --------------------------------------------------------------------------


def _clean_attachment_ids(attachment_ids: Sequence[int]) -> list[int]:
    ids = _distinct(attachment_ids)
    if len(ids) > settings.CHAT_MAX_ATTACHMENTS_PER_MESSAGE:
        raise BadRequest(
            f"At most {settings.CHAT_MAX_ATTACHMENTS_PER_MESSAGE} attachments per message.",
            details={"field": "attachments"},
        )
    return ids


def _attach(message: Message, sender: User, attachment_ids: list[int]) -> None:
    """Attach the sender's uploads to a new message in the order given, locked until commit.

    The row locks keep the housekeeping from deleting an upload that is being sent. The
    links are inserted in the order of `attachment_ids`, which is the order pages read
    them back in (`selectors.load_attachments`); `attachments.set` inserts them in the
    order of a Python set of ids, which is not that one.
    """
    locked = housekeeping.lock_for_send(sender, attachment_ids)
    if len(locked) != len(attachment_ids):
        raise BadRequest(
            "Attach only files you uploaded (uploads not sent within "
            f"{settings.CHAT_ORPHAN_UPLOAD_HOURS} hours are deleted: upload them again).",
            details={"field": "attachments"},
        )
    link = Message.attachments.through
    link.objects.bulk_create(
        [link(message_id=message.pk, attachment_id=pk) for pk in attachment_ids]
    )
    message.loaded_attachments = [locked[pk] for pk in attachment_ids]


@dataclass(frozen=True, slots=True)
class SendRequest:
    """One send, as a socket's `message.send` or the REST API asks for it.

    See `send_message` for the fields; `cid` is the correlation id of the frame or
    request it came with, for the logs and the events of a send stored in a batch.
    """

    sender: User
    conversation_id: int
    client_msg_id: uuid.UUID
    body: str
    attachment_ids: Sequence[int] = ()
    reply_to: int | None = None
    origin: str | None = None
    cid: str | None = None


@dataclass(frozen=True, slots=True)
class _CheckedSend:
    """A send that passed the checks made before it is stored, with what they found."""

    request: SendRequest
    body: str
    attachments: list[int]
    quoted: Message | None
    mentions: list[int]


# A stored send: the message, the conversation's `member_seq`, and whether the send
# accepted the sender's message request; None for a refused one (nothing written).
_Stored = tuple[Message, int, bool] | None


def send_message(
    *,
    sender: User,
    conversation_id: int,
    client_msg_id: uuid.UUID,
    body: str,
    attachment_ids: Sequence[int] = (),
    reply_to: int | None = None,
    origin: str | None = None,
) -> SendResult:
    """Store a message at the conversation's next seq, or return it again for a replay.

    A replay (same sender and `client_msg_id`, same conversation, body and `reply_to`)
    returns the stored message and broadcasts nothing; the same id with another
    conversation, body or `reply_to` raises Conflict. `reply_to` quotes a text message
    of the conversation that the sender can see and that is not deleted. The broadcast
    of a new message happens on commit, to every member's connection but `origin` (the
    channel name of the sending socket, which gets the message in its `message.sent`).
    Sends are rate limited per user (`CHAT_SEND_RATE`/s, bursts of `CHAT_SEND_BURST`).
    """
    request = SendRequest(
        sender, conversation_id, client_msg_id, body, attachment_ids, reply_to, origin
    )
    body = _clean_body(body, allow_empty=bool(attachment_ids))
    verdict = ratelimit.take(
        _send_bucket(request), rate=settings.CHAT_SEND_RATE, burst=settings.CHAT_SEND_BURST
    )
    return _store_one(_check_send(request, body, verdict))


def send_messages(requests: Sequence[SendRequest]) -> list[SendResult | DomainError]:
    """Store several sends, of any senders and conversations, with one statement if can be.

    Each send gets what `send_message` would give it, its result or the `DomainError`
    it would raise (rate limited, refused, a replay that conflicts), and one send's
    error does not fail the others. On PostgreSQL outside a transaction, the sends
    without attachments are stored by one call of `chat_store_messages` (migration
    messaging 0016): one round trip and one commit for all, sends to one conversation at
    consecutive seqs in the order given. If that statement fails as a whole (a client
    message id used before: a retry among them), it wrote nothing and the sends are
    stored one at a time. Any other database error is raised for the whole batch: its
    clients send again, and a send that was stored before the error is then answered
    as a replay. The gateways call this with the sends of their sockets that arrived
    while earlier ones were being written (`chatsite.gateway.dbthreads.Batcher`).
    """
    outcomes: list[SendResult | DomainError | None] = [None] * len(requests)
    bodies: dict[int, str] = {}
    for i, request in enumerate(requests):
        try:
            bodies[i] = _clean_body(request.body, allow_empty=bool(request.attachment_ids))
        except DomainError as exc:
            outcomes[i] = exc
    verdicts = ratelimit.take_each(  # one Redis round trip for the batch
        [_send_bucket(requests[i]) for i in bodies],
        rate=settings.CHAT_SEND_RATE,
        burst=settings.CHAT_SEND_BURST,
    )
    together: list[tuple[int, _CheckedSend]] = []
    for (i, body), verdict in zip(bodies.items(), verdicts, strict=True):
        request = requests[i]
        with correlated(request.cid):
            try:
                together.append((i, _check_send(request, body, verdict)))
            except DomainError as exc:
                outcomes[i] = exc
    alone = [(i, checked) for i, checked in together if checked.attachments]
    together = [(i, checked) for i, checked in together if not checked.attachments]
    if len(together) > 1 and connection.vendor == "postgresql" and not connection.in_atomic_block:
        try:
            stored = _store_messages([checked for _, checked in together])
        except IntegrityError:
            alone = sorted(alone + together, key=lambda item: item[0])
        else:
            for (i, checked), row in zip(together, stored, strict=True):
                with correlated(checked.request.cid):
                    outcomes[i] = _outcome(functools.partial(_settle, checked, row))
    else:
        alone = sorted(alone + together, key=lambda item: item[0])
    for i, checked in alone:
        with correlated(checked.request.cid):
            outcomes[i] = _outcome(functools.partial(_store_one, checked))
    done = [outcome for outcome in outcomes if outcome is not None]
    if len(done) != len(requests):
        raise RuntimeError("a send of the batch was left without an outcome")
    return done


def _outcome(store: Callable[[], SendResult]) -> SendResult | DomainError:
    """Return what `store()` returns, or the `DomainError` it raises (that send's only)."""
    try:
        return store()
    except DomainError as exc:
        return exc


def _send_bucket(request: SendRequest) -> str:
    """Return the rate-limit bucket of a send: its sender's."""
    return f"send:{request.sender.pk}"


def _check_send(request: SendRequest, body: str, verdict: ratelimit.Verdict) -> _CheckedSend:
    """Check the rest of what can be checked before a send is stored, or raise.

    `body` passed the length checks; `verdict` is the rate limit's for this send.
    """
    if not verdict.allowed:
        metrics.count_rate_limited("send")
        raise RateLimited(verdict.retry_after)
    attachments = _clean_attachment_ids(request.attachment_ids)
    quoted = (
        None
        if request.reply_to is None
        else _quotable(request.sender, request.conversation_id, request.reply_to)
    )
    mentions = _mentioned_members(request.conversation_id, body)
    return _CheckedSend(request, body, attachments, quoted, mentions)


def _store_one(checked: _CheckedSend) -> SendResult:
    """Store one checked send (with its attachments, if any), or answer its replay."""
    request = checked.request
    try:
        if connection.vendor != "postgresql":
            # The store's SQL checks both in one go.
            _check_not_blocked(request.sender, request.conversation_id)
            _check_may_post(request.sender, request.conversation_id)
        with _send_transaction(checked.attachments):
            stored = _store_message(checked)
            if stored is None:
                _raise_refusal(request)  # a rollback gives back a seq the portable store took
            result = _announce_stored(checked, stored)
    except (IntegrityError, CannotSend, AdminsOnly) as exc:
        return _replayed(checked, exc)
    _trace_stored(result.message)
    return result


def _settle(checked: _CheckedSend, stored: _Stored) -> SendResult:
    """Finish a send of a batch (stored, or refused with nothing written)."""
    try:
        if stored is None:
            _raise_refusal(checked.request)
        result = _announce_stored(checked, stored)
    except (CannotSend, AdminsOnly) as exc:
        return _replayed(checked, exc)
    _trace_stored(result.message)
    return result


def _raise_refusal(request: SendRequest) -> NoReturn:
    """Raise why a send was refused: a block, an announcement group, or not a member."""
    _check_not_blocked(request.sender, request.conversation_id)
    _check_may_post(request.sender, request.conversation_id)
    raise NotAMember()


def _replayed(checked: _CheckedSend, exc: Exception) -> SendResult:
    """Answer a send whose id was used before with the original, or raise `exc`.

    A replay of a message stored before a block (or before the group became
    admins-only) still answers the original.
    """
    request = checked.request
    original = _original(request.sender, request.client_msg_id, request.conversation_id)
    if original is None:
        raise exc
    message = _check_replay(original, request.conversation_id, checked.body, request.reply_to)
    selectors.load_for_payload([message])  # its answer may be built outside the thread
    return SendResult(message, created=False)


def _announce_stored(checked: _CheckedSend, stored: tuple[Message, int, bool]) -> SendResult:
    """Link a stored message's attachments and broadcast it on commit."""
    message, member_seq, accepted_now = stored
    request = checked.request
    if accepted_now:
        _announce_accepted(request.conversation_id, request.sender)
    if checked.attachments:
        _attach(message, request.sender, checked.attachments)
    else:
        _without_attachments(message)
    events.to_conversation_on_commit(
        request.conversation_id, member_seq, wire.message_created_frame(message), request.origin
    )
    return SendResult(message, created=True)


def _trace_stored(message: Message) -> None:
    if trace.isEnabledFor(logging.INFO):
        trace.info(
            "message stored",
            extra={
                "conversation": message.conversation_id,
                "message_id": message.pk,
                "seq": message.seq,
            },
        )


def _send_transaction(attachments: list[int]) -> AbstractContextManager[Any]:
    """Return the transaction a send runs in: none for one statement on its own.

    On PostgreSQL a send without attachments is one statement (`chat_store_messages`)
    that checks before it writes and writes all or nothing, so outside a transaction it
    commits on its own: no BEGIN and COMMIT round trips, and none of Django's
    transaction bookkeeping (together a third of a send's CPU, measured). Its on-commit
    broadcast then goes out at once, as the statement has committed. Attachments are
    linked by further statements, the portable store takes three, and inside a
    caller's transaction a savepoint keeps a failed send (a replay's unique violation)
    from breaking the caller's: those run in `transaction.atomic`.
    """
    if attachments or connection.vendor != "postgresql" or connection.in_atomic_block:
        return transaction.atomic()
    return contextlib.nullcontext()


def _mentioned_members(conversation_id: int, body: str) -> list[int]:
    """Return the ids of the conversation's members that `body` names as `@username`."""
    candidates = mention_candidates(body)
    if not candidates:
        return []
    return sorted(
        Membership.objects.filter(conversation_id=conversation_id)
        .annotate(name=Lower("user__username"))
        .filter(name__in=candidates)
        .values_list("user_id", flat=True)
    )


def _notify_due_at(now: datetime) -> datetime | None:
    """Return when a message sent `now` has its notifications decided (None: never)."""
    if not settings.NOTIFY_ENABLED:
        return None
    return now + timedelta(seconds=settings.NOTIFY_PUSH_DELAY)


def _original(sender: User, cmid: uuid.UUID, conversation_id: int) -> Message | None:
    """Return the message `sender` stored under `cmid`, in this conversation if there is one.

    The plain table holds at most one. Partitioned (`manage.py partition_messages`), the
    id is unique per conversation only (docs/scaling.md), so the sender may have used it
    in several; a retry's original is the one in the conversation it was sent to.
    """
    used = Message.objects.filter(sender=sender, client_msg_id=cmid)
    return used.filter(conversation_id=conversation_id).first() or used.first()


def _quotable(sender: User, conversation_id: int, message_id: int) -> Message:
    """Return the message a send replies to, if the sender may quote it, else raise.

    It must be a text message of the same conversation, from the part of the log the
    sender can see (`visible_from_seq`), and not deleted. A sender who is not a member
    learns only that (`forbidden`), whatever the id names.
    """
    membership = Membership.objects.filter(conversation_id=conversation_id, user=sender).first()
    if membership is None:
        raise NotAMember()
    quoted = Message.objects.filter(
        conversation_id=conversation_id,
        pk=message_id,
        seq__gte=membership.visible_from_seq,
        kind=Message.Kind.TEXT,
        deleted=False,
    ).first()
    if quoted is None:  # perhaps archived
        found = archive.find_one(conversation_id, message_id, floor_seq=membership.visible_from_seq)
        if found is not None and found.kind == Message.Kind.TEXT and not found.deleted:
            quoted = found
    if quoted is None:
        raise BadRequest(
            "reply_to must name a message of this conversation that is not deleted.",
            details={"field": "reply_to"},
        )
    return quoted


def _check_replay(
    original: Message, conversation_id: int, body: str, reply_to: int | None
) -> Message:
    """Return the original of a replay, or raise Conflict if the id was used otherwise."""
    same_place = original.conversation_id == conversation_id
    # A deleted original has an emptied body; a late retry of it is still a replay.
    if (
        not same_place
        or (original.body != body and not original.deleted)
        or original.reply_to_id != reply_to
    ):
        raise Conflict(details={"client_msg_id": str(original.client_msg_id)})
    return original


_conversation_table = Conversation._meta.db_table
_membership_table = Membership._meta.db_table
_push_window_table = PushWindow._meta.db_table
# Stores a batch of sends (one or more) with one statement: the function of migration
# messaging 0016, which locks the batch's conversations in id order, checks each sender
# under that lock (a member; not a blocked pair's direct chat; of an announcement group,
# an owner or admin), takes the next seq, raises the sender's markers, inserts the
# message and the row that has its notifications decided later. A refused send comes
# back without an id and wrote nothing. Prepared (`fetch_prepared`): one plan whatever
# the batch's size, as the sends go as arrays.
_STORE_MESSAGES_SQL = (
    "SELECT o_n, o_id, o_seq, o_member_seq, o_accepted_now FROM chat_store_messages("
    "%(conversations)s::bigint[], %(senders)s::bigint[], %(cmids)s::uuid[], "
    "%(bodies)s::text[], %(mentions)s::jsonb[], %(reply_tos)s::bigint[], "
    "%(now)s::timestamptz, %(due)s::timestamptz)"
)
# The same for one send, its values as scalars made arrays by the server: psycopg's
# dumping of six lists cost a single send about a sixth more CPU than scalars.
_STORE_ONE_SQL = (
    "SELECT o_n, o_id, o_seq, o_member_seq, o_accepted_now FROM chat_store_messages("
    "ARRAY[%(conversations)s::bigint], ARRAY[%(senders)s::bigint], ARRAY[%(cmids)s::uuid], "
    "ARRAY[%(bodies)s::text], ARRAY[%(mentions)s::jsonb], ARRAY[%(reply_tos)s::bigint], "
    "%(now)s::timestamptz, %(due)s::timestamptz)"
)


def _store_message(checked: _CheckedSend) -> _Stored:
    """Store a text message at the conversation's next seq; None if refused.

    Refused: not a member, a blocked pair's direct chat, a plain member of an
    announcement group. On PostgreSQL a refusal wrote nothing; with the portable store
    (SQLite) the conversation's seq may have been taken, and the caller must roll its
    transaction back.
    """
    if connection.vendor != "postgresql":
        return _store_message_portable(checked)
    return _store_messages([checked])[0]


def _store_messages(batch: Sequence[_CheckedSend]) -> list[_Stored]:
    """Store text messages with one statement (PostgreSQL); one result per send, in order.

    A send to a conversation takes its next seq, in the order of `batch`. Raises if the
    statement fails, which then wrote nothing (a unique violation: a client message id
    used before).
    """
    now = timezone.now()
    if len(batch) == 1:
        (one,) = batch
        sql, params = _STORE_ONE_SQL, _store_params(one)
    else:
        sql = _STORE_MESSAGES_SQL
        each = [_store_params(checked) for checked in batch]
        params = {name: [p[name] for p in each] for name in each[0]}
    params["now"], params["due"] = now, _notify_due_at(now)
    rows = fetch_prepared(sql, params)
    if len(rows) != len(batch):
        raise DatabaseError(f"chat_store_messages returned {len(rows)} rows for {len(batch)}")
    return [
        None if row[1] is None else (_new_message(checked, row[1], row[2], now), row[3], row[4])
        for checked, row in zip(batch, sorted(rows), strict=True)
    ]


def _store_params(checked: _CheckedSend) -> dict[str, Any]:
    """Return one send's values for `chat_store_messages` (a batch's as arrays of them)."""
    request = checked.request
    return {
        "conversations": request.conversation_id,
        "senders": request.sender.pk,
        "cmids": request.client_msg_id,
        "bodies": checked.body,
        "mentions": json.dumps(checked.mentions),
        "reply_tos": None if checked.quoted is None else checked.quoted.pk,
    }


# A message's columns in the model's order: `Model.from_db` builds an instance from
# them positionally, at a fifth of the CPU of keyword arguments (about 6 µs against 32).
_MESSAGE_COLUMNS = [field.attname for field in Message._meta.concrete_fields]


def _new_message(checked: _CheckedSend, pk: int, seq: int, now: datetime) -> Message:
    """Return the instance of a text message stored by `chat_store_messages`."""
    request = checked.request
    columns = {
        "id": pk,
        "conversation_id": request.conversation_id,
        "seq": seq,
        "version": seq,
        "kind": Message.Kind.TEXT.value,
        "sender_id": request.sender.pk,
        "client_msg_id": request.client_msg_id,
        "body": checked.body,
        "system": None,
        "created_at": now,
        "edited_at": None,
        "deleted": False,
        "mentions": checked.mentions,
        "reactions": [],
        "reply_to_id": None if checked.quoted is None else checked.quoted.pk,
    }
    message = Message.from_db(
        connection.alias, _MESSAGE_COLUMNS, [columns[name] for name in _MESSAGE_COLUMNS]
    )
    Message.sender.field.set_cached_value(message, request.sender)  # no query to read it
    message.loaded_reply = checked.quoted
    return message


def _store_message_portable(checked: _CheckedSend) -> _Stored:
    """Do what `chat_store_messages` does for one send with the ORM (SQLite, the default).

    Run in a transaction: on None the seq taken is given back by its rollback.
    """
    request = checked.request
    conversation_id, sender, quoted = request.conversation_id, request.sender, checked.quoted
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {_conversation_table} SET last_seq = last_seq + 1, last_activity_at = %s "  # noqa: S608 - table name is ours
            "WHERE id = %s RETURNING last_seq, member_seq, post_policy",
            [timezone.now(), conversation_id],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    seq, member_seq = int(row[0]), int(row[1])
    # Raising the sender's markers doubles as the membership check, under the
    # conversation lock, so no send lands after the sender's removal.
    membership = Membership.objects.filter(conversation_id=conversation_id, user=sender)
    if row[2] == Conversation.PostPolicy.ADMINS:
        membership = membership.filter(role__in=[Role.OWNER, Role.ADMIN])
    accepted_now = membership.filter(accepted=False).exists()
    if not membership.update(
        accepted=True,
        read_seq=Greatest(F("read_seq"), Value(seq)),
        delivered_seq=Greatest(F("delivered_seq"), Value(seq)),
    ):
        return None
    message = Message.objects.create(
        conversation_id=conversation_id,
        seq=seq,
        version=seq,
        sender=sender,
        client_msg_id=request.client_msg_id,
        body=checked.body,
        mentions=checked.mentions,
        reply_to_id=None if quoted is None else quoted.pk,
    )
    message.loaded_reply = quoted
    due_at = _notify_due_at(message.created_at)
    if due_at is not None:
        NotificationDue.objects.create(message=message, due_at=due_at)
    return message, member_seq, accepted_now


def _save_message(message: Message, *fields: str) -> None:
    """Write changed fields of a message, found by its conversation and its id.

    Not `save()`, whose UPDATE names the id only: on the partitioned table
    (`manage.py partition_messages`) the conversation picks the partition and the key.
    """
    Message.objects.filter(conversation_id=message.conversation_id, pk=message.pk).update(
        **{field: getattr(message, field) for field in fields}
    )


def _editable_message(
    conversation: Conversation, membership: Membership, message_id: int
) -> Message:
    message = (
        Message.objects.filter(
            pk=message_id,
            conversation=conversation,
            seq__gte=membership.visible_from_seq,
        )
        .select_for_update()
        .first()
    )
    if message is None:
        if archive.find_one(conversation.pk, message_id, floor_seq=membership.visible_from_seq):
            raise MessageArchived()
        raise MessageNotFound()
    return message


def edit_message(*, user: User, conversation_id: int, message_id: int, body: str) -> Message:
    """Replace the body of the user's own message; it takes a new `version` from the log."""
    body = _clean_body(body)
    with transaction.atomic():
        conversation = _lock_conversation(conversation_id)
        membership = _membership(conversation, user)
        message = _editable_message(conversation, membership, message_id)
        if message.kind != Message.Kind.TEXT or message.sender_id != user.pk:
            raise NotAllowed("You can only edit your own messages.")
        if message.deleted:
            raise NotAllowed("A deleted message cannot be edited.")
        if message.body == body:
            return message
        message.version = _take_seq(conversation)
        message.body = body
        message.edited_at = timezone.now()
        message.mentions = _mentioned_members(conversation.pk, body)
        _save_message(message, "version", "body", "edited_at", "mentions")
        events.to_conversation_on_commit(
            conversation.pk, conversation.member_seq, wire.message_updated_frame(message)
        )
    return message


def delete_message(*, user: User, conversation_id: int, message_id: int) -> Message:
    """Delete a message for everyone (own messages; group owners and admins: any text).

    The body and attachments are emptied; the message keeps its seq and takes a new
    `version` from the log. Deleting a deleted message changes nothing.
    """
    with transaction.atomic():
        conversation = _lock_conversation(conversation_id)
        membership = _membership(conversation, user)
        message = _editable_message(conversation, membership, message_id)
        may = message.sender_id == user.pk or (
            conversation.kind == Conversation.Kind.GROUP and membership.is_admin
        )
        if message.kind != Message.Kind.TEXT or not may:
            raise NotAllowed("You can only delete your own messages.")
        return _delete(conversation, message)


def moderate_delete_message(*, staff: User, message_id: int) -> Message:
    """Delete any text message as a staff moderator; the log records it like any delete."""
    if not (staff.is_active and staff.is_staff):
        raise NotAllowed("Only staff can moderate messages.")
    conversation_id = (
        Message.objects.filter(pk=message_id).values_list("conversation_id", flat=True).first()
    )
    if conversation_id is None:
        raise MessageNotFound()
    with transaction.atomic():
        conversation = _lock_conversation(conversation_id)
        message = (
            Message.objects.select_for_update()
            .filter(conversation_id=conversation_id, pk=message_id)
            .first()
        )
        if message is None:
            raise MessageNotFound()
        if message.kind != Message.Kind.TEXT:
            raise NotAllowed("System messages cannot be deleted.")
        return _delete(conversation, message)


def react(
    *, user: User, conversation_id: int, message_id: int, emoji: str, add: bool = True
) -> Message:
    """Add (or remove) the user's `emoji` reaction to a message of the conversation.

    One reaction per emoji per user; a message carries at most `CHAT_MAX_REACTIONS`
    different emoji. A change takes a new `version` from the log and is broadcast as
    `message.updated`, so every device converges live or through `after=` sync; adding
    a reaction already there, or removing one that is not, changes nothing. Rate limited
    per user (`CHAT_REACT_RATE`/s, bursts of `CHAT_REACT_BURST`).
    """
    if not isinstance(emoji, str) or not reactions.is_emoji(emoji):
        raise BadRequest("emoji must be one emoji.", details={"field": "emoji"})
    verdict = ratelimit.take(
        f"react:{user.pk}", rate=settings.CHAT_REACT_RATE, burst=settings.CHAT_REACT_BURST
    )
    if not verdict.allowed:
        metrics.count_rate_limited("react")
        raise RateLimited(verdict.retry_after, message="Too many reactions; slow down.")
    with transaction.atomic():
        conversation = _lock_conversation(conversation_id)
        membership = _membership(conversation, user)
        message = _editable_message(conversation, membership, message_id)
        if message.kind != Message.Kind.TEXT:
            raise NotAllowed("System messages take no reactions.")
        if message.deleted:
            raise NotAllowed("A deleted message takes no reactions.")
        after = reactions.changed(message.reactions, emoji, user.pk, add=add)
        if after is None:
            return message
        if len(after) > settings.CHAT_MAX_REACTIONS:
            raise BadRequest(
                f"A message takes at most {settings.CHAT_MAX_REACTIONS} different emoji.",
                details={"field": "emoji", "max_reactions": settings.CHAT_MAX_REACTIONS},
            )
        message.version = _take_seq(conversation)
        message.reactions = after
        _save_message(message, "version", "reactions")
        events.to_conversation_on_commit(
            conversation.pk, conversation.member_seq, wire.message_updated_frame(message)
        )
    return message


def _delete(conversation: Conversation, message: Message) -> Message:
    if message.deleted:
        return message
    message.version = _take_seq(conversation)
    message.deleted = True
    message.body = ""
    message.reactions = []
    _save_message(message, "version", "deleted", "body", "reactions")
    # Deleted for everyone: its files go too (unless another message holds them).
    housekeeping.release_attachments([message.pk])
    events.to_conversation_on_commit(
        conversation.pk, conversation.member_seq, wire.message_updated_frame(message)
    )
    return message


# --- receipts --------------------------------------------------------------------------


def _capped(seq: int) -> Least:
    # Never past the log's end: a marker says what the member has seen.
    return Least(
        Value(seq),
        Subquery(Conversation.objects.filter(pk=OuterRef("conversation_id")).values("last_seq")),
    )


def mark_receipts(
    *, user: User, conversation_id: int, delivered: int = 0, read: int = 0
) -> Markers:
    """Raise the user's delivered and read markers in one write (never lowers them).

    Reading raises delivered too; neither goes past the log's end. Members get one
    `receipt.updated` when a marker rose.
    """
    read_seq = read
    delivered_seq = max(delivered, read_seq)
    if connection.vendor != "postgresql":
        with transaction.atomic():
            current, changed = _raise_markers_orm(user.pk, conversation_id, delivered_seq, read_seq)
            if changed and read_seq:
                _schedule_push_removal(user, conversation_id, current["read_seq"])
            _after_receipt(user, conversation_id, current, changed=changed)
    else:
        # One statement raises the markers and marks the pushes read for taking back,
        # all or nothing: it needs no transaction of its own (the BEGIN and COMMIT round
        # trips and Django's bookkeeping cost more than the statement), and inside a
        # caller's transaction it is part of that one.
        current, changed = _raise_markers(user.pk, conversation_id, delivered_seq, read_seq)
        _after_receipt(user, conversation_id, current, changed=changed)
    return Markers(
        conversation_id=conversation_id,
        user_id=user.pk,
        delivered_seq=current["delivered_seq"],
        read_seq=current["read_seq"],
        changed=changed,
    )


def _raise_markers_orm(
    user_id: int, conversation_id: int, delivered: int, read: int
) -> tuple[Mapping[str, Any], bool]:
    """Do what `_raise_markers` does through the ORM (SQLite, the embedded default)."""
    changes: dict[str, Any] = {"delivered_seq": Greatest(F("delivered_seq"), _capped(delivered))}
    moved = Q(delivered_seq__lt=_capped(delivered))
    if read:
        changes["read_seq"] = Greatest(F("read_seq"), _capped(read))
        moved |= Q(read_seq__lt=_capped(read))
    rows = Membership.objects.filter(conversation_id=conversation_id, user_id=user_id)
    changed = rows.filter(moved).update(**changes) > 0
    current = rows.values(
        "delivered_seq", "read_seq", "accepted", "conversation__member_seq"
    ).first()
    if current is None:
        raise NotAMember()
    return current, changed


# A receipt's raise in one prepared statement (PostgreSQL): built by the ORM, the update
# with its four subqueries and the read after it cost more to compile and to plan than to
# run, on every receipt. Raises both markers to at most the log's end, only upwards,
# and returns the new values with what the broadcast needs; no row when nothing rose.
# When the read marker rose, the same statement has the worker take back the pushes of
# what is now read (`_schedule_push_removal`), so the two are written together.
_RAISE_MARKERS_SQL = f"""
WITH conv AS (
    SELECT last_seq, member_seq FROM {_conversation_table} WHERE id = %(conversation)s
), raised AS (
    UPDATE {_membership_table} AS m
    SET delivered_seq = GREATEST(m.delivered_seq, LEAST(%(delivered)s::bigint, conv.last_seq)),
        read_seq = GREATEST(m.read_seq, LEAST(%(read)s::bigint, conv.last_seq))
    FROM conv
    WHERE m.conversation_id = %(conversation)s AND m.user_id = %(user)s
      AND (m.delivered_seq < LEAST(%(delivered)s::bigint, conv.last_seq)
           OR m.read_seq < LEAST(%(read)s::bigint, conv.last_seq))
    RETURNING m.delivered_seq, m.read_seq, m.accepted, conv.member_seq
), removal AS (
    UPDATE {_push_window_table} AS w SET remove_due_at = %(now)s::timestamptz
    FROM raised
    WHERE %(read)s::bigint > 0 AND w.user_id = %(user)s AND w.conversation_id = %(conversation)s
      AND w.pushed_seq > w.removed_seq AND w.pushed_seq <= raised.read_seq
      AND w.remove_due_at IS NULL
)
SELECT delivered_seq, read_seq, accepted, member_seq FROM raised
"""  # noqa: S608 - table names are ours; values are parameters

# The markers as they are, when nothing rose (a statement of its own: it sees what a
# concurrent raise committed while the update above waited for the row).
_MARKERS_SQL = f"""
SELECT m.delivered_seq, m.read_seq, m.accepted, c.member_seq
FROM {_membership_table} AS m JOIN {_conversation_table} AS c ON c.id = m.conversation_id
WHERE m.conversation_id = %(conversation)s AND m.user_id = %(user)s
"""  # noqa: S608 - table names are ours; values are parameters


def _raise_markers(
    user_id: int, conversation_id: int, delivered: int, read: int
) -> tuple[Mapping[str, Any], bool]:
    """Raise a member's markers (PostgreSQL); return them as they now are and whether they rose."""
    params = {
        "conversation": conversation_id,
        "user": user_id,
        "delivered": delivered,
        "read": read,
        "now": timezone.now(),
    }
    rows = fetch_prepared(_RAISE_MARKERS_SQL, params)
    changed = bool(rows)
    if not rows:
        rows = fetch_prepared(_MARKERS_SQL, {"conversation": conversation_id, "user": user_id})
        if not rows:
            raise NotAMember()
    delivered_seq, read_seq, accepted, member_seq = rows[0]
    current = {
        "delivered_seq": int(delivered_seq),
        "read_seq": int(read_seq),
        "accepted": bool(accepted),
        "conversation__member_seq": int(member_seq),
    }
    return current, changed


def _after_receipt(
    user: User, conversation_id: int, current: Mapping[str, Any], *, changed: bool
) -> None:
    """Tell the members, if a marker rose."""
    if not changed:
        return
    frame = wire.receipt_updated_frame(
        conversation_id=conversation_id,
        user_id=user.pk,
        delivered_seq=current["delivered_seq"],
        read_seq=current["read_seq"],
    )
    member_seq = current["conversation__member_seq"]
    if current["accepted"]:
        events.to_conversation_on_commit(conversation_id, member_seq, frame)
    else:
        # A message request's receipts stay with the user's own devices.
        event = events.conversation_event(conversation_id, member_seq, frame)
        events.send_event_on_commit(events.user_group(user.pk), event)


def typing_event(
    *, user: User, target: TypingTarget, conversation_id: int, state: str
) -> tuple[str, events.Event] | None:
    """Return the group and event that tell the other members about typing, or None.

    Typing is never stored and never relayed in conversations of more than
    `CHAT_TYPING_MAX_MEMBERS` (a thousand people do not need to see who is typing),
    nor from a member who has not accepted a message request.
    """
    if target.member_count > settings.CHAT_TYPING_MAX_MEMBERS or not target.accepted:
        return None
    frame = wire.typing_frame(
        conversation_id=conversation_id,
        user_id=user.pk,
        state="start" if state == "start" else "stop",
    )
    return (
        events.conversation_group(conversation_id),
        events.conversation_event(conversation_id, target.member_seq, frame),
    )


def _schedule_push_removal(user: User, conversation_id: int, read_seq: int) -> None:
    """Have the worker take back pushes of messages now read (on any device)."""
    PushWindow.objects.filter(
        user=user,
        conversation_id=conversation_id,
        pushed_seq__gt=F("removed_seq"),
        pushed_seq__lte=read_seq,
        remove_due_at__isnull=True,
    ).update(remove_due_at=timezone.now())


def mark_delivered(*, user: User, conversation_id: int, seq: int) -> Markers:
    """Raise the user's delivered marker to `seq` (never lowers it, never past the end)."""
    return mark_receipts(user=user, conversation_id=conversation_id, delivered=seq)


def mark_read(*, user: User, conversation_id: int, seq: int) -> Markers:
    """Raise the user's read marker (and delivered marker) to `seq`."""
    return mark_receipts(user=user, conversation_id=conversation_id, read=seq)


# --- retention -------------------------------------------------------------------------

# Messages deleted per transaction (the conversation stays locked for one batch only).
RETENTION_BATCH = 500


# The longest retention a conversation may be given (100 years: "keep" is 0).
MAX_RETENTION_DAYS = 36_500


def set_retention(*, staff: User, conversation_ids: Sequence[int], days: int | None) -> int:
    """Set how many days of messages conversations keep (None: the site's default; 0: all).

    Staff only; return how many conversations changed. The next retention run applies it.
    """
    if not staff.is_staff:
        raise NotAllowed("Only staff set a conversation's retention.")
    if days is not None and not 0 <= days <= MAX_RETENTION_DAYS:
        raise BadRequest(
            f"Retention is 0 (keep everything) to {MAX_RETENTION_DAYS} days.",
            details={"field": "retention_days"},
        )
    return Conversation.objects.filter(pk__in=list(conversation_ids)).update(retention_days=days)


def retention_days(conversation: Conversation) -> int:
    """Return how many days of messages the conversation keeps (0: all of them)."""
    if conversation.retention_days is not None:
        return conversation.retention_days
    return max(0, int(settings.DELETE_AFTER_DAYS))


def conversations_with_retention(now: datetime) -> Iterable[int]:
    """Yield the ids of conversations that may hold messages past their retention."""
    default = max(0, int(settings.DELETE_AFTER_DAYS))
    if default:
        yield from (
            Conversation.objects.filter(
                retention_days__isnull=True, created_at__lt=now - timedelta(days=default)
            )
            .order_by("pk")
            .values_list("pk", flat=True)
            .iterator()
        )
    for pk, days, created_at in (
        Conversation.objects.filter(retention_days__gt=0)
        .order_by("pk")
        .values_list("pk", "retention_days", "created_at")
        .iterator()
    ):
        if days and created_at < now - timedelta(days=days):
            yield pk


def _but_the_notice(messages: Any, conversation: Conversation) -> Any:
    notice = conversation.retention_notice_id
    return messages if notice is None else messages.exclude(pk=notice)


def _expired_through(conversation: Conversation, cutoff: datetime) -> int:
    """Return the seq up to which the locked conversation's log is older than `cutoff`."""
    kept = (
        _but_the_notice(
            Message.objects.filter(
                conversation_id=conversation.pk,
                seq__gt=conversation.purged_through_seq,
                created_at__gte=cutoff,
            ),
            conversation,
        )
        .order_by("seq")
        .values_list("seq", flat=True)
        .first()
    )
    through = conversation.last_seq if kept is None else kept - 1
    archived = archive.first_newer(conversation, cutoff)
    return through if archived is None else min(through, archived - 1)


def _purgeable(conversation: Conversation, through: int) -> Any:
    return _but_the_notice(
        Message.objects.filter(
            conversation_id=conversation.pk,
            seq__gt=conversation.purged_through_seq,
            seq__lte=through,
        ),
        conversation,
    ).order_by("seq")


def purge_expired(*, conversation_id: int, now: datetime, dry_run: bool = False) -> int:
    """Delete the conversation's messages older than its retention; return how many went.

    Messages go in log order, a batch per transaction under the conversation's lock, so
    an edit, a delete or a reaction sees a message whole or not at all. Afterwards every
    message up to `purged_through_seq` is gone but one system message, the retention
    notice, which says why history ends: posted at the first purge, then updated (a new
    `version`) by each later one, so devices learn `through_seq` through `after=` sync.
    """
    conversation = Conversation.objects.filter(pk=conversation_id).first()
    if conversation is None:
        return 0
    days = retention_days(conversation)
    if not days:
        return 0
    cutoff = now - timedelta(days=days)
    if dry_run:
        through = _expired_through(conversation, cutoff)
        archived = archive.count_through(conversation, through)
        return int(_purgeable(conversation, through).count()) + archived
    removed = 0
    while True:
        with transaction.atomic():
            conversation = _lock_conversation(conversation_id)
            through = _expired_through(conversation, cutoff)
            batch = list(
                _purgeable(conversation, through).values_list("pk", "seq")[:RETENTION_BATCH]
            )
            if batch:
                through = batch[-1][1]
            if through <= conversation.purged_through_seq:
                break
            ids = [pk for pk, _ in batch]
            housekeeping.release_attachments(ids)
            Message.objects.filter(conversation_id=conversation_id, pk__in=ids).delete()
            removed += len(ids)
            Conversation.objects.filter(pk=conversation_id).update(
                purged_through_seq=through,
                purged_count=F("purged_count") + len(ids),
                purged_at=now,
            )
    with transaction.atomic():  # the archived part of what expired
        conversation = _lock_conversation(conversation_id)
        gone = archive.purge(conversation, conversation.purged_through_seq)
        if gone:
            removed += gone
            Conversation.objects.filter(pk=conversation_id).update(
                purged_count=F("purged_count") + gone, purged_at=now
            )
    if removed:
        _post_retention_notice(conversation_id, days)
        logger.info(
            "retention removed %d messages of conversation %d (older than %d days)",
            removed,
            conversation_id,
            days,
        )
    return removed


def _post_retention_notice(conversation_id: int, days: int) -> None:
    """Post the conversation's retention notice, or bring the one it has up to date."""
    with transaction.atomic():
        conversation = _lock_conversation(conversation_id)
        unit = "day" if days == 1 else "days"
        body = f"Messages older than {days} {unit} are removed by the retention policy."
        system = {
            "event": "retention",
            "users": [],
            "days": days,
            "through_seq": conversation.purged_through_seq,
        }
        notice = (
            Message.objects.filter(
                conversation_id=conversation_id, pk=conversation.retention_notice_id
            ).first()
            if conversation.retention_notice_id is not None
            else None
        )
        if notice is None:
            notice = Message.objects.create(
                conversation=conversation,
                seq=(seq := _take_seq(conversation, activity=False)),
                version=seq,
                kind=Message.Kind.SYSTEM,
                body=body,
                system=system,
            )
            Conversation.objects.filter(pk=conversation_id).update(retention_notice_id=notice.pk)
            _without_attachments(notice)
            frame: Any = wire.message_created_frame(notice)
        else:
            notice.version = _take_seq(conversation, activity=False)
            notice.body = body
            notice.system = system
            _save_message(notice, "version", "body", "system")
            notice.loaded_attachments = []
            frame = wire.message_updated_frame(notice)
        events.to_conversation_on_commit(conversation_id, conversation.member_seq, frame)


# --- blocking, reports, delete for me ---------------------------------------------------

# Blocks and unblocks per user: 1 every 2 s, bursts of 10 (each one is fanned out live).
BLOCK_RATE, BLOCK_BURST = 0.5, 10.0
# Reports per user: 1 a minute, bursts of 5.
REPORT_RATE, REPORT_BURST = 1 / 60, 5.0
MAX_REPORT_DETAILS = 1000


def _check_may_post(sender: User, conversation_id: int) -> None:
    """Refuse a plain member's message to a group where only admins may send."""
    membership = (
        Membership.objects.filter(conversation_id=conversation_id, user=sender)
        .values_list("role", "conversation__post_policy")
        .first()
    )
    if membership is None:
        return  # not a member: the store answers NotAMember
    role, policy = membership
    if policy == Conversation.PostPolicy.ADMINS and role not in (Role.OWNER, Role.ADMIN):
        raise AdminsOnly()


def _check_not_blocked(sender: User, conversation_id: int) -> None:
    """Refuse a direct message between a blocked pair, the same way in both directions."""
    key = (
        Conversation.objects.filter(pk=conversation_id, kind=Conversation.Kind.DIRECT)
        .values_list("direct_key", flat=True)
        .first()
    )
    if not key:
        return  # a group (blocks do not apply) or no such conversation (the store refuses)
    pair = [int(part) for part in key.split(":")]
    if sender.pk not in pair:
        return  # not a member: the store answers NotAMember
    other = pair[1] if pair[0] == sender.pk else pair[0]
    if other != sender.pk and selectors.is_blocked_pair(sender.pk, other):
        raise CannotSend()


def _take_budget(
    key: str, rate: float, burst: float, kind: metrics.RateLimitKind, message: str
) -> None:
    verdict = ratelimit.take(key, rate=rate, burst=burst)
    if not verdict.allowed:
        metrics.count_rate_limited(kind)
        raise RateLimited(verdict.retry_after, message=message)


def _announce_block(blocker: User, blocked_id: int, *, blocked: bool) -> None:
    frame = wire.block_updated_frame(blocked_id, blocked=blocked)
    events.send_events_on_commit(
        [
            (
                events.user_group(blocker.pk),
                events.block_event(blocked_id, blocked=blocked, frame=frame),
            ),
            (
                events.user_group(blocked_id),
                events.block_event(blocker.pk, blocked=blocked, frame=None),
            ),
        ]
    )


def block_user(*, user: User, other_user_id: int) -> Block:
    """Block a user: no direct messages, presence or typing between the two, both ways.

    Idempotent (blocking again returns the block). Groups are unaffected. Both users'
    gateways learn it live (`block.event`); only the blocker's devices get a frame.
    Rate limited per user (`BLOCK_RATE`/s, bursts of `BLOCK_BURST`).
    """
    if other_user_id == user.pk:
        raise BadRequest("You cannot block yourself.", details={"field": "user"})
    (other,) = _active_users([other_user_id])
    _take_budget(
        f"block:{user.pk}", BLOCK_RATE, BLOCK_BURST, "block", "Too many blocks; slow down."
    )
    with transaction.atomic():
        block, created = Block.objects.get_or_create(blocker=user, blocked=other)
        if created:
            _announce_block(user, other.pk, blocked=True)
    return block


def unblock_user(*, user: User, other_user_id: int) -> bool:
    """Lift the user's block of another; return whether there was one. Restores live."""
    _take_budget(
        f"block:{user.pk}", BLOCK_RATE, BLOCK_BURST, "block", "Too many blocks; slow down."
    )
    with transaction.atomic():
        removed, _ = Block.objects.filter(blocker=user, blocked_id=other_user_id).delete()
        if removed:
            _announce_block(user, other_user_id, blocked=False)
    return bool(removed)


def report_message(
    *, user: User, conversation_id: int, message_id: int, reason: str, details: str = ""
) -> tuple[Report, bool]:
    """Report a message the user can see to staff, with a reason; return (report, created).

    Only members who can read the message may report it; a second report of the same
    message by the same person returns the first. Rate limited per user (`REPORT_RATE`/s,
    bursts of `REPORT_BURST`).
    """
    if reason not in Report.Reason.values:
        raise BadRequest(
            f"reason must be one of {', '.join(Report.Reason.values)}.",
            details={"field": "reason"},
        )
    details = details.strip()
    if len(details) > MAX_REPORT_DETAILS:
        raise BadRequest(
            f"details take at most {MAX_REPORT_DETAILS} characters.",
            details={"field": "details", "max": MAX_REPORT_DETAILS},
        )
    message = selectors.get_message_for_user(
        user=user, conversation_id=conversation_id, message_id=message_id
    )
    if message.kind != Message.Kind.TEXT:
        raise NotAllowed("System messages cannot be reported.")
    if message.archived:  # staff act on reported messages in the table
        raise MessageArchived("This message is archived; it can no longer be reported.")
    existing = Report.objects.filter(message=message, reporter=user).first()
    if existing is not None:
        return existing, False
    _take_budget(
        f"report:{user.pk}", REPORT_RATE, REPORT_BURST, "report", "Too many reports; slow down."
    )
    try:
        with transaction.atomic():
            report = Report.objects.create(
                message=message, reporter=user, reason=reason, details=details
            )
    except IntegrityError:
        return Report.objects.get(message=message, reporter=user), False
    return report, True


def resolve_report(*, staff: User, report_id: int, delete_message: bool) -> Report:
    """Close a report as staff: delete its message (`moderate_delete_message`) or dismiss it."""
    if not (staff.is_active and staff.is_staff):
        raise NotAllowed("Only staff can handle reports.")
    report = Report.objects.filter(pk=report_id).first()
    if report is None:
        raise MessageNotFound("No such report.")
    if delete_message:
        moderate_delete_message(staff=staff, message_id=report.message_id)
        status = Report.Status.ACTIONED
        # every open report of that message is handled by the delete
        Report.objects.filter(message_id=report.message_id, status=Report.Status.OPEN).update(
            status=status
        )
    else:
        status = Report.Status.DISMISSED
        Report.objects.filter(pk=report.pk).update(status=status)
    report.status = status
    return report


def hide_message(*, user: User, conversation_id: int, message_id: int) -> HiddenMessage:
    """Delete a message for the user only: hidden on all of their devices, no one else's.

    Any message the user can read (own or others'). Idempotent. The user's devices hear
    `message.hidden` live; one that was offline catches up with `GET /hidden-messages`,
    and history fetches leave hidden messages out. Rate limited like reactions.
    """
    message = selectors.get_message_for_user(
        user=user, conversation_id=conversation_id, message_id=message_id
    )
    _take_budget(
        f"hide:{user.pk}",
        settings.CHAT_REACT_RATE,
        settings.CHAT_REACT_BURST,
        "hide",
        "Too many deletes; slow down.",
    )
    with transaction.atomic():
        hidden, created = HiddenMessage.objects.get_or_create(
            user=user, message=message, defaults={"conversation_id": conversation_id}
        )
        if created:
            events.send_event_on_commit(
                events.user_group(user.pk), events.own_event(wire.message_hidden_frame(hidden))
            )
    return hidden
