"""Client frames: every frame a client may send, its definition, and its parser.

The consumer hands a frame's text to `parse_envelope`, then the envelope's fields to the
parser its table names; a parser checks shapes only (types, ranges, the protocol's fixed
limits) and returns a typed request. Rules (membership, lengths, rates) are the
services'. A shape error is `BadRequest` with `details.field`, answered as an `error`
frame. `CLIENT_FRAMES` is what `messaging.asyncapi` publishes.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict

import orjson

from chatsite.errors import BadRequest, DomainError
from chatsite.limits import MAX_JSON_DEPTH, MAX_REF_LENGTH, MAX_SEQ
from chatsite.wire import json_too_deep

# JSON escapes can spell lone surrogates, which no UTF-8 reply could carry.
_LONE_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")

# --- definitions (for the AsyncAPI document and the clients) ----------------------------


class MessageSendFrame(TypedDict):
    """Store a message (retries reuse `client_msg_id`); answered by `message.sent`."""

    type: Literal["message.send"]
    conversation: int
    client_msg_id: str
    body: str
    attachments: NotRequired[list[int]]
    reply_to: NotRequired[int]
    ref: NotRequired[str]


class MessagesFetchFrame(TypedDict):
    """A page of the log: `after` (a log number) or `before` (a seq); `messages.batch`."""

    type: Literal["messages.fetch"]
    conversation: int
    after: NotRequired[int]
    before: NotRequired[int]
    limit: NotRequired[int]
    ref: NotRequired[str]


class MessageEditFrame(TypedDict):
    """Replace the body of an own message; answered by `message.updated`."""

    type: Literal["message.edit"]
    conversation: int
    message: int
    body: str
    ref: NotRequired[str]


class MessageDeleteFrame(TypedDict):
    """Delete a message for everyone; answered by `message.updated` (`deleted: true`)."""

    type: Literal["message.delete"]
    conversation: int
    message: int
    ref: NotRequired[str]


class ReactionFrame(TypedDict):
    """Add (or take back) this user's emoji reaction; answered by `message.updated`."""

    type: Literal["reaction.add", "reaction.remove"]
    conversation: int
    message: int
    emoji: str
    ref: NotRequired[str]


class ReceiptFrame(TypedDict):
    """Raise this user's delivered (or read, and so delivered) marker; no answer."""

    type: Literal["receipt.delivered", "receipt.read"]
    conversation: int
    seq: int
    ref: NotRequired[str]


class TypingFrameIn(TypedDict):
    """Tell the other members this user started or stopped typing; no answer."""

    type: Literal["typing.start", "typing.stop"]
    conversation: int
    ref: NotRequired[str]


class ActivityFrame(TypedDict):
    """Whether the user has (not) touched this client for 5 minutes; no answer."""

    type: Literal["activity"]
    idle: bool
    ref: NotRequired[str]


class StatusSetFrame(TypedDict):
    """Set the sticky status; answered by this user's `presence.changed`."""

    type: Literal["status.set"]
    status: Literal["available", "busy"]
    ref: NotRequired[str]


class PresenceSubscribeFrame(TypedDict):
    """Follow these users' presence (replaces the set); answered by `presence.snapshot`."""

    type: Literal["presence.subscribe"]
    users: list[int]
    ref: NotRequired[str]


class SyncFrame(TypedDict):
    """Ask for the conversation snapshot again; answered by `sync.state`."""

    type: Literal["sync"]
    ref: NotRequired[str]


class PingFrame(TypedDict):
    """A heartbeat; answered by `pong`."""

    type: Literal["ping"]
    ref: NotRequired[str]
    # The conversation on screen: the pong then carries its members' marker sum.
    conversation: NotRequired[int]


CLIENT_FRAMES: dict[str, type] = {
    "message.send": MessageSendFrame,
    "messages.fetch": MessagesFetchFrame,
    "message.edit": MessageEditFrame,
    "message.delete": MessageDeleteFrame,
    "reaction.add": ReactionFrame,
    "reaction.remove": ReactionFrame,
    "receipt.delivered": ReceiptFrame,
    "receipt.read": ReceiptFrame,
    "typing.start": TypingFrameIn,
    "typing.stop": TypingFrameIn,
    "activity": ActivityFrame,
    "status.set": StatusSetFrame,
    "presence.subscribe": PresenceSubscribeFrame,
    "sync": SyncFrame,
    "ping": PingFrame,
}

# Each frame type's per-socket budget class (WS_FRAME_BUDGETS; the limits endpoint tells
# clients). `message.send` has none: it is limited per user across gateways
# (CHAT_SEND_RATE, CHAT_SEND_BURST) by the send service.
BUDGET_CLASSES: dict[str, str] = {
    "messages.fetch": "fetch",
    "message.edit": "edit",
    "message.delete": "edit",
    "reaction.add": "edit",
    "reaction.remove": "edit",
    "receipt.delivered": "receipt",
    "receipt.read": "receipt",
    "typing.start": "typing",
    "typing.stop": "typing",
    "activity": "status",
    "status.set": "status",
    "presence.subscribe": "presence",
    "sync": "sync",
    "ping": "ping",
}

# --- typed requests ---------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """A frame's type, its `ref` (echoed in the answer) and the whole object."""

    kind: str
    ref: str | None
    data: dict[str, Any]


@dataclass(frozen=True)
class Send:
    """`message.send`."""

    conversation: int
    client_msg_id: uuid.UUID
    body: str
    attachments: list[int]
    reply_to: int | None = None


@dataclass(frozen=True)
class Fetch:
    """`messages.fetch`."""

    conversation: int
    after: int | None
    before: int | None
    limit: int | None


@dataclass(frozen=True)
class Edit:
    """`message.edit`."""

    conversation: int
    message: int
    body: str


@dataclass(frozen=True)
class Delete:
    """`message.delete`."""

    conversation: int
    message: int


@dataclass(frozen=True)
class Reaction:
    """`reaction.add` / `reaction.remove`."""

    conversation: int
    message: int
    emoji: str
    add: bool


@dataclass(frozen=True)
class Receipt:
    """`receipt.delivered` / `receipt.read`."""

    conversation: int
    seq: int
    read: bool


@dataclass(frozen=True)
class Typing:
    """`typing.start` / `typing.stop`."""

    conversation: int
    state: Literal["start", "stop"]


@dataclass(frozen=True)
class Activity:
    """`activity`."""

    idle: bool


@dataclass(frozen=True)
class StatusSet:
    """`status.set`."""

    status: Literal["available", "busy"]


@dataclass(frozen=True)
class PresenceSubscribe:
    """`presence.subscribe` (distinct ids, in the order given)."""

    users: list[int]


@dataclass(frozen=True)
class Ping:
    """`ping`: optionally, the conversation whose markers the client shows."""

    conversation: int | None


@dataclass(frozen=True)
class Empty:
    """`sync`: nothing but the type."""


# --- parsers ----------------------------------------------------------------------------


class BadFrame(Exception):
    """A frame that is not an envelope; `ref` is its `ref` when that much was readable."""

    def __init__(self, error: DomainError, ref: str | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.ref = ref


def parse_envelope(text: str) -> Envelope:
    """Return the frame's type, ref and object, or raise BadFrame (the type is not looked up)."""
    try:
        return _envelope(text)
    except BadRequest as error:
        raise BadFrame(error) from error


def _envelope(text: str) -> Envelope:
    if json_too_deep(text):
        raise BadRequest(f"The frame nests arrays and objects more than {MAX_JSON_DEPTH} deep.")
    try:
        # orjson reads a ping in a fifth of the json module's time. What it refuses, the
        # json module reads as before: lone surrogates (refused below with their own
        # message), NaN, Infinity and numbers past a double (refused by their field). An
        # integer past 64 bits comes back a float, refused by its field as the int was.
        frame = orjson.loads(text)
    except orjson.JSONDecodeError:
        try:
            frame = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise BadRequest("The frame is not valid JSON.") from exc
        if _LONE_SURROGATE.search(text) and not _encodable(frame):
            raise BadRequest("Strings must be valid Unicode text.") from None
    if not isinstance(frame, dict):
        raise BadRequest("A frame must be a JSON object.")
    ref = frame.get("ref")
    if ref is not None and (not isinstance(ref, str) or len(ref) > MAX_REF_LENGTH):
        raise BadRequest(f"ref must be a string of at most {MAX_REF_LENGTH} characters.")
    kind = frame.get("type")
    if not isinstance(kind, str):
        raise BadFrame(BadRequest("A frame needs a string type."), ref)
    return Envelope(kind, ref, frame)


def _encodable(frame: dict[str, Any]) -> bool:
    try:
        json.dumps(frame, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _int(frame: dict[str, Any], name: str, *, required: bool = True) -> int | None:
    value = frame.get(name)
    if value is None:
        if required:
            raise BadRequest(f"{name} is required.", details={"field": name})
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEQ:
        raise BadRequest(f"{name} must be a non-negative integer.", details={"field": name})
    return int(value)


def _required_int(frame: dict[str, Any], name: str) -> int:
    value = _int(frame, name)
    assert value is not None  # noqa: S101 - required=True raised otherwise
    return value


def _str(frame: dict[str, Any], name: str) -> str:
    value = frame.get(name)
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string.", details={"field": name})
    return value


def _uuid(frame: dict[str, Any], name: str) -> uuid.UUID:
    value = frame.get(name)
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise BadRequest(f"{name} must be a UUID.", details={"field": name})


def _ids(frame: dict[str, Any], name: str) -> list[int]:
    """Return the list of ids (positive integers) named `name`, or [] when absent."""
    raw = frame.get(name)
    if raw is None:
        return []
    if not isinstance(raw, list) or any(
        isinstance(i, bool) or not isinstance(i, int) or not 0 < i <= MAX_SEQ for i in raw
    ):
        raise BadRequest(f"{name} must be a list of ids.", details={"field": name})
    return raw


def parse_send(frame: dict[str, Any]) -> Send:
    """Parse `message.send`."""
    return Send(
        _required_int(frame, "conversation"),
        _uuid(frame, "client_msg_id"),
        _str(frame, "body"),
        _ids(frame, "attachments"),
        _int(frame, "reply_to", required=False),
    )


def parse_fetch(frame: dict[str, Any]) -> Fetch:
    """Parse `messages.fetch` (the selector checks `limit` against the settings)."""
    limit = frame.get("limit")
    return Fetch(
        _required_int(frame, "conversation"),
        _int(frame, "after", required=False),
        _int(frame, "before", required=False),
        limit if limit is None or isinstance(limit, int) else _bad_limit(),
    )


def _bad_limit() -> int:
    raise BadRequest("limit must be an integer.", details={"field": "limit"})


def parse_edit(frame: dict[str, Any]) -> Edit:
    """Parse `message.edit`."""
    return Edit(
        _required_int(frame, "conversation"), _required_int(frame, "message"), _str(frame, "body")
    )


def parse_delete(frame: dict[str, Any]) -> Delete:
    """Parse `message.delete`."""
    return Delete(_required_int(frame, "conversation"), _required_int(frame, "message"))


def parse_reaction(frame: dict[str, Any]) -> Reaction:
    """Parse `reaction.add` / `reaction.remove` (what is an emoji is the service's rule)."""
    return Reaction(
        _required_int(frame, "conversation"),
        _required_int(frame, "message"),
        _str(frame, "emoji"),
        add=frame.get("type") == "reaction.add",
    )


def parse_receipt(frame: dict[str, Any]) -> Receipt:
    """Parse `receipt.delivered` / `receipt.read`."""
    return Receipt(
        _required_int(frame, "conversation"),
        _required_int(frame, "seq"),
        read=frame.get("type") == "receipt.read",
    )


def parse_typing(frame: dict[str, Any]) -> Typing:
    """Parse `typing.start` / `typing.stop`."""
    state: Literal["start", "stop"] = "start" if frame.get("type") == "typing.start" else "stop"
    return Typing(_required_int(frame, "conversation"), state)


def parse_activity(frame: dict[str, Any]) -> Activity:
    """Parse `activity`."""
    idle = frame.get("idle")
    if not isinstance(idle, bool):
        raise BadRequest("idle must be true or false.", details={"field": "idle"})
    return Activity(idle)


def parse_status(frame: dict[str, Any]) -> StatusSet:
    """Parse `status.set`."""
    status = frame.get("status")
    if status == "available" or status == "busy":
        return StatusSet(status)
    raise BadRequest("status must be available or busy.", details={"field": "status"})


def parse_presence_subscribe(frame: dict[str, Any], *, limit: int) -> PresenceSubscribe:
    """Parse `presence.subscribe`: at most `limit` user ids."""
    raw = frame.get("users")
    if raw is None:
        raise BadRequest("users must be a list of user ids.", details={"field": "users"})
    raw = _ids(frame, "users")
    if len(raw) > limit:
        raise BadRequest(
            f"Subscribe to at most {limit} users.", details={"field": "users", "max": limit}
        )
    return PresenceSubscribe(list(dict.fromkeys(raw)))


def parse_ping(frame: dict[str, Any]) -> Ping:
    """Parse `ping`."""
    return Ping(_int(frame, "conversation", required=False))


def parse_empty(frame: dict[str, Any]) -> Empty:
    """Parse a frame with nothing but its type."""
    return Empty()
