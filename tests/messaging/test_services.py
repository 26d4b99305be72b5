"""The messaging services: sends, replays, limits, membership changes, edits and receipts."""

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.hashers import make_password

from accounts.models import User
from messaging import selectors, services
from messaging.errors import (
    BadRequest,
    Conflict,
    EmptyMessage,
    GroupFull,
    MessageNotFound,
    MessageTooLong,
    NotAllowed,
    NotAMember,
    RateLimited,
    UserNotFound,
)
from messaging.models import Conversation, Membership, Message, NotificationDue

pytestmark = pytest.mark.django_db


def send(user: User, conversation: Conversation, body: str = "hello") -> Message:
    return services.send_message(
        sender=user, conversation_id=conversation.pk, client_msg_id=uuid.uuid4(), body=body
    ).message


def direct(a: User, b: User) -> Conversation:
    return services.create_direct_conversation(user=a, other_user_id=b.pk)[0]


def log_of(conversation: Conversation) -> list[tuple[int, str, str]]:
    return list(
        Message.objects.filter(conversation=conversation)
        .order_by("seq")
        .values_list("seq", "kind", "body")
    )


# --- sending ---------------------------------------------------------------------------


def test_send_stores_message_at_next_seq_and_raises_sender_markers(ana: User, bo: User) -> None:
    conversation = direct(ana, bo)

    first = send(ana, conversation, "one")
    second = send(ana, conversation, "two")

    assert (first.seq, first.version, second.seq, second.version) == (1, 1, 2, 2)
    membership = Membership.objects.get(conversation=conversation, user=ana)
    assert (membership.read_seq, membership.delivered_seq) == (2, 2)
    assert Membership.objects.get(conversation=conversation, user=bo).read_seq == 0


def test_replay_returns_original_and_creates_nothing(ana: User, bo: User) -> None:
    conversation = direct(ana, bo)
    cmid = uuid.uuid4()
    first = services.send_message(
        sender=ana, conversation_id=conversation.pk, client_msg_id=cmid, body="hi"
    )

    again = services.send_message(
        sender=ana, conversation_id=conversation.pk, client_msg_id=uuid.UUID(str(cmid)), body="hi"
    )

    assert first.created and not again.created
    assert (again.message.pk, again.message.seq) == (first.message.pk, first.message.seq)
    assert Message.objects.count() == 1
    assert Conversation.objects.get(pk=conversation.pk).last_seq == 1


def test_same_client_msg_id_with_other_body_is_conflict(ana: User, bo: User) -> None:
    conversation = direct(ana, bo)
    cmid = uuid.uuid4()
    services.send_message(sender=ana, conversation_id=conversation.pk, client_msg_id=cmid, body="a")

    with pytest.raises(Conflict) as err:
        services.send_message(
            sender=ana, conversation_id=conversation.pk, client_msg_id=cmid, body="b"
        )

    assert err.value.code == "conflict"
    assert err.value.http_status == 409
    assert log_of(conversation) == [(1, "text", "a")]


def test_same_client_msg_id_in_other_conversation_depends_on_the_layout(
    ana: User, bo: User, cy: User, partitioned_messages: bool
) -> None:
    """Plain table: Conflict (the replay key spans conversations). Partitioned: the key
    is per conversation (docs/scaling.md), so it is a second message, and each retry
    still finds its own conversation's original."""
    with_bo, with_cy = direct(ana, bo), direct(ana, cy)
    cmid = uuid.uuid4()
    first = services.send_message(
        sender=ana, conversation_id=with_bo.pk, client_msg_id=cmid, body="x"
    )
    if not partitioned_messages:
        with pytest.raises(Conflict):
            services.send_message(
                sender=ana, conversation_id=with_cy.pk, client_msg_id=cmid, body="x"
            )
        assert Message.objects.filter(conversation=with_cy).count() == 0
        assert Conversation.objects.get(pk=with_cy.pk).last_seq == 0
        return
    second = services.send_message(
        sender=ana, conversation_id=with_cy.pk, client_msg_id=cmid, body="x"
    )
    assert first.created and second.created
    assert second.message.pk != first.message.pk
    for conversation, result in ((with_bo, first), (with_cy, second)):
        again = services.send_message(
            sender=ana, conversation_id=conversation.pk, client_msg_id=cmid, body="x"
        )
        assert not again.created
        assert again.message.pk == result.message.pk
    with pytest.raises(Conflict):
        services.send_message(sender=ana, conversation_id=with_cy.pk, client_msg_id=cmid, body="y")


def test_client_msg_ids_are_scoped_per_sender(ana: User, bo: User) -> None:
    conversation = direct(ana, bo)
    cmid = uuid.uuid4()

    a = services.send_message(
        sender=ana, conversation_id=conversation.pk, client_msg_id=cmid, body="x"
    )
    b = services.send_message(
        sender=bo, conversation_id=conversation.pk, client_msg_id=cmid, body="x"
    )

    assert a.created and b.created and a.message.pk != b.message.pk


def test_non_member_cannot_send_and_learns_nothing(ana: User, bo: User, cy: User) -> None:
    conversation = direct(ana, bo)
    missing_id = Conversation.objects.order_by("-pk").values_list("pk", flat=True)[0] + 1000

    with pytest.raises(NotAMember) as not_member:
        send(cy, conversation)
    with pytest.raises(NotAMember) as no_such:
        services.send_message(
            sender=cy, conversation_id=missing_id, client_msg_id=uuid.uuid4(), body="x"
        )

    # The same code and text whether or not the conversation exists
    assert not_member.value.as_dict() == no_such.value.as_dict()
    assert not_member.value.code == "forbidden"
    assert Conversation.objects.get(pk=conversation.pk).last_seq == 0
    assert not Message.objects.exists()


def test_body_of_exactly_the_limit_is_accepted_and_one_more_is_too_long(
    ana: User, bo: User
) -> None:
    conversation = direct(ana, bo)

    stored = send(ana, conversation, "x" * 100_000)
    with pytest.raises(MessageTooLong) as err:
        send(ana, conversation, "y" * 100_001)

    assert len(stored.body) == 100_000
    assert err.value.code == "message_too_long"
    assert Message.objects.count() == 1
    assert Conversation.objects.get(pk=conversation.pk).last_seq == 1


@pytest.mark.parametrize("body", ["", "   ", "\n\t "])
def test_empty_or_blank_body_is_refused(ana: User, bo: User, body: str) -> None:
    conversation = direct(ana, bo)

    with pytest.raises(EmptyMessage) as err:
        send(ana, conversation, body)

    assert err.value.code == "empty_message"
    assert not Message.objects.exists()


def test_removed_member_can_no_longer_send_read_or_fetch(ana: User, bo: User, cy: User) -> None:
    group = services.create_group(creator=ana, title="Team", member_ids=[bo.pk, cy.pk])
    send(bo, group, "before removal")

    services.remove_member(actor=ana, conversation_id=group.pk, user_id=bo.pk)

    with pytest.raises(NotAMember):
        send(bo, group, "after removal")
    with pytest.raises(NotAMember):
        selectors.list_messages_for_user(user=bo, conversation_id=group.pk, after=0)
    with pytest.raises(NotAMember):
        services.mark_read(user=bo, conversation_id=group.pk, seq=1)
    assert [b for _, _, b in log_of(group)][-1] == "Ana removed Bo."


def test_re_added_member_never_sees_what_was_said_while_removed(
    ana: User, bo: User, cy: User
) -> None:
    group = services.create_group(creator=ana, title="Team", member_ids=[bo.pk, cy.pk])
    services.remove_member(actor=ana, conversation_id=group.pk, user_id=bo.pk)
    secret = send(cy, group, "while bo is away")

    services.add_members(actor=ana, conversation_id=group.pk, user_ids=[bo.pk])
    after = send(cy, group, "welcome back")

    seen = selectors.list_messages_for_user(user=bo, conversation_id=group.pk, after=0)
    bodies = [m.body for m in seen.messages]
    assert secret.body not in bodies
    assert bodies == ["Ana added Bo.", after.body]
    assert seen.upto == after.seq
    with pytest.raises(MessageNotFound):
        selectors.get_message_for_user(user=bo, conversation_id=group.pk, message_id=secret.pk)
    # nor can they edit or delete around the gap
    with pytest.raises(MessageNotFound):
        services.delete_message(user=bo, conversation_id=group.pk, message_id=secret.pk)


def test_attachments_must_belong_to_the_sender(ana: User, bo: User) -> None:
    conversation = direct(ana, bo)

    with pytest.raises(BadRequest) as err:
        services.send_message(
            sender=ana,
            conversation_id=conversation.pk,
            client_msg_id=uuid.uuid4(),
            body="see file",
            attachment_ids=[999_999],
        )

    assert err.value.details == {"field": "attachments"}
    assert not Message.objects.exists()


# --- groups and membership -------------------------------------------------------------


def test_create_group_logs_created_as_seq_one_with_the_members(
    ana: User, bo: User, cy: User
) -> None:
    group = services.create_group(creator=ana, title="  Team  ", member_ids=[bo.pk, cy.pk, bo.pk])

    created = Message.objects.get(conversation=group)
    assert (group.title, group.last_seq) == ("Team", 1)
    assert (created.seq, created.kind, created.sender_id) == (1, "system", ana.pk)
    assert created.system == {"event": "created", "users": [ana.pk, bo.pk, cy.pk], "title": "Team"}
    roles = dict(
        Membership.objects.filter(conversation=group).values_list("user__username", "role")
    )
    assert roles == {"ana": "owner", "bo": "member", "cy": "member"}


def test_group_of_exactly_1000_members_is_allowed_and_one_more_is_full(ana: User) -> None:
    # Given 999 other users (bulk-created; hashing 999 passwords would be slow)
    password = make_password(None)
    User.objects.bulk_create(User(username=f"member{i}", password=password) for i in range(1000))
    others = list(User.objects.exclude(pk=ana.pk).order_by("pk").values_list("pk", flat=True))
    group = services.create_group(creator=ana, title="Big", member_ids=others[:999])
    assert Membership.objects.filter(conversation=group).count() == 1000

    # When one more is added, or a 1,001-member group is created
    with pytest.raises(GroupFull) as full:
        services.add_members(actor=ana, conversation_id=group.pk, user_ids=[others[999]])
    with pytest.raises(GroupFull):
        services.create_group(creator=ana, title="Too big", member_ids=others)

    # Then nothing changed
    assert full.value.code == "group_full"
    assert Membership.objects.filter(conversation=group).count() == 1000
    assert Conversation.objects.get(pk=group.pk).last_seq == 1
    assert not Conversation.objects.filter(title="Too big").exists()


def test_joining_a_public_group_is_logged_and_idempotent(ana: User, bo: User) -> None:
    group = services.create_group(creator=ana, title="Open", public=True)
    send(ana, group, "history")

    services.join_conversation(user=bo, conversation_id=group.pk)
    services.join_conversation(user=bo, conversation_id=group.pk)

    assert [(s, b) for s, _, b in log_of(group)] == [
        (1, "Ana created the group “Open”."),
        (2, "history"),
        (3, "Bo joined."),
    ]
    # public groups show their whole history to whoever joins
    seen = selectors.list_messages_for_user(user=bo, conversation_id=group.pk, after=0)
    assert [m.seq for m in seen.messages] == [1, 2, 3]
    # and nothing is unread for the newcomer
    assert selectors.get_conversation_for_user(user=bo, conversation_id=group.pk).unread == 0


def test_joining_a_private_group_looks_like_a_missing_conversation(ana: User, bo: User) -> None:
    group = services.create_group(creator=ana, title="Private")

    with pytest.raises(NotAMember) as private:
        services.join_conversation(user=bo, conversation_id=group.pk)
    with pytest.raises(NotAMember) as missing:
        services.join_conversation(user=bo, conversation_id=group.pk + 1000)

    assert private.value.as_dict() == missing.value.as_dict()
    assert Conversation.objects.get(pk=group.pk).last_seq == 1


def test_owner_leaving_hands_the_group_to_the_longest_standing_member(
    ana: User, bo: User, cy: User
) -> None:
    group = services.create_group(creator=ana, title="Team", member_ids=[bo.pk, cy.pk])

    services.leave_conversation(user=ana, conversation_id=group.pk)

    assert not Membership.objects.filter(conversation=group, user=ana).exists()
    assert Membership.objects.get(conversation=group, user=bo).role == "owner"
    assert log_of(group)[-1] == (2, "system", "Ana left.")


def test_direct_conversation_cannot_be_left_or_extended(ana: User, bo: User, cy: User) -> None:
    conversation = direct(ana, bo)

    with pytest.raises(BadRequest):
        services.leave_conversation(user=ana, conversation_id=conversation.pk)
    with pytest.raises(BadRequest):
        services.add_members(actor=ana, conversation_id=conversation.pk, user_ids=[cy.pk])

    assert Membership.objects.filter(conversation=conversation).count() == 2


def test_direct_conversation_is_one_per_pair_whoever_asks(ana: User, bo: User) -> None:
    first, created = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    second, created_again = services.create_direct_conversation(user=bo, other_user_id=ana.pk)

    assert created and not created_again
    assert first.pk == second.pk
    assert first.last_seq == 0  # a direct conversation's log starts empty


def test_direct_conversation_with_unknown_or_inactive_user_is_refused(
    ana: User, make_user: Callable[..., User]
) -> None:
    gone = make_user(is_active=False)

    with pytest.raises(UserNotFound):
        services.create_direct_conversation(user=ana, other_user_id=gone.pk)
    with pytest.raises(UserNotFound):
        services.create_direct_conversation(user=ana, other_user_id=gone.pk + 1000)

    assert not Conversation.objects.exists()


def test_only_admins_add_remove_or_rename(ana: User, bo: User, cy: User) -> None:
    group = services.create_group(creator=ana, title="Team", member_ids=[bo.pk])

    with pytest.raises(NotAllowed):
        services.add_members(actor=bo, conversation_id=group.pk, user_ids=[cy.pk])
    with pytest.raises(NotAllowed):
        services.remove_member(actor=bo, conversation_id=group.pk, user_id=ana.pk)
    with pytest.raises(NotAllowed):
        services.rename_conversation(actor=bo, conversation_id=group.pk, title="Mine")

    assert Conversation.objects.get(pk=group.pk).last_seq == 1
    services.rename_conversation(actor=ana, conversation_id=group.pk, title="Renamed")
    assert log_of(group)[-1] == (2, "system", "Ana renamed the group to “Renamed”.")


def test_group_needs_a_title_of_at_most_200_characters(ana: User) -> None:
    with pytest.raises(BadRequest):
        services.create_group(creator=ana, title="   ")
    with pytest.raises(BadRequest):
        services.create_group(creator=ana, title="t" * 201)

    assert not Conversation.objects.exists()


# --- edit and delete -------------------------------------------------------------------


def test_edit_and_delete_take_new_versions_and_are_returned_by_an_after_fetch(
    ana: User, bo: User
) -> None:
    conversation = direct(ana, bo)
    first, second, _third = (send(ana, conversation, b) for b in ("one", "two", "three"))
    cursor = 3

    edited = services.edit_message(
        user=ana, conversation_id=conversation.pk, message_id=first.pk, body="one, fixed"
    )
    deleted = services.delete_message(
        user=ana, conversation_id=conversation.pk, message_id=second.pk
    )

    batch = selectors.list_messages_for_user(user=bo, conversation_id=conversation.pk, after=cursor)
    assert [(m.pk, m.seq, m.version) for m in batch.messages] == [
        (first.pk, 1, 4),
        (second.pk, 2, 5),
    ]
    assert edited.edited_at is not None and batch.messages[0].body == "one, fixed"
    assert deleted.deleted and batch.messages[1].body == "" and batch.messages[1].deleted
    assert (batch.upto, batch.has_more) == (5, False)


def test_nobody_edits_or_deletes_another_members_message(ana: User, bo: User) -> None:
    conversation = direct(ana, bo)
    message = send(ana, conversation, "mine")

    with pytest.raises(NotAllowed):
        services.edit_message(
            user=bo, conversation_id=conversation.pk, message_id=message.pk, body="x"
        )
    with pytest.raises(NotAllowed):
        services.delete_message(user=bo, conversation_id=conversation.pk, message_id=message.pk)

    message.refresh_from_db()
    assert (message.body, message.version, message.deleted) == ("mine", 1, False)


def test_group_admin_may_delete_any_text_message(ana: User, bo: User) -> None:
    group = services.create_group(creator=ana, title="Team", member_ids=[bo.pk])
    message = send(bo, group, "spam")

    services.delete_message(user=ana, conversation_id=group.pk, message_id=message.pk)

    message.refresh_from_db()
    assert message.deleted and message.body == "" and message.version == 3


def test_deleting_twice_changes_nothing_the_second_time(ana: User, bo: User) -> None:
    conversation = direct(ana, bo)
    message = send(ana, conversation)
    services.delete_message(user=ana, conversation_id=conversation.pk, message_id=message.pk)

    again = services.delete_message(
        user=ana, conversation_id=conversation.pk, message_id=message.pk
    )

    assert again.version == 2
    assert Conversation.objects.get(pk=conversation.pk).last_seq == 2


def test_edit_of_deleted_or_missing_message_is_refused(ana: User, bo: User) -> None:
    conversation = direct(ana, bo)
    message = send(ana, conversation)
    services.delete_message(user=ana, conversation_id=conversation.pk, message_id=message.pk)

    with pytest.raises(NotAllowed):
        services.edit_message(
            user=ana, conversation_id=conversation.pk, message_id=message.pk, body="back"
        )
    with pytest.raises(MessageNotFound):
        services.edit_message(
            user=ana, conversation_id=conversation.pk, message_id=message.pk + 99, body="x"
        )
    with pytest.raises(MessageTooLong):
        services.edit_message(
            user=ana, conversation_id=conversation.pk, message_id=message.pk, body="z" * 100_001
        )

    assert Conversation.objects.get(pk=conversation.pk).last_seq == 2


def test_replay_of_a_deleted_message_returns_it_without_conflict(ana: User, bo: User) -> None:
    conversation = direct(ana, bo)
    cmid = uuid.uuid4()
    original = services.send_message(
        sender=ana, conversation_id=conversation.pk, client_msg_id=cmid, body="oops"
    ).message
    services.delete_message(user=ana, conversation_id=conversation.pk, message_id=original.pk)

    late_retry = services.send_message(
        sender=ana, conversation_id=conversation.pk, client_msg_id=cmid, body="oops"
    )

    assert not late_retry.created
    assert late_retry.message.pk == original.pk and late_retry.message.deleted


# --- receipts --------------------------------------------------------------------------


def test_markers_only_rise_and_never_pass_the_log_end(ana: User, bo: User) -> None:
    conversation = direct(ana, bo)
    for body in ("1", "2", "3"):
        send(ana, conversation, body)

    raised = services.mark_read(user=bo, conversation_id=conversation.pk, seq=2)
    lower = services.mark_read(user=bo, conversation_id=conversation.pk, seq=1)
    beyond = services.mark_delivered(user=bo, conversation_id=conversation.pk, seq=99)

    assert (raised.read_seq, raised.delivered_seq, raised.changed) == (2, 2, True)
    assert (lower.read_seq, lower.changed) == (2, False)
    assert (beyond.delivered_seq, beyond.read_seq, beyond.changed) == (3, 2, True)
    again = services.mark_delivered(user=bo, conversation_id=conversation.pk, seq=99)
    assert again.changed is False


def test_non_member_cannot_mark_read(ana: User, bo: User, cy: User) -> None:
    conversation = direct(ana, bo)

    with pytest.raises(NotAMember):
        services.mark_read(user=cy, conversation_id=conversation.pk, seq=0)


def test_sends_past_the_burst_are_rate_limited_with_retry_after(
    ana: User, bo: User, cy: User, settings
) -> None:
    settings.CHAT_SEND_BURST = 5
    settings.CHAT_SEND_RATE = 0.5
    conversation = direct(ana, bo)
    for n in range(5):
        send(ana, conversation, f"burst {n}")

    with pytest.raises(RateLimited) as err:
        send(ana, conversation, "one too many")

    assert err.value.code == "rate_limited" and err.value.http_status == 429
    assert 0 < err.value.retry_after <= 2
    assert Conversation.objects.get(pk=conversation.pk).last_seq == 5
    # other users have their own buckets
    send(bo, conversation, "bo is not limited")


def _prepared(fragment: str) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
            [f"%{fragment}%"],
        )
        (count,) = cursor.fetchone()
    return int(count)


@pytest.mark.parametrize("prepared", [True, False])
def test_sends_and_receipts_store_the_same_whether_prepared_or_not(
    ana: User, bo: User, settings: Any, prepared: bool
) -> None:
    """Tried: with DB_PREPARED_STATEMENTS on and off, a send whose notifications are
    decided later, one with notifications off (no due time: a NULL parameter) and a
    reply; then a read, the same read again (nothing rises) and a read past the log's
    end (capped). On, the send's statement and the receipt's raise are prepared on the
    connection; off, nothing of theirs is."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's")
    settings.DB_PREPARED_STATEMENTS = prepared
    # Prepared statements live as long as the connection: count what this test adds.
    before = _prepared("chat_store_messages"), _prepared("RETURNING m.delivered_seq")
    chat = direct(ana, bo)
    settings.NOTIFY_ENABLED = True
    first = send(ana, chat, "decided later")
    settings.NOTIFY_ENABLED = False
    second = send(ana, chat, "never notified")
    reply = services.send_message(
        sender=bo,
        conversation_id=chat.pk,
        client_msg_id=uuid.uuid4(),
        body="re",
        reply_to=first.pk,
    ).message

    read = services.mark_read(user=ana, conversation_id=chat.pk, seq=reply.seq)
    again = services.mark_read(user=ana, conversation_id=chat.pk, seq=reply.seq)
    past = services.mark_delivered(user=bo, conversation_id=chat.pk, seq=reply.seq + 50)

    assert log_of(chat) == [
        (1, "text", "decided later"),
        (2, "text", "never notified"),
        (3, "text", "re"),
    ]
    assert [m.sender_id for m in Message.objects.filter(conversation=chat).order_by("seq")] == [
        ana.pk,
        ana.pk,
        bo.pk,
    ]
    assert Message.objects.get(pk=reply.pk).reply_to_id == first.pk
    assert list(NotificationDue.objects.values_list("message_id", flat=True)) == [first.pk]
    assert second.seq == 2
    assert (read.read_seq, read.delivered_seq, read.changed) == (3, 3, True)
    assert (again.read_seq, again.delivered_seq, again.changed) == (3, 3, False)
    assert (past.delivered_seq, past.changed) == (3, False)  # bo sent 3: already there
    assert Membership.objects.get(conversation=chat, user=ana).read_seq == 3
    after = _prepared("chat_store_messages"), _prepared("RETURNING m.delivered_seq")
    if prepared:
        assert after[0] > 0 and after[1] > 0, "the send and the raise were not prepared"
    else:
        assert after == before
