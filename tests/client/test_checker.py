"""The checker on hand-built histories: each violation is found, counted and explained."""

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from chatclient.checker import Stats, check, percentile
from chatclient.history import History, Outcome, ReconnectRecord, RecvRecord, SendRecord, Via

CONV = 3


def msg(
    seq: int,
    cmid: str | None = None,
    *,
    mid: int | None = None,
    version: int | None = None,
    kind: str = "text",
    sender: int = 7,
) -> dict[str, Any]:
    return {
        "id": mid if mid is not None else 900 + seq,
        "conversation": CONV,
        "seq": seq,
        "version": version if version is not None else seq,
        "kind": kind,
        "sender": sender,
        "body": f"m{seq}",
        "client_msg_id": cmid if cmid is not None else (None if kind == "system" else f"c{seq}"),
        "created_at": None,
        "edited_at": None,
        "deleted": False,
        "attachments": [],
    }


def sent(
    seq: int,
    *,
    client: str = "ana",
    outcome: Outcome = "ok",
    cmid: str | None = None,
    at: float = 100.0,
    conversation: int = CONV,
) -> SendRecord:
    ok = outcome == "ok"
    return SendRecord(
        client=client,
        conversation=conversation,
        client_msg_id=cmid or f"c{seq}",
        invoked_at=at,
        completed_at=at + 0.01,
        outcome=outcome,
        seq=seq if ok else None,
        message_id=900 + seq if ok else None,
        error_code=None if ok else "timeout",
        attempts=1,
    )


def recv(
    client: str, seq: int, *, at: float = 100.05, via: Via = "live", conversation: int = CONV
) -> RecvRecord:
    return RecvRecord(
        client=client,
        conversation=conversation,
        seq=seq,
        version=seq,
        message_id=900 + seq,
        client_msg_id=f"c{seq}",
        sender=7,
        received_at=at,
        via=via,
    )


def clean_history(seqs: Iterable[int] = (1, 2, 3), receiver: str = "bo") -> History:
    history = History()
    for seq in seqs:
        history.record(sent(seq))
        history.record(recv(receiver, seq))
    return history


def test_a_clean_run_is_ok_with_every_count_zero() -> None:
    history = clean_history()
    view = [msg(1), msg(2), msg(3)]

    report = check(history, {"ana": {CONV: view}, "bo": {CONV: view}}, {CONV: {"ana", "bo"}})

    assert report.ok
    assert report.sent_ok == 3
    for name in ("lost", "duplicated", "reordered", "gaps", "stale", "isolation"):
        assert getattr(report, name) == 0, name
    assert report.latency.count == 3
    assert report.details == []


def test_an_ok_send_missing_from_a_member_view_is_lost_and_a_gap() -> None:
    history = clean_history()

    report = check(
        history,
        {"ana": {CONV: [msg(1), msg(2), msg(3)]}, "bo": {CONV: [msg(1), msg(3)]}},
        {CONV: {"ana", "bo"}},
    )

    assert not report.ok
    assert report.lost == 1
    assert report.gaps == 1
    assert any("c2" in line and "bo" in line for line in report.details)


def test_a_member_that_never_reported_a_view_has_lost_everything() -> None:
    report = check(
        clean_history(), {"ana": {CONV: [msg(1), msg(2), msg(3)]}}, {CONV: {"ana", "bo"}}
    )

    assert report.lost == 3
    assert report.gaps == 3


def test_the_same_seq_twice_in_a_view_is_a_duplicate() -> None:
    view = [msg(1), msg(2), msg(2), msg(3)]

    report = check(clean_history(), {"ana": {CONV: view}}, {CONV: {"ana"}})

    assert not report.ok
    assert report.duplicated == 1
    assert report.reordered == 1  # 2 after 2 is not strictly increasing either


def test_the_same_client_msg_id_stored_at_two_seqs_is_a_duplicate() -> None:
    view = [msg(1), msg(2, cmid="c1"), msg(3)]
    history = History()
    history.record(sent(1))

    report = check(history, {"ana": {CONV: view}}, {CONV: {"ana"}})

    assert report.duplicated == 1
    assert any("c1" in line for line in report.details)


def test_two_acknowledgements_of_one_client_msg_id_at_different_seqs_are_a_duplicate() -> None:
    history = History()
    history.record(sent(1, cmid="same"))
    history.record(sent(2, cmid="same", client="ana-phone"))
    view = [msg(1, cmid="same"), msg(2, cmid="other")]

    report = check(history, {"ana": {CONV: view}}, {CONV: {"ana", "ana-phone"}})

    assert report.duplicated == 1


def test_a_view_out_of_seq_order_is_reordered() -> None:
    view = [msg(1), msg(3), msg(2)]

    report = check(clean_history(), {"ana": {CONV: view}}, {CONV: {"ana"}})

    assert not report.ok
    assert report.reordered == 1


def test_two_clients_holding_different_messages_at_one_seq_is_reordered() -> None:
    report = check(
        clean_history((1, 2)),
        {"ana": {CONV: [msg(1), msg(2)]}, "bo": {CONV: [msg(1), msg(2, mid=555)]}},
        {CONV: {"ana", "bo"}},
    )

    assert report.reordered == 1
    assert any("ids [555, 902]" in line for line in report.details)


def test_anything_in_a_non_member_view_breaches_isolation() -> None:
    view = [msg(1), msg(2), msg(3)]

    report = check(
        clean_history(),
        {"ana": {CONV: view}, "bo": {CONV: view}, "eve": {CONV: [msg(2)]}},
        {CONV: {"ana", "bo"}},
    )

    assert not report.ok
    assert report.isolation == 1
    assert any("eve" in line for line in report.details)


def test_a_removed_member_receiving_after_removal_breaches_isolation() -> None:
    history = clean_history((1, 2, 3, 4))
    history.record(recv("cy", 4, via="fetch"))  # seen on the wire, then dropped from the view
    full = [msg(s) for s in (1, 2, 3, 4)]

    report = check(
        history,
        {"ana": {CONV: full}, "bo": {CONV: full}, "cy": {CONV: [msg(1), msg(2)]}},
        {CONV: {"ana", "bo", "cy"}},
        excluded={CONV: {"cy": 3}},
    )

    assert report.isolation == 1
    assert report.lost == 0  # cy is not expected to have seqs 3 and 4


def test_a_removed_then_readded_member_must_see_only_outside_the_excluded_window() -> None:
    history = clean_history((1, 2, 3, 4, 5), receiver="ana")
    full = [msg(s) for s in (1, 2, 3, 4, 5)]
    views = {"ana": {CONV: full}, "cy": {CONV: [msg(1), msg(2), msg(5)]}}
    members = {CONV: {"ana", "cy"}}

    clean = check(history, views, members, excluded={CONV: {"cy": (3, 5)}})
    leaked = check(history, {**views, "cy": {CONV: full}}, members, excluded={CONV: {"cy": (3, 5)}})

    assert clean.ok
    assert leaked.isolation == 2


def test_a_late_joiner_is_not_expected_to_see_what_came_before_it_joined() -> None:
    history = clean_history((1, 2, 3), receiver="ana")
    full = [msg(1), msg(2), msg(3)]

    report = check(
        history,
        {"ana": {CONV: full}, "dee": {CONV: [msg(3)]}},
        {CONV: {"ana", "dee"}},
        visible_from={CONV: {"dee": 3}},
    )

    assert report.ok


def test_an_unknown_send_that_is_not_stored_is_counted_but_allowed() -> None:
    history = clean_history((1, 2))
    history.record(sent(9, outcome="unknown", cmid="lost-ack"))
    view = [msg(1), msg(2)]

    report = check(history, {"ana": {CONV: view}, "bo": {CONV: view}}, {CONV: {"ana", "bo"}})

    assert report.ok
    assert report.unknown_missing == 1
    assert report.unknown_duplicated == 0
    assert report.total("sent_unknown") == 1


def test_an_unknown_send_stored_twice_fails_the_check() -> None:
    history = clean_history((1,))
    history.record(sent(0, outcome="unknown", cmid="retried"))
    view = [msg(1), msg(2, cmid="retried"), msg(3, cmid="retried")]

    report = check(history, {"ana": {CONV: view}}, {CONV: {"ana"}})

    assert not report.ok
    assert report.unknown_duplicated == 1
    assert report.unknown_missing == 0


def test_an_unknown_send_retried_to_ok_is_judged_as_an_ok_send() -> None:
    history = History()
    history.record(sent(0, outcome="unknown", cmid="c1"))
    history.record(sent(1))  # the retry with the same client_msg_id

    report = check(history, {"ana": {CONV: [msg(1)]}}, {CONV: {"ana"}})

    assert report.ok
    assert report.unknown_missing == 0


def test_a_member_holding_an_older_version_of_an_edited_message_is_stale() -> None:
    history = clean_history((1, 2))
    edited = msg(1, version=3)

    report = check(
        history,
        {"ana": {CONV: [edited, msg(2)]}, "bo": {CONV: [msg(1), msg(2)]}},
        {CONV: {"ana", "bo"}},
    )

    assert not report.ok
    assert report.stale == 1


def test_an_ok_send_missing_from_the_database_truth_is_lost() -> None:
    history = clean_history((1, 2))
    view = [msg(1), msg(2)]

    report = check(history, {"ana": {CONV: view}}, {CONV: {"ana"}}, truth={CONV: [msg(1)]})

    assert report.lost == 1


def test_system_messages_do_not_count_as_gaps() -> None:
    view = [msg(1, kind="system"), msg(2)]

    report = check(
        clean_history((2,)),
        {"ana": {CONV: view}, "bo": {CONV: [msg(2)]}},
        {CONV: {"ana", "bo"}},
    )

    assert report.gaps == 0


def test_latency_percentiles_use_live_receipts_by_other_members_only() -> None:
    history = History()
    for n in range(1, 101):
        history.record(sent(n, at=1000.0 + n))
        history.record(recv("bo", n, at=1000.0 + n + n / 1000.0))  # n ms later
        history.record(recv("bo", n, at=1000.0 + n + 5.0, via="fetch"))  # ignored
        history.record(recv("ana", n, at=1000.0 + n + 9.0))  # the sender: ignored
    view = [msg(n) for n in range(1, 101)]

    report = check(history, {"ana": {CONV: view}, "bo": {CONV: view}}, {CONV: {"ana", "bo"}})

    assert report.latency.count == 100
    assert report.latency.p50 == pytest.approx(50.0)
    assert report.latency.p95 == pytest.approx(95.0)
    assert report.latency.p99 == pytest.approx(99.0)
    assert report.latency.max == pytest.approx(100.0)


def test_reconnect_times_are_summarized_in_milliseconds() -> None:
    history = History()
    for n, seconds in enumerate((0.1, 0.2, 0.4)):
        history.record(ReconnectRecord("bo", 10.0 * n, 10.0 * n + seconds, "ws://g1/ws/v1/"))

    report = check(history, {}, {})

    assert report.reconnect.count == 3
    assert report.reconnect.p50 == pytest.approx(200.0)
    assert report.reconnect.max == pytest.approx(400.0)


def test_nearest_rank_percentiles_on_small_samples() -> None:
    assert percentile([10.0], 99) == 10.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 51) == 3.0
    assert Stats.of_seconds([]).count == 0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_the_summary_has_one_line_per_figure_and_as_dict_is_json() -> None:
    history = clean_history()
    view = [msg(1), msg(2), msg(3)]
    report = check(history, {"ana": {CONV: view}, "bo": {CONV: [msg(1)]}}, {CONV: {"ana", "bo"}})

    summary = report.summary()
    data = json.loads(json.dumps(report.as_dict()))

    assert summary.splitlines()[0] == "verdict: FAIL"
    assert "lost: 2" in summary.splitlines()
    assert any(line.startswith("delivery latency ms: n=3") for line in summary.splitlines())
    assert data["ok"] is False
    assert data["totals"]["lost"] == 2
    assert data["conversations"][str(CONV)]["gaps"] == 2
    assert data["conversations"][str(CONV)]["details"]


def test_the_history_round_trips_through_json(tmp_path: Path) -> None:
    history = clean_history()
    history.record(ReconnectRecord("bo", 1.0, 1.5, "ws://g1/ws/v1/"))
    path = tmp_path / "history.json"

    history.dump(path)
    loaded = History.load(path)

    assert loaded == history
    merged = History()
    merged.extend(loaded)
    merged.extend(loaded)
    assert len(merged.sends) == 6
