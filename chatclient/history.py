"""What clients did and saw, recorded for the checker (RELIABILITY.md, "The checker").

Times are `clock()` values: wall-clock float seconds, comparable across processes on
one machine. Every record is a flat dataclass of JSON values, so a History can be
written by several processes and merged (`History.load(...).extend(...)`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Outcome = Literal["ok", "fail", "unknown"]
Via = Literal["live", "fetch", "reply"]


@dataclass(frozen=True)
class SendRecord:
    """One `send()` call: `ok` (acknowledged), `fail` (rejected or never sent), `unknown`.

    `unknown` means at least one attempt reached the wire and the client gave up before
    an answer (a timeout, a lost ack, `close()`): the message may or may not exist.
    """

    client: str
    conversation: int
    client_msg_id: str
    invoked_at: float
    completed_at: float
    outcome: Outcome
    seq: int | None = None
    message_id: int | None = None
    error_code: str | None = None
    attempts: int = 0


@dataclass(frozen=True)
class RecvRecord:
    """One message version applied to a client's view, and how it arrived."""

    client: str
    conversation: int
    seq: int
    version: int
    message_id: int
    client_msg_id: str | None
    sender: int | None
    received_at: float
    via: Via


@dataclass(frozen=True)
class ReconnectRecord:
    """One outage: the connection lost at `dropped_at`, `session.ready` again at `ready_at`."""

    client: str
    dropped_at: float
    ready_at: float
    gateway_url: str

    @property
    def duration(self) -> float:
        """Return the outage length in seconds."""
        return self.ready_at - self.dropped_at


@dataclass(frozen=True)
class SyncRecord:
    """One `sync` round trip and the conversations it found behind (which were fetched)."""

    client: str
    invoked_at: float
    completed_at: float
    behind: list[int] = field(default_factory=list)


@dataclass
class History:
    """Collect the records of one or more clients (several clients may share one)."""

    sends: list[SendRecord] = field(default_factory=list)
    recvs: list[RecvRecord] = field(default_factory=list)
    reconnects: list[ReconnectRecord] = field(default_factory=list)
    syncs: list[SyncRecord] = field(default_factory=list)

    def record(self, record: SendRecord | RecvRecord | ReconnectRecord | SyncRecord) -> None:
        """Append `record` to the list of its kind."""
        match record:
            case SendRecord():
                self.sends.append(record)
            case RecvRecord():
                self.recvs.append(record)
            case ReconnectRecord():
                self.reconnects.append(record)
            case SyncRecord():
                self.syncs.append(record)

    def extend(self, other: History) -> None:
        """Append every record of `other` (merge the histories of several processes)."""
        self.sends.extend(other.sends)
        self.recvs.extend(other.recvs)
        self.reconnects.extend(other.reconnects)
        self.syncs.extend(other.syncs)

    def as_dict(self) -> dict[str, list[dict[str, Any]]]:
        """Return the history as JSON-safe lists of records."""
        return {
            "sends": [asdict(r) for r in self.sends],
            "recvs": [asdict(r) for r in self.recvs],
            "reconnects": [asdict(r) for r in self.reconnects],
            "syncs": [asdict(r) for r in self.syncs],
        }

    @classmethod
    def from_dict(cls, data: dict[str, list[dict[str, Any]]]) -> History:
        """Rebuild a history from `as_dict()` output."""
        return cls(
            sends=[SendRecord(**r) for r in data.get("sends", [])],
            recvs=[RecvRecord(**r) for r in data.get("recvs", [])],
            reconnects=[ReconnectRecord(**r) for r in data.get("reconnects", [])],
            syncs=[SyncRecord(**r) for r in data.get("syncs", [])],
        )

    def dump(self, path: str | Path) -> None:
        """Write the history to `path` as JSON."""
        Path(path).write_text(json.dumps(self.as_dict()), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> History:
        """Read a history written by `dump()`."""
        data: dict[str, list[dict[str, Any]]] = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls.from_dict(data)
