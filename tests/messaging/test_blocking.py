"""Blocking, reports and delete for me: the services' rules."""

import uuid
from typing import Any

import pytest
from django.urls import reverse

from accounts.models import User
from messaging import search, selectors, services
from messaging.errors import (
    BadRequest,
    CannotSend,
    MessageNotFound,
    NotAllowed,
    NotAMember,
    RateLimited,
    UserNotFound,
)
from messaging.models import Block, Conversation, HiddenMessage, Message, Report
from tests.conftest import Listener

pytestmark = pytest.mark.django_db


def direct(a: User, b: User) -> Conversation:
    return services.create_direct_conversation(user=a, other_user_id=b.pk)[0]


def send(user: User, conversation: Conversation, body: str = "hello") -> Message:
    return services.send_message(
        sender=user, conversation_id=conversation.pk, client_msg_id=uuid.uuid4(), body=body
    ).message


def group(owner: User, *others: User) -> Conversation:
    return services.create_group(creator=owner, title="Team", member_ids=[o.pk for o in others])


# --- blocking ---------------------------------------------------------------------------


def test_a_blocked_pair_cannot_send_direct_messages_either_way(ana: User, bo: User) -> None:
    chat = direct(ana, bo)
    send(bo, chat)
    services.block_user(user=ana, other_user_id=bo.pk)

    with pytest.raises(CannotSend) as from_blocked:
        send(bo, chat)
    with pytest.raises(CannotSend) as from_blocker:
        send(ana, chat)
    # The same neutral words both ways: the blocked one cannot tell a block from others.
    assert str(from_blocked.value) == str(from_blocker.value)
    assert from_blocked.value.code == "cannot_send"
    assert "block" not in str(from_blocked.value).lower()
    assert Message.objects.filter(conversation=chat).count() == 1


def test_unblocking_lets_both_send_again(ana: User, bo: User) -> None:
    chat = direct(ana, bo)
    services.block_user(user=ana, other_user_id=bo.pk)
    assert services.unblock_user(user=ana, other_user_id=bo.pk) is True
    assert services.unblock_user(user=ana, other_user_id=bo.pk) is False

    send(bo, chat, "back")
    send(ana, chat, "hi")
    assert Message.objects.filter(conversation=chat).count() == 2


def test_a_new_direct_chat_with_a_blocker_opens_but_refuses_sending(ana: User, bo: User) -> None:
    services.block_user(user=ana, other_user_id=bo.pk)
    chat, created = services.create_direct_conversation(user=bo, other_user_id=ana.pk)
    assert created
    with pytest.raises(CannotSend):
        send(bo, chat)


def test_groups_are_unaffected_by_blocks(ana: User, bo: User, cy: User) -> None:
    team = group(ana, bo, cy)
    services.block_user(user=ana, other_user_id=bo.pk)
    send(bo, team, "in the group")
    send(ana, team, "me too")
    assert Message.objects.filter(conversation=team, kind=Message.Kind.TEXT).count() == 2


def test_a_third_person_is_unaffected_by_a_block(ana: User, bo: User, cy: User) -> None:
    services.block_user(user=ana, other_user_id=bo.pk)
    send(bo, direct(bo, cy))
    send(ana, direct(ana, cy))


def test_a_non_member_is_told_not_a_member_not_cannot_send(ana: User, bo: User, cy: User) -> None:
    chat = direct(ana, bo)
    services.block_user(user=ana, other_user_id=bo.pk)
    with pytest.raises(NotAMember):
        send(cy, chat)


def test_blocking_is_idempotent_and_refuses_self_and_unknown_users(ana: User, bo: User) -> None:
    first = services.block_user(user=ana, other_user_id=bo.pk)
    again = services.block_user(user=ana, other_user_id=bo.pk)
    assert first.pk == again.pk
    assert Block.objects.count() == 1
    with pytest.raises(BadRequest):
        services.block_user(user=ana, other_user_id=ana.pk)
    with pytest.raises(UserNotFound):
        services.block_user(user=ana, other_user_id=10**9)


def test_blocks_are_rate_limited_per_user(ana: User, bo: User, cy: User, monkeypatch: Any) -> None:
    monkeypatch.setattr(services, "BLOCK_BURST", 2.0)
    monkeypatch.setattr(services, "BLOCK_RATE", 0.001)
    services.block_user(user=ana, other_user_id=bo.pk)
    services.unblock_user(user=ana, other_user_id=bo.pk)
    with pytest.raises(RateLimited):
        services.block_user(user=ana, other_user_id=cy.pk)
    services.block_user(user=bo, other_user_id=cy.pk)  # Bo's budget is his own


def test_the_block_set_holds_both_directions(ana: User, bo: User, cy: User) -> None:
    services.block_user(user=ana, other_user_id=bo.pk)
    services.block_user(user=cy, other_user_id=ana.pk)
    assert selectors.block_set(user_id=ana.pk) == {bo.pk, cy.pk}
    assert selectors.block_set(user_id=bo.pk) == {ana.pk}
    assert [b.blocked_id for b in selectors.list_blocks(user=ana)] == [bo.pk]


def test_a_connect_reads_its_conversations_and_block_set_in_one_query(
    ana: User, bo: User, cy: User, django_assert_num_queries: Any
) -> None:
    group = services.create_group(creator=ana, title="T", member_ids=[bo.pk])
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=cy.pk)
    services.block_user(user=ana, other_user_id=bo.pk)
    services.block_user(user=cy, other_user_id=ana.pk)

    with django_assert_num_queries(1):
        ids, blocked = selectors.connect_facts(user_id=ana.pk)

    assert sorted(ids) == sorted([group.pk, chat.pk])
    assert blocked == selectors.block_set(user_id=ana.pk) == {bo.pk, cy.pk}
    assert selectors.connect_facts(user_id=bo.pk) == ([group.pk], {ana.pk})


def test_a_blocked_pair_does_not_see_each_others_presence(ana: User, bo: User, cy: User) -> None:
    direct(ana, bo)
    direct(ana, cy)
    services.accept_request(user=bo, conversation_id=direct(bo, ana).pk)
    services.accept_request(user=cy, conversation_id=direct(cy, ana).pk)
    assert selectors.filter_visible_users(user=ana, user_ids=[bo.pk, cy.pk]) == {bo.pk, cy.pk}
    services.block_user(user=bo, other_user_id=ana.pk)
    assert selectors.filter_visible_users(user=ana, user_ids=[bo.pk, cy.pk]) == {cy.pk}
    assert selectors.filter_visible_users(user=bo, user_ids=[ana.pk]) == set()
    services.unblock_user(user=bo, other_user_id=ana.pk)
    assert selectors.filter_visible_users(user=bo, user_ids=[ana.pk]) == {ana.pk}


@pytest.mark.django_db(transaction=True)
def test_block_and_unblock_tell_both_gateways_but_only_the_blocker_gets_a_frame(
    ana: User, bo: User, listener: Listener
) -> None:
    listener.join(f"user.{ana.pk}")
    listener.join(f"user.{bo.pk}")
    services.block_user(user=ana, other_user_id=bo.pk)
    to_ana, to_bo = listener.receive(), listener.receive()
    assert to_ana == {
        "type": "block.event",
        "user": bo.pk,
        "blocked": True,
        "frame": {"type": "block.updated", "user": bo.pk, "blocked": True},
    }
    assert to_bo == {"type": "block.event", "user": ana.pk, "blocked": True, "frame": None}
    services.unblock_user(user=ana, other_user_id=bo.pk)
    assert listener.receive()["frame"] == {"type": "block.updated", "user": bo.pk, "blocked": False}
    assert listener.receive()["blocked"] is False


# --- reports ----------------------------------------------------------------------------


def test_a_member_reports_a_message_once_with_a_reason(ana: User, bo: User) -> None:
    chat = direct(ana, bo)
    message = send(ana, chat, "spam spam")
    report, created = services.report_message(
        user=bo, conversation_id=chat.pk, message_id=message.pk, reason="spam", details=" buy! "
    )
    assert created
    assert (report.reason, report.details, report.status) == ("spam", "buy!", "open")
    again, created = services.report_message(
        user=bo, conversation_id=chat.pk, message_id=message.pk, reason="abuse"
    )
    assert not created
    assert again.pk == report.pk
    assert Report.objects.count() == 1


def test_reports_check_reason_length_membership_and_the_message(
    ana: User, bo: User, cy: User
) -> None:
    chat = direct(ana, bo)
    message = send(ana, chat)
    with pytest.raises(BadRequest):
        services.report_message(
            user=bo, conversation_id=chat.pk, message_id=message.pk, reason="boring"
        )
    with pytest.raises(BadRequest):
        services.report_message(
            user=bo,
            conversation_id=chat.pk,
            message_id=message.pk,
            reason="other",
            details="x" * 1001,
        )
    with pytest.raises(NotAMember):
        services.report_message(
            user=cy, conversation_id=chat.pk, message_id=message.pk, reason="spam"
        )
    with pytest.raises(MessageNotFound):
        services.report_message(user=bo, conversation_id=chat.pk, message_id=10**9, reason="spam")
    assert not Report.objects.exists()


def test_a_removed_member_cannot_report(ana: User, bo: User, cy: User) -> None:
    team = group(ana, bo, cy)
    message = send(ana, team)
    services.remove_member(actor=ana, conversation_id=team.pk, user_id=cy.pk)
    with pytest.raises(NotAMember):
        services.report_message(
            user=cy, conversation_id=team.pk, message_id=message.pk, reason="spam"
        )


def test_reports_are_rate_limited_per_user(ana: User, bo: User, cy: User, monkeypatch: Any) -> None:
    monkeypatch.setattr(services, "REPORT_BURST", 1.0)
    monkeypatch.setattr(services, "REPORT_RATE", 0.001)
    team = group(ana, bo, cy)
    first, second = send(ana, team, "one"), send(ana, team, "two")
    services.report_message(user=bo, conversation_id=team.pk, message_id=first.pk, reason="spam")
    with pytest.raises(RateLimited):
        services.report_message(
            user=bo, conversation_id=team.pk, message_id=second.pk, reason="spam"
        )
    services.report_message(user=cy, conversation_id=team.pk, message_id=second.pk, reason="spam")


def test_staff_resolve_a_report_by_deleting_the_message(
    ana: User, bo: User, make_user: Any
) -> None:
    staff = make_user("mod", is_staff=True)
    chat = direct(ana, bo)
    message = send(ana, chat, "nasty")
    report, _ = services.report_message(
        user=bo, conversation_id=chat.pk, message_id=message.pk, reason="abuse"
    )
    with pytest.raises(NotAllowed):
        services.resolve_report(staff=bo, report_id=report.pk, delete_message=True)
    resolved = services.resolve_report(staff=staff, report_id=report.pk, delete_message=True)
    assert resolved.status == Report.Status.ACTIONED
    message.refresh_from_db()
    assert message.deleted and message.body == ""


# --- delete for me ----------------------------------------------------------------------


def test_delete_for_me_hides_the_message_from_that_user_only(ana: User, bo: User) -> None:
    chat = direct(ana, bo)
    keep, gone = send(ana, chat, "keep"), send(ana, chat, "gone")
    services.hide_message(user=bo, conversation_id=chat.pk, message_id=gone.pk)

    def bodies(user: User, **page: Any) -> list[str]:
        batch = selectors.list_messages_for_user(user=user, conversation_id=chat.pk, **page)
        return [m.body for m in batch.messages]

    assert bodies(bo) == ["keep"]
    assert bodies(bo, after=0) == ["keep"]
    assert bodies(bo, before=gone.seq + 1) == ["keep"]
    assert bodies(ana) == ["keep", "gone"]  # others see nothing change
    gone.refresh_from_db()
    assert not gone.deleted and gone.version == keep.version + 1


def test_delete_for_me_is_idempotent_and_only_for_members(ana: User, bo: User, cy: User) -> None:
    chat = direct(ana, bo)
    message = send(bo, chat)
    first = services.hide_message(user=ana, conversation_id=chat.pk, message_id=message.pk)
    again = services.hide_message(user=ana, conversation_id=chat.pk, message_id=message.pk)
    assert first.pk == again.pk
    with pytest.raises(NotAMember):
        services.hide_message(user=cy, conversation_id=chat.pk, message_id=message.pk)
    with pytest.raises(MessageNotFound):
        services.hide_message(user=ana, conversation_id=chat.pk, message_id=10**9)
    assert HiddenMessage.objects.count() == 1


def test_hidden_ids_sync_by_cursor(ana: User, bo: User) -> None:
    chat = direct(ana, bo)
    one, two = send(ana, chat, "1"), send(ana, chat, "2")
    first = services.hide_message(user=ana, conversation_id=chat.pk, message_id=one.pk)
    services.hide_message(user=bo, conversation_id=chat.pk, message_id=two.pk)
    second = services.hide_message(user=ana, conversation_id=chat.pk, message_id=two.pk)
    rows = selectors.list_hidden_messages(user=ana, after=0, limit=10)
    assert [r.message_id for r in rows] == [one.pk, two.pk]
    rows = selectors.list_hidden_messages(user=ana, after=first.pk, limit=10)
    assert [r.pk for r in rows] == [second.pk]


@pytest.mark.django_db(transaction=True)
def test_hiding_tells_only_the_users_own_devices(ana: User, bo: User, listener: Listener) -> None:
    chat = direct(ana, bo)
    message = send(ana, chat)
    for name in (f"user.{ana.pk}", f"conv.{chat.pk}"):
        listener.join(name)
    services.hide_message(user=bo, conversation_id=chat.pk, message_id=message.pk)
    marker = listener.mark(f"user.{ana.pk}")
    assert listener.receive() == marker  # nothing reached Ana or the conversation
    listener.join(f"user.{bo.pk}")
    other = send(ana, chat, "two")
    listener.receive()  # its message.created
    hidden = services.hide_message(user=bo, conversation_id=chat.pk, message_id=other.pk)
    event = listener.receive()
    assert event["type"] == "own.event"
    assert event["frame"] == {
        "type": "message.hidden",
        "id": hidden.pk,
        "conversation": chat.pk,
        "message": other.pk,
    }


# --- admin ------------------------------------------------------------------------------


def test_staff_see_reports_and_blocks_in_the_admin(admin_client: Any, ana: User, bo: User) -> None:
    chat = direct(ana, bo)
    message = send(ana, chat, "rude words here")
    services.report_message(
        user=bo, conversation_id=chat.pk, message_id=message.pk, reason="abuse", details="mean"
    )
    services.block_user(user=bo, other_user_id=ana.pk)

    reports = admin_client.get(reverse("admin:messaging_report_changelist"))
    blocks = admin_client.get(reverse("admin:messaging_block_changelist"))
    assert reports.status_code == blocks.status_code == 200
    page = reports.content.decode()
    assert "rude words here" in page and "mean" in page and "Harassment or abuse" in page
    assert [b.pk for b in blocks.context["cl"].result_list] == [Block.objects.get().pk]


def test_the_report_action_deletes_the_message_through_moderation(
    admin_client: Any, ana: User, bo: User, cy: User
) -> None:
    team = group(ana, bo, cy)
    message = send(ana, team, "bad")
    kept = send(ana, team, "fine")
    first, _ = services.report_message(
        user=bo, conversation_id=team.pk, message_id=message.pk, reason="spam"
    )
    second, _ = services.report_message(
        user=cy, conversation_id=team.pk, message_id=message.pk, reason="spam"
    )
    other, _ = services.report_message(
        user=bo, conversation_id=team.pk, message_id=kept.pk, reason="other"
    )
    url = reverse("admin:messaging_report_changelist")
    admin_client.post(
        url, {"action": "delete_reported_messages", "_selected_action": [str(first.pk)]}
    )
    admin_client.post(url, {"action": "dismiss_reports", "_selected_action": [str(other.pk)]})

    message.refresh_from_db()
    kept.refresh_from_db()
    assert message.deleted and message.body == ""
    assert not kept.deleted
    statuses = dict(Report.objects.values_list("pk", "status"))
    assert statuses == {first.pk: "actioned", second.pk: "actioned", other.pk: "dismissed"}


def test_search_leaves_out_what_i_deleted_for_me(ana: User, bo: User) -> None:
    chat = direct(ana, bo)
    message = send(ana, chat, "secret pineapple plans")
    services.hide_message(user=bo, conversation_id=chat.pk, message_id=message.pk)

    def found(user: User) -> list[int]:
        page = search.search_messages_for_user(user=user, query="pineapple")
        return [hit.message.pk for hit in page.hits]

    assert found(bo) == []
    assert found(ana) == [message.pk]


def test_a_replay_of_a_message_sent_before_the_block_answers_the_original(
    ana: User, bo: User
) -> None:
    chat = direct(ana, bo)
    cmid = uuid.uuid4()
    first = services.send_message(
        sender=bo, conversation_id=chat.pk, client_msg_id=cmid, body="sent before"
    )
    services.block_user(user=ana, other_user_id=bo.pk)
    again = services.send_message(
        sender=bo, conversation_id=chat.pk, client_msg_id=cmid, body="sent before"
    )
    assert (again.created, again.message.pk) == (False, first.message.pk)
