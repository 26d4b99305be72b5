"""Client frames are checked once, here at the edge: the parsers turn JSON into typed requests.

The services take those typed values and never see a wrong shape, so what a client may
get wrong about types is tried here (fast, no socket); the end-to-end hostile-frame
tests (tests/e2e/test_security.py) send the same mistakes over a real socket.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from chatsite.errors import BadRequest
from chatsite.limits import MAX_SEQ
from messaging import frames

CMID = "6f0c2a7e-1b1a-4c53-9a43-2b8f1f9c1d10"


def send_frame(**fields: Any) -> dict[str, Any]:
    return {
        "type": "message.send",
        "conversation": 3,
        "client_msg_id": CMID,
        "body": "hi",
        **fields,
    }


def test_a_send_is_parsed_into_typed_values() -> None:
    request = frames.parse_send(send_frame(attachments=[4, 5, 4]))

    assert request == frames.Send(3, uuid.UUID(CMID), "hi", [4, 5, 4])
    assert isinstance(request.client_msg_id, uuid.UUID)
    # Without attachments, an empty list (not None) reaches the service.
    assert frames.parse_send(send_frame()).attachments == []
    # An upper-case id is the same UUID: a retry in either case is a replay.
    upper = frames.parse_send(send_frame(client_msg_id=CMID.upper()))
    assert upper.client_msg_id == uuid.UUID(CMID)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"body": None}, "body"),
        ({"body": 42}, "body"),
        ({"body": ["hi"]}, "body"),
        ({"body": {"text": "hi"}}, "body"),
        ({"client_msg_id": "not-a-uuid"}, "client_msg_id"),
        ({"client_msg_id": ""}, "client_msg_id"),
        ({"client_msg_id": 17}, "client_msg_id"),
        ({"client_msg_id": None}, "client_msg_id"),
        ({"client_msg_id": [CMID]}, "client_msg_id"),
        ({"attachments": "x"}, "attachments"),
        ({"attachments": [0]}, "attachments"),
        ({"attachments": [-3]}, "attachments"),
        ({"attachments": [True]}, "attachments"),
        ({"attachments": ["4"]}, "attachments"),
        ({"attachments": [1.5]}, "attachments"),
        ({"attachments": [MAX_SEQ + 1]}, "attachments"),
        ({"attachments": {"id": 4}}, "attachments"),
        ({"conversation": "3"}, "conversation"),
    ],
)
def test_a_send_of_the_wrong_shape_names_the_field(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRequest) as err:
        frames.parse_send(send_frame(**fields))

    assert err.value.details == {"field": field}
    assert err.value.message.startswith(field)


@pytest.mark.parametrize("bad", [-1, "3", 1.5, None, True, MAX_SEQ + 1, 2**63])
def test_a_receipt_seq_must_be_a_log_number(bad: object) -> None:
    with pytest.raises(BadRequest) as err:
        frames.parse_receipt({"type": "receipt.read", "conversation": 3, "seq": bad})

    assert err.value.details == {"field": "seq"}


def test_a_receipt_is_parsed_with_its_kind() -> None:
    read = frames.parse_receipt({"type": "receipt.read", "conversation": 3, "seq": MAX_SEQ})
    delivered = frames.parse_receipt({"type": "receipt.delivered", "conversation": 3, "seq": 0})

    assert read == frames.Receipt(3, MAX_SEQ, read=True)
    assert delivered == frames.Receipt(3, 0, read=False)


@pytest.mark.parametrize("bad", ["away", "offline", "", None, 1, ["busy"], "BUSY"])
def test_a_status_must_be_available_or_busy(bad: object) -> None:
    with pytest.raises(BadRequest) as err:
        frames.parse_status({"type": "status.set", "status": bad})

    assert err.value.details == {"field": "status"}


@pytest.mark.parametrize("status", ["available", "busy"])
def test_a_status_is_parsed(status: str) -> None:
    assert frames.parse_status({"type": "status.set", "status": status}).status == status


@pytest.mark.parametrize(
    ("parse", "frame", "field"),
    [
        (lambda f: frames.parse_presence_subscribe(f, limit=3), {"users": None}, "users"),
        (lambda f: frames.parse_presence_subscribe(f, limit=3), {"users": [1, 0]}, "users"),
        (lambda f: frames.parse_presence_subscribe(f, limit=3), {"users": [1, 2, 3, 4]}, "users"),
        (frames.parse_edit, {"conversation": 1, "message": 2, "body": 7}, "body"),
        (frames.parse_delete, {"conversation": 1, "message": "2"}, "message"),
        (frames.parse_activity, {"idle": 1}, "idle"),
        (frames.parse_fetch, {"conversation": 1, "limit": "10"}, "limit"),
    ],
)
def test_other_frames_of_the_wrong_shape_name_the_field(
    parse: Callable[[dict[str, Any]], object], frame: dict[str, Any], field: str
) -> None:
    with pytest.raises(BadRequest) as err:
        parse(frame)

    assert (err.value.details or {}).get("field") == field


def test_presence_subscribe_keeps_the_first_of_repeated_ids() -> None:
    request = frames.parse_presence_subscribe({"users": [5, 2, 5, 9, 2]}, limit=10)

    assert request.users == [5, 2, 9]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"type": "ping", "conversation": 1', "The frame is not valid JSON."),
        ('{"type": "ping", "conversation": NaN}', "conversation must be a non-negative integer."),
        ('{"type": "ping", "conversation": 1e400}', "conversation must be a non-negative integer."),
        (
            '{"type": "ping", "conversation": 123456789012345678901234567890}',
            "conversation must be a non-negative integer.",
        ),
        ('{"type": "ping", "ref": "\\ud800"}', "Strings must be valid Unicode text."),
        ("[1, 2]", "A frame must be a JSON object."),
    ],
)
def test_what_orjson_refuses_is_refused_as_before(text: str, message: str) -> None:
    """Tried: text orjson does not read (a cut frame, NaN, a number past a double, a lone
    surrogate escape) and an integer past 64 bits (a float from orjson): each gets the
    error the json module's reading gave, naming the field where there is one."""
    with pytest.raises((BadRequest, frames.BadFrame)) as caught:
        envelope = frames.parse_envelope(text)
        frames.parse_ping(envelope.data)
    error = caught.value
    if isinstance(error, frames.BadFrame):
        error = error.error
    assert isinstance(error, BadRequest) and error.message == message


def test_escaped_surrogate_pairs_are_read_as_their_character() -> None:
    """Tried: an emoji written as a JSON surrogate-pair escape and as itself: both read."""
    escaped = frames.parse_envelope('{"type": "ping", "ref": "\\ud83d\\ude00"}')
    plain = frames.parse_envelope('{"type": "ping", "ref": "😀"}')
    assert escaped.ref == plain.ref == "😀"
