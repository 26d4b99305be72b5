"""Sends stored together (`services.send_messages`), against the real PostgreSQL.

A gateway hands the sends of its sockets that arrived while earlier ones were being
written to one call: one statement stores them all, each send still gets its own result
or error, and the log keeps its guarantees (gap-free seqs, exactly-once replays).
"""

import random
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import User
from messaging import events, services
from messaging.errors import (
    AdminsOnly,
    BadRequest,
    CannotSend,
    Conflict,
    MessageTooLong,
    NotAMember,
    RateLimited,
)
from messaging.models import Attachment, Conversation, Membership, Message, NotificationDue
from tests.conftest import Listener
from tests.messaging.test_send_concurrency import _log_state, run_in_threads

pytestmark = pytest.mark.django_db(transaction=True)


def request(sender: User, conversation: Conversation, body: str, **fields: Any) -> Any:
    fields.setdefault("client_msg_id", uuid.uuid4())
    return services.SendRequest(sender=sender, conversation_id=conversation.pk, body=body, **fields)


def seqs_of(conversation: Conversation) -> list[int]:
    return list(
        Message.objects.filter(conversation=conversation)
        .order_by("seq")
        .values_list("seq", flat=True)
    )


def test_one_statement_stores_a_batch_in_order_with_markers_due_rows_and_events(
    ana: User, bo: User, cy: User, listener: Listener, settings: Any
) -> None:
    # Given a direct chat (its request accepted: bo replied) and a group of three,
    # followed on the channel layer
    settings.NOTIFY_ENABLED = True
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    services.send_message(sender=bo, conversation_id=chat.pk, client_msg_id=uuid.uuid4(), body="hi")
    group = services.create_group(creator=ana, title="Team", member_ids=[bo.pk, cy.pk])
    start = Conversation.objects.get(pk=group.pk).last_seq
    for conversation in (chat, group):
        listener.join(events.conversation_group(conversation.pk))
    batch = [
        request(ana, chat, "d1"),
        request(bo, group, "g1"),
        request(ana, group, "g2"),
        request(bo, chat, "d2"),
        request(cy, group, "g3"),
    ]

    # When the five sends are stored together
    with CaptureQueriesContext(connection) as queries:
        results = services.send_messages(batch)

    # Then one statement stored them all
    assert len(queries) == 1, [q["sql"] for q in queries]
    assert all(isinstance(r, services.SendResult) and r.created for r in results)
    # each conversation's sends took its next seqs in the order given
    got = [(r.message.conversation_id, r.message.seq, r.message.body) for r in results]  # type: ignore[union-attr]
    assert got == [
        (chat.pk, 2, "d1"),
        (group.pk, start + 1, "g1"),
        (group.pk, start + 2, "g2"),
        (chat.pk, 3, "d2"),
        (group.pk, start + 3, "g3"),
    ]
    assert list(
        Message.objects.filter(pk__in=[r.message.pk for r in results])  # type: ignore[union-attr]
        .order_by("conversation_id", "seq")
        .values_list("conversation_id", "seq", "body", "sender_id")
    ) == sorted(
        [
            (chat.pk, 2, "d1", ana.pk),
            (chat.pk, 3, "d2", bo.pk),
            (group.pk, start + 1, "g1", bo.pk),
            (group.pk, start + 2, "g2", ana.pk),
            (group.pk, start + 3, "g3", cy.pk),
        ]
    )
    assert seqs_of(chat) == [1, 2, 3] and seqs_of(group) == list(range(1, start + 4))
    # each sender's markers rose to their own last message
    markers = dict(
        ((m.conversation_id, m.user_id), (m.read_seq, m.delivered_seq))
        for m in Membership.objects.all()
    )
    assert markers[(chat.pk, ana.pk)] == (2, 2) and markers[(chat.pk, bo.pk)] == (3, 3)
    assert markers[(group.pk, bo.pk)] == (start + 1, start + 1)
    assert markers[(group.pk, ana.pk)] == (start + 2, start + 2)
    assert markers[(group.pk, cy.pk)] == (start + 3, start + 3)
    # every message has its notifications decided later
    assert NotificationDue.objects.exclude(message__body="hi").count() == 5
    # and the members' connections got each message, in each conversation's order
    seen: dict[int, list[int]] = {chat.pk: [], group.pk: []}
    for _ in range(5):
        event = listener.receive()
        assert event["frame"]["type"] == "message.created"
        seen[int(event["conversation"])].append(event["frame"]["message"]["seq"])
    assert seen == {chat.pk: [2, 3], group.pk: [start + 1, start + 2, start + 3]}


def test_each_send_of_a_batch_gets_its_own_refusal_and_the_others_are_stored(
    ana: User, bo: User, cy: User, make_user: Callable[..., User], settings: Any
) -> None:
    # Given a direct chat ana-bo, a direct chat cy-dee that dee blocked, and a group
    # where only admins may send (ana owns it, bo is a plain member)
    dee = make_user("dee")
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    blocked, _ = services.create_direct_conversation(user=cy, other_user_id=dee.pk)
    services.block_user(user=dee, other_user_id=cy.pk)
    news = services.create_group(creator=ana, title="News", member_ids=[bo.pk])
    services.update_group(actor=ana, conversation_id=news.pk, post_policy="admins")
    before = {c.pk: _log_state(c.pk) for c in (blocked, news)}
    news_seq = Conversation.objects.get(pk=news.pk).last_seq
    batch = [
        request(ana, chat, "first"),
        request(cy, blocked, "to a blocker"),  # Tried: a blocked pair's direct chat
        request(bo, news, "not an admin"),  # a plain member of an admins-only group
        request(dee, chat, "stranger"),  # someone not in the chat
        request(
            ana, chat, "x" * (settings.CHAT_MAX_MESSAGE_LENGTH + 1)
        ),  # a body over the length limit
        request(ana, chat, "re", reply_to=987654321),  # a reply to no message
        request(ana, news, "from the owner"),
        request(bo, chat, "second"),
    ]

    # When they are stored together
    outcomes = services.send_messages(batch)

    # Then each refused send got its own error
    kinds = [type(outcome) for outcome in outcomes]
    assert kinds == [
        services.SendResult,
        CannotSend,
        AdminsOnly,
        NotAMember,
        MessageTooLong,
        BadRequest,
        services.SendResult,
        services.SendResult,
    ]
    # and left the conversations they aimed at as they were (but for the owner's send)
    assert _log_state(blocked.pk) == before[blocked.pk]
    assert not Message.objects.filter(conversation=news, sender=bo).exists()
    # and the allowed sends were stored, the log without a gap
    assert [(m.body, m.seq) for m in Message.objects.filter(conversation=chat).order_by("seq")] == [
        ("first", 1),
        ("second", 2),
    ]
    assert list(
        Message.objects.filter(conversation=news, kind="text").values_list("body", "seq")
    ) == [("from the owner", news_seq + 1)]
    assert seqs_of(news) == list(range(1, news_seq + 2))


def test_a_sender_past_the_rate_limit_in_a_batch_is_refused_and_the_others_stored(
    ana: User, bo: User, settings: Any
) -> None:
    # Given a send rate of 2 in a burst, refilled once a minute
    settings.CHAT_SEND_BURST, settings.CHAT_SEND_RATE = 2, 1 / 60
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    # When ana sends three in one batch, bo one between them
    batch = [request(ana, chat, "a1"), request(ana, chat, "a2"), request(bo, chat, "b1")]
    outcomes = services.send_messages([*batch, request(ana, chat, "a3")])
    # Then ana's third is refused with a wait, and the rest are stored in order
    assert [type(o) for o in outcomes] == [services.SendResult] * 3 + [RateLimited]
    assert outcomes[3].retry_after > 50  # type: ignore[union-attr]
    assert [m.body for m in Message.objects.filter(conversation=chat).order_by("seq")] == [
        "a1",
        "a2",
        "b1",
    ]


def test_a_retry_in_a_batch_answers_the_original_and_the_others_are_stored_once(
    ana: User, bo: User
) -> None:
    # Given a message ana stored earlier
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    earlier = services.send_message(
        sender=ana, conversation_id=chat.pk, client_msg_id=uuid.uuid4(), body="earlier"
    ).message
    batch = [
        request(bo, chat, "new 1"),
        # Tried: its retry (same id, same body), and the id again with another body
        request(ana, chat, "earlier", client_msg_id=earlier.client_msg_id),
        request(ana, chat, "other body", client_msg_id=earlier.client_msg_id),
        request(ana, chat, "new 2"),
    ]

    # When they arrive in one batch (its statement fails as a whole on the used id)
    outcomes = services.send_messages(batch)

    # Then the retry got the original back, the reuse a conflict
    first, retry, reuse, second = outcomes
    assert isinstance(retry, services.SendResult) and not retry.created
    assert retry.message.pk == earlier.pk and retry.message.seq == 1
    assert isinstance(reuse, Conflict)
    # and the new sends were stored once each, after it, without a gap
    assert isinstance(first, services.SendResult) and first.created
    assert isinstance(second, services.SendResult) and second.created
    assert [m.body for m in Message.objects.filter(conversation=chat).order_by("seq")] == [
        "earlier",
        "new 1",
        "new 2",
    ]
    assert seqs_of(chat) == [1, 2, 3]
    assert Conversation.objects.get(pk=chat.pk).last_seq == 3


def test_a_send_with_attachments_in_a_batch_is_stored_with_its_files(ana: User, bo: User) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    photo = Attachment.objects.create(
        uploader=ana,
        file="attachments/b/1.png",
        filename="1.png",
        content_type="image/png",
        size=1,
    )
    outcomes = services.send_messages(
        [
            request(bo, chat, "text"),
            request(ana, chat, "", attachment_ids=[photo.pk]),
            request(bo, chat, "text again"),
        ]
    )
    assert all(isinstance(o, services.SendResult) and o.created for o in outcomes)
    with_file = Message.objects.get(pk=outcomes[1].message.pk)  # type: ignore[union-attr]
    assert list(with_file.attachments.values_list("pk", flat=True)) == [photo.pk]
    assert seqs_of(chat) == [1, 2, 3]


def test_concurrent_batches_over_the_same_conversations_in_any_order_never_deadlock(
    make_user: Callable[..., User], settings: Any
) -> None:
    # Given six groups that four users are all members of
    settings.CHAT_SEND_RATE = settings.CHAT_SEND_BURST = 1_000_000
    users = [make_user() for _ in range(4)]
    groups = [
        services.create_group(creator=users[0], title=f"G{n}", member_ids=[u.pk for u in users[1:]])
        for n in range(6)
    ]
    starts = {g.pk: Conversation.objects.get(pk=g.pk).last_seq for g in groups}

    # When four threads each store 25 batches of 8 sends, every batch naming the groups
    # in another random order (so two batches may want each other's conversations)
    def store(i: int) -> list[list[tuple[int, int]]]:
        rng = random.Random(i)
        stored = []
        for n in range(25):
            batch = [request(users[i], rng.choice(groups), f"{i}-{n}-{k}") for k in range(8)]
            outcomes = services.send_messages(batch)
            assert all(isinstance(o, services.SendResult) for o in outcomes), outcomes
            stored.append([(o.message.conversation_id, o.message.seq) for o in outcomes])  # type: ignore[union-attr]
        return stored

    per_thread = run_in_threads(4, store)

    # Then all 800 are stored, each group's log without a gap or a duplicate
    assert Message.objects.filter(kind="text").count() == 800
    for group in groups:
        count = Message.objects.filter(conversation=group, kind="text").count()
        assert seqs_of(group) == list(range(1, starts[group.pk] + count + 1))
        assert Conversation.objects.get(pk=group.pk).last_seq == starts[group.pk] + count
    # and within a batch, sends to one conversation took increasing seqs in their order
    for batches in per_thread:
        for stored in batches:
            for group in groups:
                mine = [seq for conversation, seq in stored if conversation == group.pk]
                assert mine == sorted(mine)
