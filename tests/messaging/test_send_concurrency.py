"""Concurrent sends against the real PostgreSQL: gap-free seqs and exactly-once replays."""

import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models import F

from accounts.models import User
from messaging import services
from messaging.errors import AdminsOnly, CannotSend, NotAMember
from messaging.models import Conversation, Membership, Message, NotificationDue, PushWindow
from tests.conftest import queries_waiting_on_locks

pytestmark = pytest.mark.django_db(transaction=True)


def run_in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run `work(i)` in `count` threads that start together; return results or raise."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def target(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a sender thread hung"
    if errors:
        raise errors[0]
    return results


def test_eight_threads_of_200_sends_give_gap_free_seqs(
    make_user: Callable[..., User], settings: Any
) -> None:
    # Given a group of 8 members who may send as fast as they like
    settings.CHAT_SEND_RATE = settings.CHAT_SEND_BURST = 1_000_000
    senders = [make_user() for _ in range(8)]
    group = services.create_group(
        creator=senders[0], title="Load", member_ids=[u.pk for u in senders[1:]]
    )

    # When each member sends 200 messages at once from its own thread and connection
    def send_200(i: int) -> list[int]:
        return [
            services.send_message(
                sender=senders[i],
                conversation_id=group.pk,
                client_msg_id=uuid.uuid4(),
                body=f"{i}-{n}",
            ).message.seq
            for n in range(200)
        ]

    per_thread = run_in_threads(8, send_200)

    # Then the 1,600 messages hold seqs 2..1601 (seq 1 is "created"), no gap, no duplicate
    seqs = sorted(s for chunk in per_thread for s in chunk)
    assert seqs == list(range(2, 1602))
    stored = list(
        Message.objects.filter(conversation=group, kind="text")
        .order_by("seq")
        .values_list("seq", flat=True)
    )
    assert stored == list(range(2, 1602))
    assert Conversation.objects.get(pk=group.pk).last_seq == 1601
    # and each thread saw its own sends in increasing order
    for chunk in per_thread:
        assert chunk == sorted(chunk)


def test_three_concurrent_replays_of_one_client_msg_id_store_one_row(ana: User, bo: User) -> None:
    # Given a direct conversation and one client_msg_id
    conversation, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    cmid = uuid.uuid4()

    # When the same send arrives three times at once
    results = run_in_threads(
        3,
        lambda _: services.send_message(
            sender=ana, conversation_id=conversation.pk, client_msg_id=cmid, body="once"
        ),
    )

    # Then one row exists, every reply carries its id and seq, and one reply created it
    assert Message.objects.filter(sender=ana, client_msg_id=cmid).count() == 1
    assert {r.message.pk for r in results} == {Message.objects.get(client_msg_id=cmid).pk}
    assert {r.message.seq for r in results} == {1}
    assert sorted(r.created for r in results) == [False, False, True]
    # and the failed attempts left no gap in the log
    assert Conversation.objects.get(pk=conversation.pk).last_seq == 1


def test_two_users_opening_the_same_direct_chat_at_once_get_one(ana: User, bo: User) -> None:
    # When ana and bo start a direct chat with each other at the same moment
    pairs = [(ana, bo), (bo, ana)] * 2
    results = run_in_threads(
        4,
        lambda i: services.create_direct_conversation(
            user=pairs[i][0], other_user_id=pairs[i][1].pk
        ),
    )

    # Then there is one conversation, created by exactly one of the calls
    assert len({c.pk for c, _ in results}) == 1
    assert sum(created for _, created in results) == 1
    assert Conversation.objects.filter(kind="direct").count() == 1


def _log_state(conversation_id: int) -> tuple[int, int, int, list[tuple[int, int, int]]]:
    """Return what a refused send must leave as it was: the conversation's seq, its
    messages, their due rows and every member's markers."""
    return (
        Conversation.objects.get(pk=conversation_id).last_seq,
        Message.objects.filter(conversation_id=conversation_id).count(),
        NotificationDue.objects.filter(message__conversation_id=conversation_id).count(),
        sorted(
            Membership.objects.filter(conversation_id=conversation_id).values_list(
                "user_id", "read_seq", "delivered_seq"
            )
        ),
    )


def test_refused_sends_leave_no_trace_and_no_gap_in_the_log(
    ana: User, bo: User, make_user: Callable[..., User]
) -> None:
    # Given sends made outside any caller's transaction, as the gateways make them
    assert not connection.in_atomic_block
    cy = make_user("cy")
    direct, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    services.send_message(
        sender=ana, conversation_id=direct.pk, client_msg_id=uuid.uuid4(), body="hi"
    )
    group = services.create_group(creator=ana, title="News", member_ids=[bo.pk])
    services.update_group(actor=ana, conversation_id=group.pk, post_policy="admins")
    tried = [
        # a stranger to the direct chat
        (cy, direct.pk, NotAMember),
        # a plain member of a group where only admins may send
        (bo, group.pk, AdminsOnly),
    ]
    for sender, conversation_id, error in tried:
        before = _log_state(conversation_id)
        # When the send is refused
        with pytest.raises(error):
            services.send_message(
                sender=sender, conversation_id=conversation_id, client_msg_id=uuid.uuid4(), body="x"
            )
        # Then the conversation's seq, messages, due rows and markers are as they were
        assert _log_state(conversation_id) == before, error

    # and so for a direct chat whose pair is blocked, either way
    services.block_user(user=bo, other_user_id=ana.pk)
    before = _log_state(direct.pk)
    for sender in (ana, bo):
        with pytest.raises(CannotSend):
            services.send_message(
                sender=sender, conversation_id=direct.pk, client_msg_id=uuid.uuid4(), body="x"
            )
    assert _log_state(direct.pk) == before
    # and the next allowed send takes the next seq: no gap was left
    services.send_message(
        sender=ana, conversation_id=group.pk, client_msg_id=uuid.uuid4(), body="ok"
    )
    assert list(
        Message.objects.filter(conversation=group).order_by("seq").values_list("seq", flat=True)
    ) == list(range(1, Conversation.objects.get(pk=group.pk).last_seq + 1))


def test_a_send_that_waited_for_a_removal_is_refused_and_leaves_no_gap(
    ana: User, bo: User, make_user: Callable[..., User]
) -> None:
    # Given a group of three, and a removal of bo that holds the conversation's lock
    cy = make_user("cy")
    group = services.create_group(creator=ana, title="Team", member_ids=[bo.pk, cy.pk])
    removed = threading.Event()
    commit = threading.Event()

    def remove_bo() -> None:
        # What a removal writes, in its own transaction: the next seq (locking the
        # conversation row), bo's membership gone; committed only when told.
        try:
            with transaction.atomic():
                Conversation.objects.filter(pk=group.pk).update(last_seq=F("last_seq") + 1)
                Membership.objects.filter(conversation=group, user=bo).delete()
                removed.set()
                assert commit.wait(30)
        finally:
            connection.close()

    remover = threading.Thread(target=remove_bo)
    remover.start()
    assert removed.wait(30)
    after_removal = Conversation.objects.get(pk=group.pk).last_seq + 1
    outcome: list[BaseException | int] = []

    def send_as_bo() -> None:
        try:
            result = services.send_message(
                sender=bo, conversation_id=group.pk, client_msg_id=uuid.uuid4(), body="late"
            )
            outcome.append(result.message.seq)
        except BaseException as exc:  # noqa: BLE001 - checked below
            outcome.append(exc)
        finally:
            connection.close()

    # When bo's send starts while the removal holds the lock, and the removal commits
    sender = threading.Thread(target=send_as_bo)
    sender.start()
    for _ in range(300):
        if queries_waiting_on_locks():
            break
        threading.Event().wait(0.01)
    assert queries_waiting_on_locks() == 1, "the send did not wait for the removal's lock"
    commit.set()
    remover.join(30)
    sender.join(30)

    # Then the send was refused (bo was no longer a member when it got the lock)
    assert len(outcome) == 1 and isinstance(outcome[0], NotAMember), outcome
    # and it took no seq: the log ends at the removal's, and the next send follows it
    assert Conversation.objects.get(pk=group.pk).last_seq == after_removal
    assert not Message.objects.filter(conversation=group, body="late").exists()
    nxt = services.send_message(
        sender=cy, conversation_id=group.pk, client_msg_id=uuid.uuid4(), body="next"
    )
    assert nxt.message.seq == after_removal + 1


def test_a_send_does_not_wait_for_a_write_that_only_refers_to_the_conversation(
    ana: User, bo: User
) -> None:
    # Given a transaction that is still open after inserting a row that refers to the
    # conversation (a worker's push window: its foreign key check holds a KEY SHARE
    # lock on the conversation row until it ends; Django's foreign keys are checked at
    # commit, so the check is made immediate here to hold the lock while the send runs)
    conversation, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    inserted = threading.Event()
    finish = threading.Event()

    def open_push_window() -> None:
        try:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
                PushWindow.objects.create(user=bo, conversation=conversation)
                inserted.set()
                assert finish.wait(30)
        finally:
            connection.close()

    holder = threading.Thread(target=open_push_window)
    sent: list[int] = []

    def send() -> None:
        try:
            result = services.send_message(
                sender=ana, conversation_id=conversation.pk, client_msg_id=uuid.uuid4(), body="hi"
            )
            sent.append(result.message.seq)
        finally:
            connection.close()

    sender = threading.Thread(target=send)
    holder.start()
    assert inserted.wait(30)
    try:
        # When ana sends meanwhile
        sender.start()
        sender.join(10)
        # Then the send went through at once: its lock on the conversation (the one an
        # UPDATE of columns that are not a key takes) does not conflict with a key-share
        # lock
        assert sent == [1], "the send waited for the open transaction"
    finally:
        finish.set()
        holder.join(30)
        sender.join(30)
