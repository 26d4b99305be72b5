"""The end-to-end checker of RELIABILITY.md: loss, duplicates, order, gaps, isolation, latency.

`check()` never raises on a violation: it counts them per conversation, keeps a line of
detail for each, and says `ok` only when every count that must be zero is zero. Tests
assert on the report; notes print `report.summary()`.

Who must see what: a client in `members[c]` must see every text message of `c`, except
seqs before its `visible_from[c][client]` (a late joiner of a private group) and seqs in
its `excluded[c][client]` window (a removed member). An excluded window is a seq `s`
("nothing with seq >= s") or a pair `(s, e)` ("nothing with s <= seq < e": removed at
`s`, re-added at `e`). Anything reaching a client outside that is an isolation
violation.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from chatclient.history import History, RecvRecord, SendRecord

View = Sequence[Mapping[str, Any]]
Window = int | tuple[int, int]


@dataclass(frozen=True)
class Stats:
    """Count and nearest-rank percentiles of durations, in milliseconds."""

    count: int = 0
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None

    @classmethod
    def of_seconds(cls, values: Iterable[float]) -> Stats:
        """Summarize durations given in seconds."""
        millis = sorted(v * 1000.0 for v in values)
        if not millis:
            return cls()
        return cls(
            count=len(millis),
            p50=percentile(millis, 50),
            p95=percentile(millis, 95),
            p99=percentile(millis, 99),
            max=millis[-1],
        )

    def line(self) -> str:
        """Return the figures on one line."""
        if not self.count:
            return "n=0"
        return (
            f"n={self.count} p50={self.p50:.1f} p95={self.p95:.1f} "
            f"p99={self.p99:.1f} max={self.max:.1f}"
        )


def percentile(ordered: Sequence[float], p: float) -> float:
    """Return the nearest-rank `p`th percentile of an ascending, non-empty sequence."""
    if not ordered:
        raise ValueError("percentile of an empty sequence")
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


# The counts that must all be zero for a conversation to pass.
FAILING_COUNTS = (
    "lost",
    "duplicated",
    "unknown_duplicated",
    "reordered",
    "gaps",
    "stale",
    "isolation",
)


@dataclass
class ConversationReport:
    """The figures of one conversation, with one line of detail per violation."""

    conversation: int
    sent_ok: int = 0
    sent_fail: int = 0
    sent_unknown: int = 0
    # ok sends missing from some member's final view (each send counted once)
    lost: int = 0
    # a (conversation, seq) twice in a view, or a client_msg_id stored at two seqs
    duplicated: int = 0
    # unknown sends stored more than once (must be 0) / not stored at all (allowed: the
    # client gave up, so the message may never have reached the server)
    unknown_duplicated: int = 0
    unknown_missing: int = 0
    # a view not strictly increasing in seq, or two clients with different ids at a seq
    reordered: int = 0
    # (client, seq) pairs a member lacks while another view has that text message
    gaps: int = 0
    # (client, message) pairs where a member holds an older version than another view
    stale: int = 0
    # (client, seq) pairs that reached a non-member or an excluded member
    isolation: int = 0
    details: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Return whether every count that must be zero is zero."""
        return all(getattr(self, name) == 0 for name in FAILING_COUNTS)


@dataclass
class CheckReport:
    """The checker's verdict over all conversations, with latency and reconnect figures."""

    conversations: dict[int, ConversationReport]
    latency: Stats
    reconnect: Stats

    @property
    def ok(self) -> bool:
        """Return whether every conversation passed."""
        return all(report.ok for report in self.conversations.values())

    def total(self, name: str) -> int:
        """Return a count summed over the conversations (e.g. `total("lost")`)."""
        return sum(int(getattr(report, name)) for report in self.conversations.values())

    @property
    def sent_ok(self) -> int:
        """Return the number of acknowledged sends."""
        return self.total("sent_ok")

    @property
    def lost(self) -> int:
        """Return the number of acknowledged sends missing from a member's view."""
        return self.total("lost")

    @property
    def duplicated(self) -> int:
        """Return the number of duplicates."""
        return self.total("duplicated")

    @property
    def unknown_duplicated(self) -> int:
        """Return the number of unknown sends stored more than once."""
        return self.total("unknown_duplicated")

    @property
    def unknown_missing(self) -> int:
        """Return the number of unknown sends not stored at all."""
        return self.total("unknown_missing")

    @property
    def reordered(self) -> int:
        """Return the number of order violations."""
        return self.total("reordered")

    @property
    def gaps(self) -> int:
        """Return the number of missing (client, seq) pairs."""
        return self.total("gaps")

    @property
    def stale(self) -> int:
        """Return the number of outdated message versions in views."""
        return self.total("stale")

    @property
    def isolation(self) -> int:
        """Return the number of isolation violations."""
        return self.total("isolation")

    @property
    def details(self) -> list[str]:
        """Return every violation's line of detail, conversation by conversation."""
        return [
            f"conversation {c}: {line}"
            for c, report in sorted(self.conversations.items())
            for line in report.details
        ]

    def summary(self) -> str:
        """Return one line per figure, for a test's notes."""
        lines = [
            f"verdict: {'OK' if self.ok else 'FAIL'}",
            f"conversations: {len(self.conversations)}",
            f"sent ok: {self.sent_ok}",
            f"sent fail: {self.total('sent_fail')}",
            f"sent unknown: {self.total('sent_unknown')}",
            f"lost: {self.lost}",
            f"duplicated: {self.duplicated}",
            f"unknown sends stored twice: {self.unknown_duplicated}",
            f"unknown sends missing: {self.unknown_missing}",
            f"reordered: {self.reordered}",
            f"gaps: {self.gaps}",
            f"stale versions: {self.stale}",
            f"isolation violations: {self.isolation}",
            f"delivery latency ms: {self.latency.line()}",
            f"reconnect time ms: {self.reconnect.line()}",
        ]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """Return the report as JSON-safe data."""
        return {
            "ok": self.ok,
            "totals": {
                name: self.total(name)
                for name in ("sent_ok", "sent_fail", "sent_unknown", *FAILING_COUNTS)
            }
            | {"unknown_missing": self.unknown_missing},
            "latency_ms": asdict(self.latency),
            "reconnect_ms": asdict(self.reconnect),
            "conversations": {
                str(c): asdict(report) | {"ok": report.ok}
                for c, report in sorted(self.conversations.items())
            },
        }


def check(
    history: History,
    views: Mapping[str, Mapping[int, View]],
    members: Mapping[int, Iterable[str]],
    excluded: Mapping[int, Mapping[str, Window]] | None = None,
    *,
    visible_from: Mapping[int, Mapping[str, int]] | None = None,
    truth: Mapping[int, View] | None = None,
) -> CheckReport:
    """Check the final views and the history against the guarantees of RELIABILITY.md.

    `views`: client name -> conversation -> final view (message dicts in seq order).
    `members`: conversation -> the client names that must see it. `excluded` and
    `visible_from`: see the module docstring. `truth`: optionally, each conversation's
    messages as the database holds them; they join the union the views are compared to.
    """
    excluded = excluded or {}
    visible_from = visible_from or {}
    truth = truth or {}
    sends_by_conversation: dict[int, list[SendRecord]] = defaultdict(list)
    for send in history.sends:
        sends_by_conversation[send.conversation].append(send)
    recvs_by_conversation: dict[int, list[RecvRecord]] = defaultdict(list)
    for recv in history.recvs:
        recvs_by_conversation[recv.conversation].append(recv)
    conversation_ids = (
        set(members)
        | set(sends_by_conversation)
        | set(recvs_by_conversation)
        | set(truth)
        | {c for client_views in views.values() for c in client_views}
    )
    latencies: list[float] = []
    reports: dict[int, ConversationReport] = {}
    for conversation in sorted(conversation_ids):
        audience = _Audience(
            set(members.get(conversation, ())),
            excluded.get(conversation, {}),
            visible_from.get(conversation, {}),
        )
        conversation_views = {
            client: list(client_views[conversation])
            for client, client_views in views.items()
            if conversation in client_views
        }
        report, conversation_latencies = _check_conversation(
            conversation,
            conversation_views,
            list(truth.get(conversation, [])),
            audience,
            sends_by_conversation[conversation],
            recvs_by_conversation[conversation],
        )
        reports[conversation] = report
        latencies.extend(conversation_latencies)
    return CheckReport(
        conversations=reports,
        latency=Stats.of_seconds(latencies),
        reconnect=Stats.of_seconds(r.ready_at - r.dropped_at for r in history.reconnects),
    )


@dataclass(frozen=True)
class _Audience:
    """Who must, and who must not, see each seq of one conversation."""

    members: set[str]
    excluded: Mapping[str, Window]
    visible_from: Mapping[str, int]

    def allowed(self, client: str, seq: int) -> bool:
        """Return whether `client` may see the message at `seq`."""
        if client not in self.members:
            return False
        window = self.excluded.get(client)
        if window is None:
            return True
        start, end = (window, None) if isinstance(window, int) else window
        return not (seq >= start and (end is None or seq < end))

    def expected(self, client: str, seq: int) -> bool:
        """Return whether `client` must see the message at `seq`."""
        return self.allowed(client, seq) and seq >= self.visible_from.get(client, 0)


def _check_conversation(
    conversation: int,
    views: dict[str, list[Mapping[str, Any]]],
    truth: list[Mapping[str, Any]],
    audience: _Audience,
    sends: list[SendRecord],
    recvs: list[RecvRecord],
) -> tuple[ConversationReport, list[float]]:
    """Check one conversation; return its report and its delivery latencies (seconds)."""
    report = ConversationReport(conversation)
    note = report.details.append
    clients = sorted(set(views) | audience.members)
    sources: dict[str, list[Mapping[str, Any]]] = dict(views)
    if truth:
        sources["<truth>"] = truth

    # Order and duplicates within each view.
    for name, view in sorted(sources.items()):
        seqs = [int(m["seq"]) for m in view]
        for position in range(1, len(seqs)):
            if seqs[position] <= seqs[position - 1]:
                report.reordered += 1
                note(f"{name}: seq {seqs[position]} after {seqs[position - 1]} in its view")
        counts: dict[int, int] = defaultdict(int)
        for seq in seqs:
            counts[seq] += 1
        for seq, count in sorted(counts.items()):
            if count > 1:
                report.duplicated += count - 1
                note(f"{name}: seq {seq} appears {count} times in its view")

    # The union of all views: who holds what at each seq, and each message's versions.
    ids_at: dict[int, set[int]] = defaultdict(set)
    text_at: dict[int, Mapping[str, Any]] = {}
    versions: dict[int, dict[str, int]] = defaultdict(dict)
    # client_msg_id -> every seq it is stored at (uuid4s do not collide across senders)
    seqs_of_cmid: dict[str, set[int]] = defaultdict(set)
    held: dict[str, set[int]] = {name: set() for name in sources}
    for name, view in sources.items():
        for message in view:
            seq = int(message["seq"])
            held[name].add(seq)
            ids_at[seq].add(int(message["id"]))
            if message.get("kind", "text") != "system":
                text_at.setdefault(seq, message)
            versions[int(message["id"])][name] = int(message["version"])
            cmid = message.get("client_msg_id")
            if cmid:
                seqs_of_cmid[str(cmid)].add(seq)
    for seq, ids in sorted(ids_at.items()):
        if len(ids) > 1:
            report.reordered += 1
            note(f"seq {seq} holds different messages in different views: ids {sorted(ids)}")

    # Acknowledged sends: the same client_msg_id must always name the same message.
    ok_sends = [s for s in sends if s.outcome == "ok"]
    for send in ok_sends:
        if send.seq is not None:
            seqs_of_cmid[send.client_msg_id].add(send.seq)
    for cmid, stored_at in sorted(seqs_of_cmid.items()):
        if len(stored_at) > 1:
            report.duplicated += 1
            note(f"client_msg_id {cmid} stored at seqs {sorted(stored_at)}")

    # Loss: every ok send in the view of every member who must see its seq.
    report.sent_ok = len(ok_sends)
    report.sent_fail = sum(1 for s in sends if s.outcome == "fail")
    report.sent_unknown = sum(1 for s in sends if s.outcome == "unknown")
    cmids_in: dict[str, set[str]] = {
        client: {str(m["client_msg_id"]) for m in views.get(client, []) if m.get("client_msg_id")}
        for client in clients
    }
    truth_cmids = {str(m["client_msg_id"]) for m in truth if m.get("client_msg_id")}
    for send in ok_sends:
        missing = [
            client
            for client in clients
            if (send.seq is None or audience.expected(client, send.seq))
            and send.client_msg_id not in cmids_in[client]
        ]
        if truth and send.client_msg_id not in truth_cmids:
            missing.append("<truth>")
        if missing:
            report.lost += 1
            note(f"ok send {send.client_msg_id} (seq {send.seq}) missing for {missing}")

    # Unknown sends: stored at most once; not stored at all is reported, not failed.
    ok_cmids = {s.client_msg_id for s in ok_sends}
    for cmid in sorted({s.client_msg_id for s in sends if s.outcome == "unknown"}):
        stored = seqs_of_cmid.get(cmid, set())
        if len(stored) > 1:
            report.unknown_duplicated += 1
            note(f"unknown send {cmid} stored at seqs {sorted(stored)}")
        elif not stored and cmid not in ok_cmids:
            report.unknown_missing += 1
            note(f"unknown send {cmid} is not stored (allowed: the client gave up)")

    # Gaps: a member lacks a text message some other view has.
    for client in clients:
        missing_seqs = [
            seq
            for seq in sorted(text_at)
            if audience.expected(client, seq) and seq not in held.get(client, set())
        ]
        report.gaps += len(missing_seqs)
        if missing_seqs:
            note(f"{client}: missing seqs {_ranges(missing_seqs)}")

    # Stale: a member holds an older version of a message than another view.
    seq_of_id = {mid: seq for seq, ids in ids_at.items() for mid in ids}
    for message_id, held_versions in sorted(versions.items()):
        newest = max(held_versions.values())
        seq = seq_of_id[message_id]
        for client in clients:
            version = held_versions.get(client)
            if (
                version is not None
                and version < newest
                and audience.expected(client, seq)
                and audience.allowed(client, newest)
            ):
                report.stale += 1
                note(f"{client}: message {message_id} at version {version}, not {newest}")

    # Isolation: nothing reaches a client outside its window, in views or on the wire.
    breaches: set[tuple[str, int]] = set()
    for client, view in views.items():
        breaches.update((client, int(m["seq"])) for m in view)
    breaches.update((r.client, r.seq) for r in recvs)
    outside = {(client, seq) for client, seq in breaches if not audience.allowed(client, seq)}
    report.isolation = len(outside)
    by_client: dict[str, list[int]] = defaultdict(list)
    for client, seq in sorted(outside):
        by_client[client].append(seq)
    for client, seqs in sorted(by_client.items()):
        note(f"{client}: must not see seqs {_ranges(seqs)} but did")

    return report, _latencies(ok_sends, recvs, audience)


def _latencies(
    ok_sends: list[SendRecord], recvs: list[RecvRecord], audience: _Audience
) -> list[float]:
    """Return send-to-live-receipt times: per ok send, per other member's first live copy."""
    first_live: dict[tuple[str, int], float] = {}
    for recv in recvs:
        if recv.via != "live":
            continue
        key = (recv.client, recv.message_id)
        first_live[key] = min(first_live.get(key, recv.received_at), recv.received_at)
    latencies: list[float] = []
    for send in ok_sends:
        if send.message_id is None:
            continue
        for client in sorted(audience.members - {send.client}):
            received_at = first_live.get((client, send.message_id))
            if received_at is not None:
                latencies.append(received_at - send.invoked_at)
    return latencies


def _ranges(seqs: Sequence[int]) -> str:
    """Return ascending seqs compactly: `1-3, 7, 9-10`."""
    parts: list[str] = []
    start = previous = seqs[0]
    for seq in [*seqs[1:], None]:
        if seq is not None and seq == previous + 1:
            previous = seq
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if seq is not None:
            start = previous = seq
    return ", ".join(parts)
