"""The cursor rules of PROTOCOL.md section 1, on ConversationState alone."""

from chatclient.state import ConversationState, Message, Offer


def message(
    seq: int,
    version: int | None = None,
    *,
    body: str = "hi",
    mid: int | None = None,
    cmid: str | None = None,
    kind: str = "text",
) -> Message:
    return {
        "id": mid if mid is not None else 900 + seq,
        "conversation": 3,
        "seq": seq,
        "version": version if version is not None else seq,
        "kind": kind,
        "sender": 7,
        "body": body,
        "client_msg_id": cmid,
        "created_at": "2026-11-22T10:00:00.000000Z",
        "edited_at": None,
        "deleted": False,
        "attachments": [],
    }


def test_live_messages_in_order_are_applied_and_advance_the_cursor() -> None:
    state = ConversationState(3)

    outcomes = [state.offer(message(seq)) for seq in (1, 2, 3)]

    assert outcomes == [Offer.APPLIED] * 3
    assert state.cursor == 3
    assert [m["seq"] for m in state.view()] == [1, 2, 3]
    assert not state.behind


def test_a_live_message_past_the_next_number_is_a_gap_and_is_not_applied() -> None:
    state = ConversationState(3)
    state.offer(message(1))

    outcome = state.offer(message(3))

    assert outcome is Offer.GAP
    assert state.cursor == 1
    assert [m["seq"] for m in state.view()] == [1]
    assert state.behind
    assert state.known_seq == 3


def test_a_live_message_at_or_below_the_cursor_is_a_dropped_duplicate() -> None:
    state = ConversationState(3)
    state.offer(message(1))
    state.offer(message(2))

    assert state.offer(message(2)) is Offer.DUPLICATE
    assert state.offer(message(1, body="changed")) is Offer.DUPLICATE
    assert state.view()[0]["body"] == "hi"
    assert len(state) == 2


def test_an_edit_with_the_next_version_replaces_the_message_in_place() -> None:
    state = ConversationState(3)
    state.offer(message(1))
    state.offer(message(2))

    outcome = state.offer(message(1, version=3, body="edited"))

    assert outcome is Offer.APPLIED
    assert state.cursor == 3
    view = state.view()
    assert [(m["seq"], m["version"], m["body"]) for m in view] == [(1, 3, "edited"), (2, 2, "hi")]


def test_a_fetch_batch_fills_the_gap_and_sets_the_cursor_to_upto() -> None:
    state = ConversationState(3)
    state.offer(message(1))
    assert state.offer(message(4)) is Offer.GAP

    applied = state.apply_batch([message(2), message(3), message(4)], 5, after=1)

    assert [m["seq"] for m in applied] == [2, 3, 4]
    assert state.cursor == 5  # upto covers log number 5 (e.g. an edit of a message not shown)
    assert not state.behind
    assert [m["seq"] for m in state.view()] == [1, 2, 3, 4]


def test_a_fetch_batch_never_moves_the_cursor_back() -> None:
    state = ConversationState(3)
    for seq in (1, 2, 3, 4):
        state.offer(message(seq))

    applied = state.apply_batch([message(2), message(3)], 3, after=1)

    assert applied == []  # already held at the same versions
    assert state.cursor == 4


def test_a_batch_with_an_older_version_does_not_overwrite_a_newer_edit() -> None:
    state = ConversationState(3)
    state.offer(message(1))
    state.offer(message(1, version=2, body="edited"))

    applied = state.apply_batch([message(1, version=1, body="hi")], 2, after=0)

    assert applied == []
    assert state.view()[0]["body"] == "edited"


def test_a_fetch_batch_from_above_the_cursor_is_ignored_because_it_would_leave_a_hole() -> None:
    state = ConversationState(3)
    state.offer(message(1))

    applied = state.apply_batch([message(6)], 6, after=5)

    assert applied == []
    assert state.cursor == 1
    assert len(state) == 1


def test_the_view_is_in_seq_order_whatever_the_version_order() -> None:
    state = ConversationState(3)
    # A fetch answers in version order: the edit of seq 1 (version 4) comes last.
    state.apply_batch([message(2), message(3), message(1, version=4, body="e")], 4, after=0)

    assert [m["seq"] for m in state.view()] == [1, 2, 3]


def test_a_snapshot_last_seq_marks_the_conversation_behind_until_fetched() -> None:
    state = ConversationState(3)

    state.note_last_seq(5)
    state.note_last_seq(2)  # never lowers

    assert state.behind
    assert state.known_seq == 5
    state.apply_batch([message(s) for s in range(1, 6)], 5, after=0)
    assert not state.behind


def test_view_returns_copies_that_callers_cannot_use_to_change_the_state() -> None:
    state = ConversationState(3)
    state.offer(message(1))

    state.view()[0]["body"] = "tampered"

    assert state.view()[0]["body"] == "hi"


def test_held_messages_join_the_view_in_order_when_the_gap_closes() -> None:
    """Tried: 4 and 3 arrive before 2; held, then applied in order once 2 arrives."""
    state = ConversationState(3)
    state.offer(message(1))
    for seq in (4, 3):
        assert state.offer(message(seq)) is Offer.GAP
        state.hold(message(seq), "live")
    assert [m["seq"] for m in state.view()] == [1]  # nothing past the cursor is shown
    assert state.drain() == []

    assert state.offer(message(2)) is Offer.APPLIED
    drained = state.drain()

    assert [(m["seq"], tag) for m, tag in drained] == [(3, "live"), (4, "live")]
    assert state.cursor == 4 and not state.behind
    assert [m["seq"] for m in state.view()] == [1, 2, 3, 4]


def test_held_messages_a_fetch_already_covered_are_dropped() -> None:
    """Tried: hold 3 and 6, then a batch up to 4; 3 is dropped, 6 waits for 5."""
    state = ConversationState(3)
    state.offer(message(1))
    for seq in (3, 6):
        state.offer(message(seq))
        state.hold(message(seq))

    state.apply_batch([message(2), message(3), message(4)], 4, after=1)

    assert state.drain() == []
    assert state.cursor == 4 and state.behind  # 6 is known; 5 is not here yet
    state.offer(message(5))
    assert [m["seq"] for m, _ in state.drain()] == [6]
    assert [m["seq"] for m in state.view()] == [1, 2, 3, 4, 5, 6]


def test_a_retention_notice_drops_what_it_says_was_removed_and_stays() -> None:
    state = ConversationState(3)
    for seq in (1, 2, 3):
        state.offer(message(seq))
    notice = message(4, kind="system", body="Messages older than 30 days are removed")
    notice["system"] = {"event": "retention", "users": [], "days": 30, "through_seq": 2}
    assert state.offer(notice) is Offer.APPLIED
    assert [m["seq"] for m in state.view()] == [3, 4]

    # A later purge updates the same notice (a new version) past its own seq.
    state.offer(message(5))
    updated = {**notice, "version": 6, "system": {**notice["system"], "through_seq": 5}}
    assert state.offer(updated) is Offer.APPLIED
    assert [m["seq"] for m in state.view()] == [4]
