"""The WebSocket protocol's AsyncAPI document: made from the wire definitions, served, kept."""

import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import Client

from messaging import asyncapi, frames, wire
from tests.wirecheck import check_frame

DOCS = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.json"


def test_the_document_names_every_frame_in_both_directions() -> None:
    document = asyncapi.document()
    messages = document["channels"]["socket"]["messages"]

    assert document["asyncapi"] == "3.0.0"
    assert {m["name"] for m in messages.values()} == set(wire.FRAMES) | set(frames.CLIENT_FRAMES)
    received = document["operations"]["receiveServerFrames"]["messages"]
    assert len(received) == len(wire.FRAMES)
    schemas = document["components"]["schemas"]
    pong = schemas["PongFrame"]
    assert pong["required"] == ["type", "ref", "server_time"]  # log_position is optional
    assert pong["additionalProperties"] is False
    assert schemas["MessagePayload"]["properties"]["mentions"] == {
        "type": "array",
        "items": {"type": "integer"},
    }


def test_a_frame_that_drifts_from_its_definition_is_caught() -> None:
    good = {"type": "pong", "ref": "r1", "server_time": "2026-11-22T10:00:00.000000Z"}
    assert check_frame(good) == good
    for bad in (
        {**good, "extra": 1},  # a field the definition does not have
        {"type": "pong", "ref": "r1"},  # a required field missing
        {**good, "log_position": "7"},  # a field of another type
        {"type": "no.such.frame"},
    ):
        with pytest.raises(AssertionError):
            check_frame(bad)


def test_the_committed_document_is_the_current_one(capsys: pytest.CaptureFixture[str]) -> None:
    call_command("asyncapi")
    assert json.loads(capsys.readouterr().out) == json.loads(DOCS.read_text()), (
        "docs/asyncapi.json is stale: run `python manage.py asyncapi > docs/asyncapi.json`"
    )


@pytest.mark.django_db
def test_the_document_is_served_and_rendered_without_signing_in(client: Client) -> None:
    served = client.get("/api/asyncapi.json")
    assert served.status_code == 200
    assert served.json() == json.loads(json.dumps(asyncapi.document()))

    page = client.get("/api/docs/websocket")
    assert page.status_code == 200
    html = page.content.decode()
    for kind in ("message.send", "session.ready", "conversation.updated", "presence.changed"):
        assert f"<code>{kind}</code>" in html
    assert "'unsafe-inline'" not in page["Content-Security-Policy"]
