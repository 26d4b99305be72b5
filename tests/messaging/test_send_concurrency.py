"""Concurrent sends against the real PostgreSQL: gap-free seqs and exactly-once replays."""

import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from accounts.models import User
from messaging import services
from messaging.models import Conversation, Message

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
