"""The outbox retry bookkeeping and the full-jitter backoff, with no server."""

import random

import pytest

from chatclient.backoff import full_jitter
from chatclient.outbox import Outbox, OutboxEntry


def entry(cmid: str, conversation: int = 3, body: str = "hi") -> OutboxEntry:
    return OutboxEntry(conversation, body, cmid)


def test_full_jitter_stays_within_zero_and_the_capped_exponential() -> None:
    rng = random.Random(7)
    for attempt in range(12):
        ceiling = min(5.0, 0.2 * 2**attempt)
        delays = [full_jitter(attempt, 0.2, 5.0, rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        # Full jitter spreads over the whole range, not just near the ceiling.
        assert min(delays) < ceiling * 0.1
        assert max(delays) > ceiling * 0.9


def test_full_jitter_is_reproducible_with_a_seeded_random() -> None:
    first = [full_jitter(a, 0.2, 5.0, random.Random(42)) for a in range(6)]
    second = [full_jitter(a, 0.2, 5.0, random.Random(42)) for a in range(6)]

    assert first == second


def test_full_jitter_survives_a_huge_attempt_number() -> None:
    assert 0.0 <= full_jitter(10_000, 0.2, 5.0, random.Random(1)) <= 5.0


def test_full_jitter_rejects_a_negative_attempt() -> None:
    with pytest.raises(ValueError):
        full_jitter(-1, 0.2, 5.0, random.Random(1))


def test_new_entries_are_due_at_once_oldest_first() -> None:
    outbox = Outbox()
    outbox.add(entry("a"))
    outbox.add(entry("b"))

    assert [e.client_msg_id for e in outbox.due(now=0.0)] == ["a", "b"]


def test_an_entry_in_flight_is_not_due_until_its_reply_times_out() -> None:
    outbox = Outbox()
    a = entry("a")
    outbox.add(a)

    outbox.mark_sent(a, "r1", now=0.0, timeout=10.0)

    assert outbox.due(now=9.9) == []
    assert outbox.due(now=10.0) == [a]
    assert outbox.next_wakeup() == 10.0


def test_a_retry_keeps_the_client_msg_id_and_counts_the_attempt() -> None:
    outbox = Outbox()
    a = entry("a")
    outbox.add(a)
    outbox.mark_sent(a, "r1", now=0.0, timeout=1.0)

    outbox.mark_sent(a, "r2", now=1.0, timeout=1.0)

    assert a.attempts == 2
    assert a.frame("r2") == {
        "type": "message.send",
        "conversation": 3,
        "client_msg_id": "a",
        "body": "hi",
        "ref": "r2",
    }
    # An error answering either attempt finds the entry.
    assert outbox.by_ref("r1") is a
    assert outbox.by_ref("r2") is a
    assert outbox.by_ref("r3") is None


def test_a_deferred_entry_waits_until_its_retry_time() -> None:
    outbox = Outbox()
    a = entry("a")
    outbox.add(a)
    outbox.mark_sent(a, "r1", now=0.0, timeout=10.0)

    outbox.defer(a, until=2.5)  # e.g. rate_limited with retry_after 2.5

    assert not a.in_flight
    assert outbox.due(now=2.4) == []
    assert outbox.due(now=2.5) == [a]


def test_a_lost_connection_makes_every_entry_in_flight_due_again() -> None:
    outbox = Outbox()
    a, b = entry("a"), entry("b")
    outbox.add(a)
    outbox.add(b)
    outbox.mark_sent(a, "r1", now=0.0, timeout=10.0)
    outbox.mark_sent(b, "r2", now=0.0, timeout=10.0)

    outbox.connection_lost()

    assert outbox.due(now=0.1) == [a, b]


def test_a_removed_entry_is_no_longer_due_or_found() -> None:
    outbox = Outbox()
    a = entry("a")
    outbox.add(a)

    assert outbox.remove("a") is a

    assert outbox.due(now=0.0) == []
    assert "a" not in outbox
    assert outbox.next_wakeup() is None


def test_the_same_client_msg_id_cannot_be_queued_twice() -> None:
    outbox = Outbox()
    outbox.add(entry("a"))

    with pytest.raises(ValueError):
        outbox.add(entry("a"))


def test_attachments_go_into_the_frame_only_when_present() -> None:
    with_files = OutboxEntry(3, "see", "a", attachments=[11, 12])

    assert with_files.frame("r1")["attachments"] == [11, 12]
    assert "attachments" not in entry("b").frame("r1")
