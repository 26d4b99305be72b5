"""Reads: log pages by `after` and `before`, and the conversation list with unread counts."""

import uuid
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import User
from messaging import selectors, services
from messaging.errors import BadRequest, NotAMember
from messaging.models import Conversation

pytestmark = pytest.mark.django_db


def send(user: User, conversation: Conversation, body: str = "hello") -> int:
    return services.send_message(
        sender=user, conversation_id=conversation.pk, client_msg_id=uuid.uuid4(), body=body
    ).message.seq


def test_after_pages_in_version_order_with_upto_and_has_more(ana: User, bo: User) -> None:
    conversation, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    for n in range(5):
        send(ana, conversation, f"m{n}")

    first = selectors.list_messages_for_user(
        user=bo, conversation_id=conversation.pk, after=0, limit=2
    )
    second = selectors.list_messages_for_user(
        user=bo, conversation_id=conversation.pk, after=first.upto, limit=2
    )
    third = selectors.list_messages_for_user(
        user=bo, conversation_id=conversation.pk, after=second.upto, limit=2
    )
    done = selectors.list_messages_for_user(
        user=bo, conversation_id=conversation.pk, after=third.upto, limit=2
    )

    assert [m.seq for m in first.messages] == [1, 2] and (first.upto, first.has_more) == (2, True)
    assert [m.seq for m in second.messages] == [3, 4] and (second.upto, second.has_more) == (
        4,
        True,
    )
    assert [m.seq for m in third.messages] == [5] and (third.upto, third.has_more) == (5, False)
    assert done.messages == [] and (done.upto, done.has_more) == (5, False)


def test_before_pages_back_through_history_in_seq_order(ana: User, bo: User) -> None:
    conversation, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    for n in range(5):
        send(ana, conversation, f"m{n}")

    newest = selectors.list_messages_for_user(user=bo, conversation_id=conversation.pk, limit=2)
    older = selectors.list_messages_for_user(
        user=bo, conversation_id=conversation.pk, before=newest.messages[0].seq, limit=2
    )
    oldest = selectors.list_messages_for_user(
        user=bo, conversation_id=conversation.pk, before=older.messages[0].seq, limit=2
    )

    assert [m.seq for m in newest.messages] == [4, 5] and newest.has_more
    assert [m.seq for m in older.messages] == [2, 3] and older.has_more
    assert [m.seq for m in oldest.messages] == [1] and not oldest.has_more
    assert newest.upto is None


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"after": -1}, "after"),
        ({"after": "3"}, "after"),
        ({"before": 1.5}, "before"),
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"limit": True}, "limit"),
        ({"after": 1, "before": 5}, "before"),
        ({"after": 2**63}, "after"),
    ],
)
def test_bad_fetch_parameters_name_the_field(
    ana: User, bo: User, params: dict[str, object], field: str
) -> None:
    conversation, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)

    with pytest.raises(BadRequest) as err:
        selectors.list_messages_for_user(user=bo, conversation_id=conversation.pk, **params)

    assert err.value.details == {"field": field}


def test_non_member_cannot_fetch(ana: User, bo: User, cy: User) -> None:
    conversation, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)

    with pytest.raises(NotAMember):
        selectors.list_messages_for_user(user=cy, conversation_id=conversation.pk, after=0)


def test_fetch_costs_a_fixed_number_of_queries(ana: User, bo: User) -> None:
    conversation, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    for n in range(20):
        send(ana, conversation, f"m{n}")

    # membership + conversation, messages, attachments: whatever the page size
    with CaptureQueriesContext(connection) as queries:
        batch = selectors.list_messages_for_user(user=bo, conversation_id=conversation.pk, after=0)
    assert len(batch.messages) == 20
    assert len(queries) == 3


def test_conversation_list_counts_unread_text_from_others_and_sorts_by_activity(
    ana: User, bo: User, cy: User
) -> None:
    with_bo, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    group = services.create_group(creator=cy, title="Team", member_ids=[ana.pk, bo.pk])
    send(bo, with_bo, "1")
    send(bo, with_bo, "2")
    own = send(ana, with_bo, "mine")  # raises ana's read marker to her own message
    send(bo, with_bo, "3")
    send(cy, group, "hey team")
    services.rename_conversation(actor=cy, conversation_id=group.pk, title="Team 2")  # system

    views = selectors.list_conversations_for_user(user=ana)

    assert [v.id for v in views] == [group.pk, with_bo.pk]
    by_id = {v.id: v for v in views}
    assert by_id[with_bo.pk].unread == 1  # only "3": read up to her own message at seq 3
    assert by_id[with_bo.pk].read_seq == own
    assert by_id[with_bo.pk].title == "Bo" and by_id[with_bo.pk].peer == bo.pk
    assert by_id[group.pk].unread == 1  # the rename is a system message
    assert by_id[group.pk].title == "Team 2" and by_id[group.pk].last_seq == 3


def test_the_snapshot_is_prepared_once_per_connection_and_still_counted(
    ana: User, bo: User, settings: Any
) -> None:
    """Tried: the snapshot read three times on one connection (prepared once), then with
    DB_PREPARED_STATEMENTS off; each read is one statement Django's cursor sees."""
    services.create_direct_conversation(user=ana, other_user_id=bo.pk)

    def prepared_snapshots() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
                ["%JOIN messaging_conversation c ON c.id = m.conversation_id%"],
            )
            (count,) = cursor.fetchone()
        return int(count)

    before = prepared_snapshots()
    for _ in range(3):
        with CaptureQueriesContext(connection) as queries:
            (view,) = selectors.list_conversations_for_user(user=ana)
        assert len(queries) == 1 and view.peer == bo.pk
    assert prepared_snapshots() == before + (0 if before else 1)
    assert prepared_snapshots() == 1

    settings.DB_PREPARED_STATEMENTS = False  # through Django's own cursor instead
    with CaptureQueriesContext(connection) as queries:
        (view,) = selectors.list_conversations_for_user(user=ana)
    assert len(queries) == 1 and view.peer == bo.pk


def test_conversation_list_query_count_does_not_grow_with_conversations(
    ana: User, make_user
) -> None:
    for _ in range(10):
        other = make_user()
        conversation, _ = services.create_direct_conversation(user=ana, other_user_id=other.pk)
        send(other, conversation)

    with CaptureQueriesContext(connection) as queries:
        views = selectors.list_conversations_for_user(user=ana)

    assert len(views) == 10 and all(v.unread == 1 for v in views)
    # One statement: memberships, conversations, unread counts and direct peers together.
    assert len(queries) == 1
    assert {v.title for v in views} == {u.name for u in User.objects.exclude(pk=ana.pk)}


def test_deleted_messages_are_not_unread(ana: User, bo: User) -> None:
    conversation, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    send(bo, conversation, "keep")
    gone = services.send_message(
        sender=bo, conversation_id=conversation.pk, client_msg_id=uuid.uuid4(), body="oops"
    ).message
    services.delete_message(user=bo, conversation_id=conversation.pk, message_id=gone.pk)

    (view,) = selectors.list_conversations_for_user(user=ana)

    assert view.unread == 1


def test_log_positions_sum_last_seq_over_each_users_conversations_in_one_query(
    ana: User, bo: User, cy: User, django_assert_num_queries: Any
) -> None:
    direct, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    group = services.create_group(creator=cy, title="Trip", member_ids=[ana.pk])
    send(ana, direct)
    send(bo, direct)
    send(cy, group)
    nobody = 10**9  # an id with no conversations (or no user at all) is at 0

    with django_assert_num_queries(1):
        positions = selectors.get_log_positions(user_ids=[ana.pk, bo.pk, cy.pk, nobody])

    assert positions == {ana.pk: 2 + 2, bo.pk: 2, cy.pk: 2, nobody: 0}
    services.edit_message(
        user=ana, conversation_id=direct.pk, message_id=first_id(direct), body="edited"
    )
    assert selectors.get_log_positions(user_ids=[ana.pk])[ana.pk] == 5  # an edit moves it
    services.leave_conversation(user=ana, conversation_id=group.pk)
    assert selectors.get_log_positions(user_ids=[ana.pk])[ana.pk] == 3  # leaving drops it


def first_id(conversation: Conversation) -> int:
    return conversation.messages.order_by("seq").values_list("pk", flat=True)[0]


def test_a_page_reads_every_field_and_attachment_as_the_orm_does(ana: User, bo: User) -> None:
    """Tried: pages after a position, before one and the newest, over a group where one
    message carries two files, one replies, one was edited and one was deleted for
    everyone, and one bo deleted for himself (left out of his pages only)."""
    from messaging.models import Attachment, Message

    group = services.create_group(creator=ana, title="Fields", member_ids=[bo.pk])
    files = [
        Attachment.objects.create(
            uploader=ana, file=f"attachments/f/{n}.txt", filename=f"{n}.txt",
            content_type="text/plain", size=n + 1,
        )
        for n in range(2)
    ]  # fmt: skip
    first = services.send_message(
        sender=ana,
        conversation_id=group.pk,
        client_msg_id=uuid.uuid4(),
        body="with files",
        attachment_ids=[f.pk for f in files],
    ).message
    services.send_message(
        sender=bo, conversation_id=group.pk, client_msg_id=uuid.uuid4(), body="re",
        reply_to=first.pk,
    )  # fmt: skip
    edited = Message.objects.get(conversation=group, seq=send(ana, group, "typo"))
    services.edit_message(user=ana, conversation_id=group.pk, message_id=edited.pk, body="fixed")
    gone = Message.objects.get(conversation=group, seq=send(ana, group, "oops"))
    services.delete_message(user=ana, conversation_id=group.pk, message_id=gone.pk)
    mine = Message.objects.get(conversation=group, seq=send(ana, group, "hide me"))
    services.hide_message(user=bo, conversation_id=group.pk, message_id=mine.pk)

    def fields(message: Message) -> dict[str, Any]:
        return {f.attname: getattr(message, f.attname) for f in Message._meta.concrete_fields}

    stored = {m.pk: m for m in Message.objects.filter(conversation=group)}
    pages = [
        selectors.list_messages_for_user(user=bo, conversation_id=group.pk, after=0),
        selectors.list_messages_for_user(user=bo, conversation_id=group.pk, before=99),
        selectors.list_messages_for_user(user=bo, conversation_id=group.pk),
    ]
    for page in pages:
        assert {m.pk: fields(m) for m in page.messages} == {
            pk: fields(m) for pk, m in stored.items() if pk != mine.pk
        }
        by_id = {m.pk: m for m in page.messages}
        assert by_id[first.pk].loaded_attachments == files
        assert [a.size for a in by_id[first.pk].loaded_attachments or []] == [1, 2]
        assert all(by_id[pk].loaded_attachments == [] for pk in by_id if pk != first.pk)
        (reply,) = [m for m in page.messages if m.body == "re"]
        assert reply.loaded_reply == first  # the quote, read with the page
    versions = [m.version for m in pages[0].messages]
    assert versions == sorted(versions) and versions[-1] > len(versions)  # the edit's
    for page in pages[1:]:
        seqs = [m.seq for m in page.messages]
        assert seqs == sorted(seqs)
    ana_sees = selectors.list_messages_for_user(user=ana, conversation_id=group.pk, after=0)
    assert mine.pk in {m.pk for m in ana_sees.messages}
