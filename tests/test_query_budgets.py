"""Query budgets (as Zulip keeps them): what each hot path costs in SQL, at two sizes.

Every test here measures one path twice, on a small and on a large case (a direct chat
and a group of 50, 1 conversation and 30, 1 message and 100 with attachments, 1 device
and 10), and asserts that

1. the large case costs no more statements than the small one: a query per recipient,
   per member, per message or per attachment fails here, listing the statements; and
2. the small case stays within the path's budget, a constant below that says what the
   statements are. The budgets are what the code costs today; a change that lowers a
   cost should lower its budget too.

What counts: every statement sent through Django's cursors (`CaptureQueriesContext` on
the test's connection; for the WebSocket, on every connection, see `every_connection`),
except savepoints, which appear only because each test runs inside a transaction
(`BEGIN` and `COMMIT` never go through a cursor, so production runs the same statements).
Redis (rate limits, throttles, presence, the channel layer) is not SQL and not counted.
Data is built first; only the call, or the one request, is measured. A REST request
counts authentication too: the access token's user and its login family (2).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import pytest
from channels.testing import WebsocketCommunicator
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.db.backends.utils import CursorWrapper
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import tokens
from accounts.models import User
from chatsite.asgi import application
from messaging import selectors, services, wire
from messaging.models import Attachment, Conversation, Device, Message
from messaging.notifications import decide

pytestmark = pytest.mark.django_db

T = TypeVar("T")
MakeUser = Callable[..., User]

# --- budgets: services -------------------------------------------------------------------

# send_message, text only: no "@", so no mention lookup; the store is one statement
# (chat_store_messages: next seq, the sender's markers, the message, its NotificationDue).
SEND_MESSAGE = 1
# + the sender's uploads locked and read (SELECT FOR UPDATE, against the housekeeping)
# and one INSERT of all the links, in the order sent (the frames use the rows read).
SEND_MESSAGE_WITH_ATTACHMENTS = 3
# + the members the @mentions name (one SELECT over the conversation's memberships).
SEND_MESSAGE_WITH_MENTIONS = 2
# mark_receipts, delivered, when a marker rises: one statement (_RAISE_MARKERS_SQL, the
# conditional UPDATE of the markers returning them). When none rises, the markers are
# read back by a second.
MARK_DELIVERED = 1
# mark_read: the same statement also marks the reader's pushed messages for taking back.
MARK_READ = 1
# edit_message: lock the conversation, the editor's membership, lock the message, take
# the seq (UPDATE conversation), the mentioned members, UPDATE the message, and the
# `message.updated` frame reading the message's attachments.
EDIT_MESSAGE = 7
# delete_message: lock, membership, lock the message, take the seq, UPDATE the message,
# one DELETE of its attachment links (whatever their number).
DELETE_MESSAGE = 6
# add_members: the users, lock, the actor's membership, who is there already, the member
# count (room), take the seq, one INSERT of the memberships, INSERT the system message
# (its frame knows it has no attachments: no query).
ADD_MEMBERS = 8
# create_group: the users, INSERT the conversation, take the seq, one INSERT of the
# memberships, INSERT the system message.
CREATE_GROUP = 5

# --- budgets: selectors the gateway calls -----------------------------------------------

# One statement: memberships, conversations, unread counts and direct peers together.
LIST_CONVERSATIONS = 1
# The membership with its conversation (the log's end), the page, its attachments
# (measured with the `messages.batch` frame built from it, as the gateway does).
LIST_MESSAGES = 3
# One grouped SUM over the users' memberships.
LOG_POSITIONS = 1
# One SELECT DISTINCT over the memberships of conversations shared with the user.
VISIBLE_USERS = 1

# --- budgets: REST (one request each, authentication included) ---------------------------

# Authentication of a Bearer token: its user, and whether its login family was revoked.
AUTH = 2
# A conversation in a REST answer (detail form), after the service: the caller's view
# (membership with its unread count), list_members' own membership check, the members
# with their users. A direct conversation also reads its peer (+1).
DETAIL = 3
# + the conversation list (the selector's one statement).
REST_CONVERSATIONS_LIST = AUTH + LIST_CONVERSATIONS
# + create_direct_conversation (the other user, an existing one?, are they contacts
# (a message request if not)?, INSERT the conversation, one INSERT of both
# memberships) + DETAIL + the peer.
REST_CREATE_DIRECT = AUTH + 5 + DETAIL + 1
# + create_group + DETAIL.
REST_CREATE_GROUP = AUTH + CREATE_GROUP + DETAIL
# + the caller's membership (get_membership) + DETAIL.
REST_CONVERSATION_DETAIL = AUTH + 1 + DETAIL
# + rename_conversation (lock, membership, take the seq, UPDATE the title, INSERT the
# system message) + the caller's membership + DETAIL.
REST_RENAME = AUTH + 5 + 1 + DETAIL
# + one UPDATE each of `muted` and `notify` + the caller's membership + DETAIL.
REST_MUTE_AND_NOTIFY = AUTH + 2 + 1 + DETAIL
# + add_members + the caller's membership + DETAIL.
REST_ADD_MEMBERS = AUTH + ADD_MEMBERS + 1 + DETAIL
# + join_conversation (lock, a member already?, the member count, take the seq, INSERT
# the membership, INSERT the system message) + the caller's membership + DETAIL.
REST_JOIN = AUTH + 6 + 1 + DETAIL
# + remove_member (lock, the actor's membership, the target with its user, take the seq,
# INSERT the system message, DELETE the membership).
REST_REMOVE_MEMBER = AUTH + 6
# + leave_conversation by the owner (lock, membership, take the seq, INSERT the system
# message, DELETE the membership, an admin to inherit?, else the longest-standing member,
# UPDATE the heir's role).
REST_LEAVE_AS_OWNER = AUTH + 8
# + list_messages_for_user.
REST_MESSAGES_LIST = AUTH + LIST_MESSAGES
# + send_message, text only.
REST_SEND = AUTH + SEND_MESSAGE
# + send_message with attachments + the answer's payload reading the attachments again.
REST_SEND_WITH_ATTACHMENTS = AUTH + SEND_MESSAGE_WITH_ATTACHMENTS + 1
# + edit_message of a body without "@" (no mention lookup: 6) + the answer's payload
# reading the attachments again.
REST_EDIT = AUTH + (EDIT_MESSAGE - 1) + 1
# + delete_message (a deleted message's payload reads no attachments).
REST_DELETE = AUTH + DELETE_MESSAGE
# + the message (membership, message, its attachments), its trace rows for the caller,
# its NotificationDue, and while it is pending, the caller's devices (one SELECT).
REST_NOTIFICATION_TRACE_PENDING = AUTH + 3 + 3
# + the message (3) and its trace rows, its NotificationDue.
REST_NOTIFICATION_TRACE_DECIDED = AUTH + 3 + 2
# + mark_read.
REST_READ = AUTH + MARK_READ
# + INSERT the attachment.
REST_UPLOAD = AUTH + 1
# + the attachment, if the caller uploaded it or may see a message carrying it.
REST_DOWNLOAD = AUTH + 1
# + statement_timeout (set_config), the word matches, the approximate matches, the hits
# with their headlines, their attachments; and, when a page is not full, the archived
# segments of the user's conversations (none here).
REST_SEARCH = AUTH + 6
# + the devices.
REST_DEVICES_LIST = AUTH + 1
# + get_or_create under a row lock (SELECT FOR UPDATE, INSERT), the devices past the
# limit (one SELECT; none here, so no DELETE).
REST_DEVICE_REGISTER = AUTH + 3
# + the device (Django's delete collector), SET NULL on its trace rows, DELETE it.
REST_DEVICE_REMOVE = AUTH + 3
# No sign-in, no database.
REST_SERVER_LIMITS = 0
# Anonymous: the name taken (case-insensitive)?, INSERT the user.
REST_REGISTER = 2
# Anonymous: the user (the login's lockout counters are in Redis), INSERT the refresh
# token's OutstandingToken.
REST_TOKEN = 2
# Anonymous: the view checks the refresh token (blacklisted?, its user, its family), then
# simplejwt's TokenRefreshSerializer checks again (blacklisted?, the user twice) and
# rotates (the outstanding row, blacklisted already?, INSERT the blacklist row, the user,
# the new outstanding row?, INSERT it).
REST_TOKEN_REFRESH = 12
# + the refresh token blacklisted?, its user, its outstanding row, blacklisted already?,
# INSERT the blacklist row, the family revoked already?, INSERT the revocation, INSERT
# the credential change that tells gateways to re-check this user's sockets.
REST_LOGOUT = AUTH + 8
# Authentication only; the ticket lives in Redis.
REST_WS_TICKET = AUTH
# Authentication only: the profile is the authenticated user.
REST_ME = AUTH
# + UPDATE the profile.
REST_ME_UPDATE = AUTH + 1
# + one page of the directory.
REST_USERS = AUTH + 1
# + filter_visible_users; the states come from Redis.
REST_PRESENCE = AUTH + VISIBLE_USERS

# --- budgets: the WebSocket consumer (every connection, see `every_connection`) ---------

# The handshake's user and its login family (chatsite.gateway.auth), the socket's block
# set (its typing and presence filters, then kept current by events), the ids of the
# user's conversations (to join their groups), the snapshot for `session.ready`.
WS_CONNECT = 2 + 1 + 1 + LIST_CONVERSATIONS
# `sync`: the snapshot again.
WS_SYNC = LIST_CONVERSATIONS
# `messages.fetch`: list_messages_for_user.
WS_FETCH = LIST_MESSAGES
# `message.send`: send_message (the `message.sent` answer reads nothing more).
WS_SEND = SEND_MESSAGE


# --- measuring ---------------------------------------------------------------------------

_SAVEPOINT = re.compile(r"^\s*(RELEASE |ROLLBACK TO )?SAVEPOINT\b", re.IGNORECASE)


def statements(sql: list[str]) -> list[str]:
    """Return the statements of a capture, without savepoints (see the module docstring)."""
    return [s for s in sql if not _SAVEPOINT.match(s)]


def queries_of(work: Callable[[], T]) -> tuple[T, list[str]]:
    """Run `work` on this thread; return its result and the statements it sent."""
    with CaptureQueriesContext(connection) as captured:
        result = work()
    return result, statements([q["sql"] for q in captured.captured_queries])


def _listing(sql: list[str]) -> str:
    return "\n".join(f"  {n}. {s[:300]}" for n, s in enumerate(sql, 1))


def assert_within(sql: list[str], budget: int) -> None:
    """Assert that one measured case stays within its budget."""
    assert len(sql) <= budget, f"{len(sql)} queries, budget {budget}:\n{_listing(sql)}"


def assert_flat(small: list[str], large: list[str], budget: int) -> None:
    """Assert that the large case costs no more than the small one, and both the budget."""
    assert len(large) <= len(small), (
        f"grows with size: {len(small)} queries small, {len(large)} large.\n"
        f"small:\n{_listing(small)}\nlarge:\n{_listing(large)}"
    )
    assert_within(small, budget)


# --- data --------------------------------------------------------------------------------

_files = itertools.count(1)


@pytest.fixture(autouse=True)
def _roomy_limits(settings: Any, tmp_path: Path) -> None:
    """Let data building through the rate limits; keep uploads in a temp folder."""
    settings.CHAT_SEND_BURST = 1_000_000.0
    settings.CHAT_SEND_RATE = 1_000_000.0
    settings.API_THROTTLE_BURST = 1_000_000.0
    settings.API_SEARCH_BURST = 1_000_000.0
    settings.REGISTER_BURST = 10_000.0
    settings.LOGIN_ADDRESS_FAILURE_LIMIT = 10_000
    settings.MEDIA_ROOT = tmp_path / "media"


def users(make_user: MakeUser, count: int) -> list[User]:
    return [make_user() for _ in range(count)]


def group_of(owner: User, members: list[User], **fields: Any) -> Conversation:
    return services.create_group(
        creator=owner, title="Team", member_ids=[u.pk for u in members], **fields
    )


def direct(user: User, other: User) -> Conversation:
    return services.create_direct_conversation(user=user, other_user_id=other.pk)[0]


def send(user: User, conversation: Conversation, body: str = "hello", files: int = 0) -> Message:
    ids = [file_of(user).pk for _ in range(files)]
    return services.send_message(
        sender=user,
        conversation_id=conversation.pk,
        client_msg_id=uuid.uuid4(),
        body=body,
        attachment_ids=ids,
    ).message


def file_of(user: User) -> Attachment:
    """Return an attachment row of `user` (no file behind it: only payloads read it)."""
    n = next(_files)
    return Attachment.objects.create(
        uploader=user,
        file=f"attachments/budget/{n}.txt",
        filename=f"{n}.txt",
        content_type="text/plain",
        size=1,
    )


def devices_of(user: User, count: int) -> list[Device]:
    return [
        Device.objects.create(
            user=user, platform="fcm", token=f"token-{user.pk}-{n}".ljust(40, "x")
        )
        for n in range(count)
    ]


def api(user: User | None = None) -> APIClient:
    """Return an API client, with a Bearer access token when given a user."""
    client = APIClient()
    if user is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens.issue_pair(user)['access']}")
    return client


def request(client: APIClient, method: str, url: str, data: Any = None) -> tuple[Any, list[str]]:
    """Make one request; return the response and the statements it sent."""
    call = getattr(client, method)
    if method == "get":
        return queries_of(lambda: call(url, data))
    return queries_of(lambda: call(url, data, format="json"))


def measured(
    client: APIClient, method: str, url: str, data: Any = None, status: int = 200
) -> list[str]:
    response, sql = request(client, method, url, data)
    assert response.status_code == status, response.content
    return sql


# --- services ----------------------------------------------------------------------------


def test_sending_costs_the_same_in_a_direct_chat_and_a_group_of_50(
    ana: User, bo: User, make_user: MakeUser
) -> None:
    chat = direct(ana, bo)
    group = group_of(ana, users(make_user, 49))

    _, small = queries_of(lambda: send(ana, chat))
    _, large = queries_of(lambda: send(ana, group))

    assert_flat(small, large, SEND_MESSAGE)


def test_sending_with_attachments_costs_the_same_for_1_file_and_10(
    ana: User, bo: User, make_user: MakeUser
) -> None:
    chat = direct(ana, bo)
    group = group_of(ana, users(make_user, 49))
    one = [file_of(ana).pk]
    ten = [file_of(ana).pk for _ in range(10)]

    def send_files(conversation: Conversation, ids: list[int]) -> Message:
        return services.send_message(
            sender=ana,
            conversation_id=conversation.pk,
            client_msg_id=uuid.uuid4(),
            body="files",
            attachment_ids=ids,
        ).message

    message, small = queries_of(lambda: send_files(chat, one))
    other, large = queries_of(lambda: send_files(group, ten))

    assert message.attachments.count() == 1 and other.attachments.count() == 10
    assert_flat(small, large, SEND_MESSAGE_WITH_ATTACHMENTS)


def test_sending_with_mentions_costs_the_same_for_1_mention_and_10_in_a_group_of_50(
    ana: User, make_user: MakeUser
) -> None:
    members = users(make_user, 49)
    group = group_of(ana, members)

    one, small = queries_of(lambda: send(ana, group, f"hi @{members[0].username}"))
    names = " ".join(f"@{u.username}" for u in members[:10])
    ten, large = queries_of(lambda: send(ana, group, f"hi {names}"))

    assert len(one.mentions) == 1 and len(ten.mentions) == 10
    assert_flat(small, large, SEND_MESSAGE_WITH_MENTIONS)


def test_receipts_cost_the_same_in_a_direct_chat_and_a_group_of_50(
    ana: User, bo: User, make_user: MakeUser
) -> None:
    chat = direct(ana, bo)
    members = users(make_user, 49)
    group = group_of(ana, members)
    reader = members[0]
    for _ in range(3):
        send(ana, chat)
        send(ana, group)

    def mark(user: User, conversation: Conversation, **seqs: int) -> services.Markers:
        return services.mark_receipts(user=user, conversation_id=conversation.pk, **seqs)

    delivered_small = queries_of(lambda: mark(bo, chat, delivered=1))[1]
    delivered_large = queries_of(lambda: mark(reader, group, delivered=2))[1]
    read, read_small = queries_of(lambda: mark(bo, chat, read=3))
    _, read_large = queries_of(lambda: mark(reader, group, read=4))

    assert read.changed and read.read_seq == 3
    assert_flat(delivered_small, delivered_large, MARK_DELIVERED)
    assert_flat(read_small, read_large, MARK_READ)


def test_editing_costs_the_same_in_a_direct_chat_and_a_group_of_50_with_10_mentions(
    ana: User, bo: User, make_user: MakeUser
) -> None:
    chat = direct(ana, bo)
    members = users(make_user, 49)
    group = group_of(ana, members)
    first, second = send(ana, chat), send(ana, group)
    names = " ".join(f"@{u.username}" for u in members[:10])

    def edit(message: Message, body: str) -> Message:
        return services.edit_message(
            user=ana, conversation_id=message.conversation_id, message_id=message.pk, body=body
        )

    _, small = queries_of(lambda: edit(first, f"hi @{bo.username}"))
    edited, large = queries_of(lambda: edit(second, f"hi {names}"))

    assert len(edited.mentions) == 10
    assert_flat(small, large, EDIT_MESSAGE)


def test_deleting_costs_the_same_for_1_attachment_in_a_direct_chat_and_10_in_a_group_of_50(
    ana: User, bo: User, make_user: MakeUser
) -> None:
    chat = direct(ana, bo)
    group = group_of(ana, users(make_user, 49))
    first, second = send(ana, chat, files=1), send(ana, group, files=10)

    def delete(message: Message) -> Message:
        return services.delete_message(
            user=ana, conversation_id=message.conversation_id, message_id=message.pk
        )

    _, small = queries_of(lambda: delete(first))
    gone, large = queries_of(lambda: delete(second))

    assert gone.deleted and not gone.attachments.exists()
    assert_flat(small, large, DELETE_MESSAGE)


def test_adding_20_members_costs_the_same_as_adding_1(ana: User, make_user: MakeUser) -> None:
    group = group_of(ana, users(make_user, 3))
    one, twenty = users(make_user, 1), users(make_user, 20)

    def add(people: list[User]) -> list[int]:
        return services.add_members(
            actor=ana, conversation_id=group.pk, user_ids=[u.pk for u in people]
        )

    added_one, small = queries_of(lambda: add(one))
    added_twenty, large = queries_of(lambda: add(twenty))

    assert len(added_one) == 1 and len(added_twenty) == 20
    assert_flat(small, large, ADD_MEMBERS)


def test_creating_a_group_of_50_costs_the_same_as_a_group_of_2(
    ana: User, bo: User, make_user: MakeUser
) -> None:
    many = users(make_user, 49)

    _, small = queries_of(lambda: group_of(ana, [bo]))
    group, large = queries_of(lambda: group_of(ana, many))

    assert group.memberships.count() == 50
    assert_flat(small, large, CREATE_GROUP)


# --- selectors the gateway calls --------------------------------------------------------


def conversations_for(user: User, count: int, make_user: MakeUser) -> None:
    """Give `user` `count` conversations, every other one a group, each with an unread message."""
    for n in range(count):
        other = make_user()
        conversation = group_of(other, [user]) if n % 2 else direct(user, other)
        send(other, conversation)


def test_the_conversation_list_costs_one_query_for_1_conversation_or_30(
    ana: User, bo: User, make_user: MakeUser
) -> None:
    conversations_for(ana, 1, make_user)
    conversations_for(bo, 30, make_user)

    few, small = queries_of(lambda: selectors.list_conversations_for_user(user=ana))
    many, large = queries_of(lambda: selectors.list_conversations_for_user(user=bo))

    assert len(few) == 1 and len(many) == 30 and all(v.unread == 1 for v in many)
    assert {v.kind for v in many} == {"direct", "group"}
    assert_flat(small, large, LIST_CONVERSATIONS)


def logs_of(ana: User, bo: User, make_user: MakeUser) -> tuple[Conversation, Conversation]:
    """Return a direct chat with 1 message and a group with 100, each with an attachment."""
    chat = direct(ana, bo)
    send(ana, chat, files=1)
    group = group_of(ana, [bo, *users(make_user, 3)])
    for n in range(100):
        send(ana, group, f"m{n}", files=1)
    return chat, group


def batch_frame(user: User, conversation: Conversation, **position: int) -> wire.MessagesBatchFrame:
    """Fetch a page as the gateway does: the selector, then the `messages.batch` frame."""
    batch = selectors.list_messages_for_user(user=user, conversation_id=conversation.pk, **position)
    return wire.messages_batch_frame(
        None, conversation.pk, batch.messages, batch.upto, batch.has_more
    )


def test_fetching_after_a_cursor_costs_the_same_for_1_message_and_100(
    ana: User, bo: User, make_user: MakeUser
) -> None:
    chat, group = logs_of(ana, bo, make_user)

    one, small = queries_of(lambda: batch_frame(bo, chat, after=0))
    hundred, large = queries_of(lambda: batch_frame(bo, group, after=0))

    assert len(one["messages"]) == 1 and len(hundred["messages"]) == 100
    assert all(len(m["attachments"]) == 1 for m in hundred["messages"] if m["kind"] == "text")
    assert_flat(small, large, LIST_MESSAGES)


def test_fetching_before_a_position_costs_the_same_for_1_message_and_100(
    ana: User, bo: User, make_user: MakeUser
) -> None:
    chat, group = logs_of(ana, bo, make_user)
    chat.refresh_from_db()
    group.refresh_from_db()

    one, small = queries_of(lambda: batch_frame(bo, chat, before=chat.last_seq + 1))
    hundred, large = queries_of(lambda: batch_frame(bo, group, before=group.last_seq + 1))

    assert len(one["messages"]) == 1 and len(hundred["messages"]) == 100
    assert_flat(small, large, LIST_MESSAGES)


def test_log_positions_of_200_users_cost_one_query_like_those_of_1(
    ana: User, make_user: MakeUser
) -> None:
    people = users(make_user, 199)
    group_of(ana, people)
    ids = [ana.pk, *(u.pk for u in people)]

    one, small = queries_of(lambda: selectors.get_log_positions(user_ids=[ana.pk]))
    all_of_them, large = queries_of(lambda: selectors.get_log_positions(user_ids=ids))

    assert one == {ana.pk: 1} and len(all_of_them) == 200
    assert_flat(small, large, LOG_POSITIONS)


def test_filtering_200_visible_users_costs_one_query_like_1(ana: User, make_user: MakeUser) -> None:
    people = users(make_user, 199)
    group_of(ana, people)
    ids = [u.pk for u in people] + [ana.pk]

    one, small = queries_of(
        lambda: selectors.filter_visible_users(user=ana, user_ids=[people[0].pk])
    )
    many, large = queries_of(lambda: selectors.filter_visible_users(user=ana, user_ids=ids))

    assert one == {people[0].pk} and many == set(ids)
    assert_flat(small, large, VISIBLE_USERS)


# --- REST: conversations -----------------------------------------------------------------


def test_the_conversation_list_endpoint_costs_the_same_for_1_conversation_and_30(
    ana: User, bo: User, make_user: MakeUser
) -> None:
    conversations_for(ana, 1, make_user)
    conversations_for(bo, 30, make_user)

    small = measured(api(ana), "get", "/api/v1/conversations")
    response, large = request(api(bo), "get", "/api/v1/conversations")

    assert len(response.json()["results"]) == 30
    assert_flat(small, large, REST_CONVERSATIONS_LIST)


def test_opening_a_direct_conversation_has_a_fixed_cost(ana: User, bo: User) -> None:
    sql = measured(
        api(ana), "post", "/api/v1/conversations", {"kind": "direct", "user": bo.pk}, 201
    )

    assert_within(sql, REST_CREATE_DIRECT)


def test_creating_a_group_of_50_over_rest_costs_the_same_as_a_group_of_2(
    ana: User, bo: User, make_user: MakeUser
) -> None:
    many = users(make_user, 49)
    client = api(ana)

    small = measured(
        client,
        "post",
        "/api/v1/conversations",
        {"kind": "group", "title": "Two", "members": [bo.pk]},
        201,
    )
    response, large = request(
        client,
        "post",
        "/api/v1/conversations",
        {"kind": "group", "title": "Fifty", "members": [u.pk for u in many]},
    )

    assert response.status_code == 201 and len(response.json()["members"]) == 50
    assert_flat(small, large, REST_CREATE_GROUP)


def test_the_conversation_detail_costs_the_same_with_2_members_and_50(
    ana: User, bo: User, make_user: MakeUser
) -> None:
    pair = group_of(ana, [bo])
    group = group_of(ana, users(make_user, 49))
    chat = direct(ana, bo)
    client = api(ana)

    small = measured(client, "get", f"/api/v1/conversations/{pair.pk}")
    response, large = request(client, "get", f"/api/v1/conversations/{group.pk}")
    direct_sql = measured(client, "get", f"/api/v1/conversations/{chat.pk}")

    assert len(response.json()["members"]) == 50
    assert_flat(small, large, REST_CONVERSATION_DETAIL)
    assert_within(direct_sql, REST_CONVERSATION_DETAIL + 1)  # + the direct peer


def test_renaming_and_muting_cost_the_same_with_2_members_and_50(
    ana: User, bo: User, make_user: MakeUser
) -> None:
    pair = group_of(ana, [bo])
    group = group_of(ana, users(make_user, 49))
    client = api(ana)

    rename_small = measured(client, "patch", f"/api/v1/conversations/{pair.pk}", {"title": "A"})
    rename_large = measured(client, "patch", f"/api/v1/conversations/{group.pk}", {"title": "B"})
    settings_change = {"muted": True, "notify": "mentions"}
    mute_small = measured(client, "patch", f"/api/v1/conversations/{pair.pk}", settings_change)
    mute_large = measured(client, "patch", f"/api/v1/conversations/{group.pk}", settings_change)

    assert_flat(rename_small, rename_large, REST_RENAME)
    assert_flat(mute_small, mute_large, REST_MUTE_AND_NOTIFY)


def test_adding_20_members_over_rest_costs_the_same_as_adding_1(
    ana: User, bo: User, make_user: MakeUser
) -> None:
    group = group_of(ana, [bo])
    one, twenty = users(make_user, 1), users(make_user, 20)
    client = api(ana)
    url = f"/api/v1/conversations/{group.pk}/members"

    small = measured(client, "post", url, {"users": [u.pk for u in one]})
    response, large = request(client, "post", url, {"users": [u.pk for u in twenty]})

    assert response.status_code == 200 and len(response.json()["members"]) == 23
    assert_flat(small, large, REST_ADD_MEMBERS)


def test_joining_a_public_group_costs_the_same_with_2_members_and_50(
    ana: User, bo: User, cy: User, make_user: MakeUser
) -> None:
    pair = group_of(ana, [bo], public=True)
    group = group_of(ana, users(make_user, 49), public=True)
    client = api(cy)

    small = measured(client, "post", f"/api/v1/conversations/{pair.pk}/members", {})
    large = measured(client, "post", f"/api/v1/conversations/{group.pk}/members", {})

    assert_flat(small, large, REST_JOIN)


def test_removing_a_member_costs_the_same_with_3_members_and_50(
    ana: User, bo: User, cy: User, make_user: MakeUser
) -> None:
    trio = group_of(ana, [bo, cy])
    many = users(make_user, 49)
    group = group_of(ana, many)
    client = api(ana)

    small = measured(
        client, "delete", f"/api/v1/conversations/{trio.pk}/members/{bo.pk}", None, 204
    )
    large = measured(
        client, "delete", f"/api/v1/conversations/{group.pk}/members/{many[0].pk}", None, 204
    )

    assert_flat(small, large, REST_REMOVE_MEMBER)


def test_the_owner_leaving_costs_the_same_with_2_members_and_50(
    ana: User, bo: User, make_user: MakeUser
) -> None:
    pair = group_of(ana, [bo])
    group = group_of(ana, users(make_user, 49))
    client = api(ana)

    small = measured(
        client, "delete", f"/api/v1/conversations/{pair.pk}/members/{ana.pk}", None, 204
    )
    large = measured(
        client, "delete", f"/api/v1/conversations/{group.pk}/members/{ana.pk}", None, 204
    )

    assert_flat(small, large, REST_LEAVE_AS_OWNER)


# --- REST: messages ----------------------------------------------------------------------


def test_the_message_list_endpoint_costs_the_same_for_1_message_and_100(
    ana: User, bo: User, make_user: MakeUser
) -> None:
    chat, group = logs_of(ana, bo, make_user)
    client = api(bo)

    after_small = measured(client, "get", f"/api/v1/conversations/{chat.pk}/messages", {"after": 0})
    response, after_large = request(
        client, "get", f"/api/v1/conversations/{group.pk}/messages", {"after": 0}
    )
    before_small = measured(
        client, "get", f"/api/v1/conversations/{chat.pk}/messages", {"before": 1000}
    )
    before_large = measured(
        client, "get", f"/api/v1/conversations/{group.pk}/messages", {"before": 1000}
    )

    assert len(response.json()["messages"]) == 100
    assert all(
        len(m["attachments"]) == 1 for m in response.json()["messages"] if m["kind"] == "text"
    )
    assert_flat(after_small, after_large, REST_MESSAGES_LIST)
    assert_flat(before_small, before_large, REST_MESSAGES_LIST)


def test_sending_over_rest_costs_the_same_in_a_direct_chat_and_a_group_of_50(
    ana: User, bo: User, make_user: MakeUser
) -> None:
    chat = direct(ana, bo)
    group = group_of(ana, users(make_user, 49))
    client = api(ana)

    def post(conversation: Conversation, files: list[int]) -> list[str]:
        body = {"client_msg_id": str(uuid.uuid4()), "body": "hi", "attachments": files}
        return measured(
            client, "post", f"/api/v1/conversations/{conversation.pk}/messages", body, 201
        )

    small, large = post(chat, []), post(group, [])
    files_small = post(chat, [file_of(ana).pk])
    files_large = post(group, [file_of(ana).pk for _ in range(10)])

    assert_flat(small, large, REST_SEND)
    assert_flat(files_small, files_large, REST_SEND_WITH_ATTACHMENTS)


def test_editing_and_deleting_over_rest_cost_the_same_in_a_direct_chat_and_a_group_of_50(
    ana: User, bo: User, make_user: MakeUser
) -> None:
    chat = direct(ana, bo)
    group = group_of(ana, users(make_user, 49))
    first, second = send(ana, chat, files=1), send(ana, group, files=10)
    client = api(ana)

    def url(message: Message) -> str:
        return f"/api/v1/conversations/{message.conversation_id}/messages/{message.pk}"

    edit_small = measured(client, "patch", url(first), {"body": "changed"})
    edit_large = measured(client, "patch", url(second), {"body": "changed"})
    delete_small = measured(client, "delete", url(first))
    delete_large = measured(client, "delete", url(second))

    assert_flat(edit_small, edit_large, REST_EDIT)
    assert_flat(delete_small, delete_large, REST_DELETE)


def test_the_notification_trace_costs_the_same_with_1_device_and_10(
    ana: User, bo: User, cy: User
) -> None:
    devices_of(bo, 1)
    devices_of(cy, 10)
    to_bo, to_cy = send(ana, direct(ana, bo)), send(ana, direct(ana, cy))

    def trace(user: User, message: Message) -> tuple[Any, list[str]]:
        url = f"/api/v1/conversations/{message.conversation_id}/messages/{message.pk}/notifications"
        return request(api(user), "get", url)

    _, pending_small = trace(bo, to_bo)
    pending, pending_large = trace(cy, to_cy)
    decide.decide_due_messages(now=timezone.now() + timedelta(hours=1))
    _, decided_small = trace(bo, to_bo)
    decided, decided_large = trace(cy, to_cy)

    assert [r["decision"] for r in pending.json()["results"]] == ["pending"] * 10
    assert len(decided.json()["results"]) == 10
    assert_flat(pending_small, pending_large, REST_NOTIFICATION_TRACE_PENDING)
    assert_flat(decided_small, decided_large, REST_NOTIFICATION_TRACE_DECIDED)


def test_reading_over_rest_costs_the_same_in_a_direct_chat_and_a_group_of_50(
    ana: User, bo: User, make_user: MakeUser
) -> None:
    chat = direct(ana, bo)
    members = users(make_user, 49)
    group = group_of(ana, members)
    send(ana, chat)
    send(ana, group)

    small = measured(api(bo), "post", f"/api/v1/conversations/{chat.pk}/read", {"seq": 1})
    large = measured(api(members[0]), "post", f"/api/v1/conversations/{group.pk}/read", {"seq": 2})

    assert_flat(small, large, REST_READ)


# --- REST: attachments, search, devices, server -----------------------------------------


def test_uploading_and_downloading_have_a_fixed_cost(
    ana: User, bo: User, make_user: MakeUser
) -> None:
    group = group_of(ana, [bo, *users(make_user, 48)])
    client = api(ana)
    response, upload = queries_of(
        lambda: client.post(
            "/api/v1/attachments",
            {"file": SimpleUploadedFile("note.txt", b"hello", content_type="text/plain")},
            format="multipart",
        )
    )
    assert response.status_code == 201, response.content
    attachment_id = response.json()["id"]
    services.send_message(
        sender=ana,
        conversation_id=group.pk,
        client_msg_id=uuid.uuid4(),
        body="see",
        attachment_ids=[attachment_id],
    )

    def download(user_client: APIClient) -> list[str]:
        response, sql = request(user_client, "get", f"/api/v1/attachments/{attachment_id}")
        # Reading a FileResponse to its end closes its file (as the client does).
        assert response.status_code == 200 and response.getvalue() == b"hello"
        return sql

    as_uploader, as_member = download(client), download(api(bo))

    assert_within(upload, REST_UPLOAD)
    assert_flat(as_uploader, as_member, REST_DOWNLOAD)


def test_search_costs_the_same_for_1_hit_and_50(ana: User, bo: User) -> None:
    group = group_of(ana, [bo])
    send(ana, group, "the alpha plan", files=1)
    for n in range(50):
        send(ana, group, f"bravo number {n}", files=1)
    client = api(bo)

    one, small = request(client, "get", "/api/v1/search", {"q": "alpha", "limit": 50})
    fifty, large = request(client, "get", "/api/v1/search", {"q": "bravo", "limit": 50})

    assert len(one.json()["results"]) == 1 and len(fifty.json()["results"]) == 50
    assert_flat(small, large, REST_SEARCH)


def test_listing_devices_costs_the_same_for_1_device_and_10(ana: User, bo: User) -> None:
    devices_of(ana, 1)
    devices_of(bo, 10)

    small = measured(api(ana), "get", "/api/v1/devices")
    response, large = request(api(bo), "get", "/api/v1/devices")

    assert len(response.json()["results"]) == 10
    assert_flat(small, large, REST_DEVICES_LIST)


def test_registering_and_removing_a_device_cost_the_same_with_1_device_and_10(
    ana: User, bo: User
) -> None:
    (one,) = devices_of(ana, 1)
    ten = devices_of(bo, 10)

    def register(user: User) -> list[str]:
        body = {"platform": "fcm", "token": f"new-{user.pk}".ljust(40, "y"), "name": "Phone"}
        return measured(api(user), "post", "/api/v1/devices", body, 201)

    register_small, register_large = register(ana), register(bo)
    remove_small = measured(api(ana), "delete", f"/api/v1/devices/{one.pk}", None, 204)
    remove_large = measured(api(bo), "delete", f"/api/v1/devices/{ten[0].pk}", None, 204)

    assert_flat(register_small, register_large, REST_DEVICE_REGISTER)
    assert_flat(remove_small, remove_large, REST_DEVICE_REMOVE)


def test_the_server_limits_cost_no_query() -> None:
    sql = measured(api(), "get", "/api/v1/server/limits")

    assert_within(sql, REST_SERVER_LIMITS)


# --- REST: accounts and presence ---------------------------------------------------------


def test_signing_up_logging_in_refreshing_and_out_have_a_fixed_cost(ana: User) -> None:
    anonymous = api()
    signup = {"username": "newcomer", "password": "a long pass phrase 9", "display_name": "New"}

    register = measured(anonymous, "post", "/api/v1/auth/register", signup, 201)
    response, login = request(
        anonymous, "post", "/api/v1/auth/token", {"username": "ana", "password": "pw-secret-1"}
    )
    assert response.status_code == 200, response.content
    pair = response.json()
    response, refresh = request(
        anonymous, "post", "/api/v1/auth/token/refresh", {"refresh": pair["refresh"]}
    )
    assert response.status_code == 200, response.content
    signed_in = api(ana)
    logout = measured(
        signed_in, "post", "/api/v1/auth/logout", {"refresh": response.json()["refresh"]}, 204
    )

    assert_within(register, REST_REGISTER)
    assert_within(login, REST_TOKEN)
    assert_within(refresh, REST_TOKEN_REFRESH)
    assert_within(logout, REST_LOGOUT)


def test_tickets_and_the_profile_have_a_fixed_cost(ana: User) -> None:
    client = api(ana)

    ticket = measured(client, "post", "/api/v1/ws-tickets", None, 201)
    me = measured(client, "get", "/api/v1/users/me")
    update = measured(client, "patch", "/api/v1/users/me", {"display_name": "Ana B"})

    assert_within(ticket, REST_WS_TICKET)
    assert_within(me, REST_ME)
    assert_within(update, REST_ME_UPDATE)


def test_the_user_directory_costs_the_same_for_1_result_and_50(
    ana: User, make_user: MakeUser
) -> None:
    make_user("solo1")
    for n in range(50):
        make_user(f"crowd{n:02d}")
    client = api(ana)

    one, small = request(client, "get", "/api/v1/users", {"q": "solo"})
    fifty, large = request(client, "get", "/api/v1/users", {"q": "crowd"})

    assert len(one.json()["results"]) == 1 and len(fifty.json()["results"]) == 50
    assert_flat(small, large, REST_USERS)


def test_presence_costs_the_same_for_1_user_and_200(ana: User, make_user: MakeUser) -> None:
    people = users(make_user, 199)
    group_of(ana, people)
    client = api(ana)
    every = ",".join(str(u.pk) for u in people)

    one, small = request(client, "get", "/api/v1/presence", {"users": str(people[0].pk)})
    many, large = request(client, "get", "/api/v1/presence", {"users": every})

    assert len(one.json()["users"]) == 1 and len(many.json()["users"]) == 199
    assert_flat(small, large, REST_PRESENCE)


# --- the WebSocket consumer -------------------------------------------------------------

# The consumer runs its ORM calls on the gateway's thread pool (chatsite.gateway.dbthreads),
# and the handshake's authentication too; each thread has its own connection, which
# CaptureQueriesContext (one connection) never sees. `every_connection` wraps Django's
# `CursorWrapper.execute` and `executemany`, which every Django cursor (plain or debug, on
# any thread's connection) sends its statements through, with a counter around the real
# methods while the test runs: a measurement; nothing of ours is replaced. (Per-connection
# hooks, `execute_wrapper` or debug cursors, would have to be installed on each pool
# thread's connection as it opens.) Each statement is attributed to the innermost frame of
# our code that sent it, shown in failures. The gateway's
# once-per-process timers (credential re-checks every WS_AUTH_CHECK_INTERVAL,
# `last_seen` after a disconnect's grace) use the same pool on their own clock; their
# statements are set aside by that attribution, so counts never depend on timing.
_REPO = Path(__file__).resolve().parent.parent
_TIMERS = {
    ("chatsite/gateway/auth.py", "find_revoked"),
    ("accounts/credentials.py", "changes_since"),
    ("chatsite/gateway/supervisor.py", "_check_credentials"),
    ("presence/services.py", "save"),
}


class QueryLog:
    """Statements sent on any connection while recording: (where in our code, SQL)."""

    def __init__(self) -> None:
        self.recording = False
        self.lock = threading.Lock()
        self.entries: list[tuple[str, str]] = []
        self.set_aside: list[tuple[str, str]] = []

    def record(self, sql: str) -> None:
        if not self.recording or _SAVEPOINT.match(sql):
            return
        origin, timer = "?", False
        frame: FrameType | None = sys._getframe(2)
        while frame is not None:
            path = Path(frame.f_code.co_filename)
            if path.is_relative_to(_REPO) and ".venv" not in path.parts:
                where = (path.relative_to(_REPO).as_posix(), frame.f_code.co_name)
                if where[0] != "tests/test_query_budgets.py":
                    origin = origin if origin != "?" else f"{where[0]}:{where[1]}"
                    timer = timer or where in _TIMERS
            frame = frame.f_back
        with self.lock:
            (self.set_aside if timer else self.entries).append((origin, sql))

    def take(self) -> list[str]:
        """Stop recording; return what was recorded, as `origin: SQL` lines, and forget it."""
        with self.lock:
            self.recording = False
            taken, self.entries = self.entries, []
        return [f"{origin}: {sql}" for origin, sql in taken]

    def start(self) -> None:
        with self.lock:
            self.entries, self.set_aside = [], []
            self.recording = True


@pytest.fixture
def every_connection(monkeypatch: pytest.MonkeyPatch) -> QueryLog:
    """Count the statements of every thread's connection (see the comment above)."""
    log = QueryLog()
    execute, executemany = CursorWrapper.execute, CursorWrapper.executemany

    def counted_execute(self: CursorWrapper, sql: str, params: Any = None) -> Any:
        log.record(sql)
        return execute(self, sql, params)

    def counted_executemany(self: CursorWrapper, sql: str, param_list: Any) -> Any:
        log.record(sql)
        return executemany(self, sql, param_list)

    monkeypatch.setattr(CursorWrapper, "execute", counted_execute)
    monkeypatch.setattr(CursorWrapper, "executemany", counted_executemany)
    return log


class Socket:
    """A WebSocket of one user on the in-process app (as in tests/messaging/test_consumers.py)."""

    def __init__(self, token: str) -> None:
        self.ws = WebsocketCommunicator(
            application, "/ws/v1/", headers=[(b"authorization", f"Bearer {token}".encode())]
        )

    async def open(self) -> dict[str, Any]:
        connected, _ = await self.ws.connect()
        assert connected
        ready: dict[str, Any] = json.loads(await self.ws.receive_from(10))
        return ready

    async def ask(self, **frame: Any) -> dict[str, Any]:
        ref = uuid.uuid4().hex[:8]
        await self.ws.send_to(text_data=json.dumps({**frame, "ref": ref}))
        while True:
            answer: dict[str, Any] = json.loads(await self.ws.receive_from(10))
            if answer.get("ref") == ref:
                return answer


def token_for(user: User) -> str:
    token = tokens.issue_pair(user)["access"]
    connection.close()  # the consumer's threads use their own connections
    return token


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(asyncio.wait_for(scenario(), 60))


async def measured_connect(log: QueryLog, token: str) -> tuple[Socket, dict[str, Any], list[str]]:
    """Open a socket; return it, its `session.ready` and the statements of the connect."""
    socket = Socket(token)
    log.start()
    ready = await socket.open()
    return socket, ready, log.take()


async def measured_ask(
    log: QueryLog, socket: Socket, **frame: Any
) -> tuple[dict[str, Any], list[str]]:
    """Send a frame; return its answer and the statements it cost."""
    log.start()
    answer = await socket.ask(**frame)
    return answer, log.take()


@pytest.mark.django_db(transaction=True)
def test_a_websocket_connect_and_sync_cost_the_same_for_1_conversation_and_30(
    ana: User, bo: User, make_user: MakeUser, every_connection: QueryLog
) -> None:
    conversations_for(ana, 1, make_user)
    conversations_for(bo, 30, make_user)
    few, many = token_for(ana), token_for(bo)

    async def scenario() -> dict[str, Any]:
        small, small_ready, connect_small = await measured_connect(every_connection, few)
        large, large_ready, connect_large = await measured_connect(every_connection, many)
        _, sync_small = await measured_ask(every_connection, small, type="sync")
        large_state, sync_large = await measured_ask(every_connection, large, type="sync")
        await small.ws.disconnect()
        await large.ws.disconnect()
        return {
            "small_ready": small_ready,
            "large_ready": large_ready,
            "large_state": large_state,
            "connect": (connect_small, connect_large),
            "sync": (sync_small, sync_large),
        }

    seen = run(scenario)

    assert seen["small_ready"]["type"] == "session.ready"
    assert len(seen["small_ready"]["conversations"]) == 1
    assert len(seen["large_ready"]["conversations"]) == 30
    assert len(seen["large_state"]["conversations"]) == 30
    assert_flat(seen["connect"][0], seen["connect"][1], WS_CONNECT)
    assert_flat(seen["sync"][0], seen["sync"][1], WS_SYNC)


@pytest.mark.django_db(transaction=True)
def test_websocket_fetch_and_send_cost_the_same_for_small_and_large_conversations(
    ana: User, bo: User, make_user: MakeUser, every_connection: QueryLog
) -> None:
    chat, group = logs_of(ana, bo, make_user)
    big = group_of(ana, users(make_user, 49))
    token = token_for(bo)
    sender = token_for(ana)

    async def scenario() -> dict[str, Any]:
        reader, _, _ = await measured_connect(every_connection, token)
        one, fetch_small = await measured_ask(
            every_connection, reader, type="messages.fetch", conversation=chat.pk, after=0
        )
        hundred, fetch_large = await measured_ask(
            every_connection, reader, type="messages.fetch", conversation=group.pk, after=0
        )
        writer, _, _ = await measured_connect(every_connection, sender)
        cmids = str(uuid.uuid4()), str(uuid.uuid4())
        sent_small, send_small = await measured_ask(
            every_connection,
            writer,
            type="message.send",
            conversation=chat.pk,
            client_msg_id=cmids[0],
            body="hi",
        )
        sent_large, send_large = await measured_ask(
            every_connection,
            writer,
            type="message.send",
            conversation=big.pk,
            client_msg_id=cmids[1],
            body="hi",
        )
        await reader.ws.disconnect()
        await writer.ws.disconnect()
        return {
            "fetched": (len(one["messages"]), len(hundred["messages"])),
            "sent": (sent_small["type"], sent_large["type"]),
            "fetch": (fetch_small, fetch_large),
            "send": (send_small, send_large),
        }

    seen = run(scenario)

    assert seen["fetched"] == (1, 100)
    assert seen["sent"] == ("message.sent", "message.sent")
    assert_flat(seen["fetch"][0], seen["fetch"][1], WS_FETCH)
    assert_flat(seen["send"][0], seen["send"][1], WS_SEND)


# --- budgets: the notification worker -------------------------------------------------------

# decide_due_messages: take the due rows, their messages, the members with their users,
# their devices, INSERT the trace rows, INSERT/lock/UPDATE the push windows, the email
# digests likewise, DELETE the due rows: the same for 1 message as for a batch of 20.
DECIDE = 12


def test_deciding_20_messages_costs_the_same_as_deciding_1(make_user: MakeUser) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from messaging.notifications import decide

    def batch(count: int) -> list[str]:
        sender, *others = users(make_user, 4)
        for other in others:
            devices_of(other, 2)
            other.email = f"{other.username}@example.org"
            other.save(update_fields=["email"])
        group = group_of(sender, others)
        for _ in range(count):
            send(sender, group)
            send(sender, direct(sender, others[0]))
        later = timezone.now() + timedelta(hours=1)
        decided, sql = queries_of(lambda: decide.decide_due_messages(now=later, limit=100))
        assert decided == 2 * count
        return sql

    small, large = batch(1), batch(20)
    assert_flat(small, large, DECIDE)
