"""The consumer in process: the real ASGI app, auth and channel layer, no server process.

Faster than the end-to-end tests (tests/e2e/test_gateway.py), which run the same frames
through uvicorn: these check the table from frame type to call, the answers and the
error frames, each frame against its wire definition.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.db import connection

from accounts.models import User
from accounts.tokens import issue_pair
from chatsite.asgi import application
from chatsite.gateway.supervisor import supervisor
from messaging import services
from messaging.consumers import ChatConsumer
from messaging.models import Membership
from tests.wirecheck import check_frame

pytestmark = pytest.mark.django_db(transaction=True)


class Client:
    """A WebSocket of one user on the in-process application."""

    def __init__(self, token: str, device: str = "") -> None:
        path = "/ws/v1/" + (f"?device={device}" if device else "")
        self.ws = WebsocketCommunicator(
            application, path, headers=[(b"authorization", f"Bearer {token}".encode())]
        )

    async def open(self) -> dict[str, Any]:
        connected, _ = await self.ws.connect()
        assert connected
        return await self.next()

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        return check_frame(json.loads(await self.ws.receive_from(timeout)))

    async def until(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        while True:
            frame = await self.next(timeout)
            if frame["type"] == kind:
                return frame

    async def ask(self, **frame: Any) -> dict[str, Any]:
        """Send a frame with a ref; return the frame that answers it."""
        ref = uuid.uuid4().hex[:8]
        await self.ws.send_to(text_data=json.dumps({**frame, "ref": ref}))
        while True:
            answer = await self.next()
            if answer.get("ref") == ref:
                return answer

    async def close(self) -> None:
        await self.ws.disconnect()


def token_for(user: User) -> str:
    token = issue_pair(user)["access"]
    connection.close()  # the consumer's threads use their own connections
    return token


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(scenario(), 30))


def test_a_message_sent_is_answered_and_reaches_the_other_member(ana: User, bo: User) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    tokens = token_for(ana), token_for(bo)

    async def scenario() -> tuple[dict[str, Any], ...]:
        a, b = Client(tokens[0], device="phone"), Client(tokens[1])
        ready = await a.open()
        await b.open()
        cmid = str(uuid.uuid4())
        sent = await a.ask(
            type="message.send", conversation=chat.pk, client_msg_id=cmid, body="hi @bo"
        )
        created = await b.until("message.created")
        replay = await a.ask(
            type="message.send", conversation=chat.pk, client_msg_id=cmid, body="hi @bo"
        )
        await a.close()
        await b.close()
        return ready, sent, created, replay

    ready, sent, created, replay = run(scenario)
    assert ready["device"] == "phone" and [c["id"] for c in ready["conversations"]] == [chat.pk]
    assert sent["type"] == "message.sent" and sent["message"]["seq"] == 1
    assert sent["message"]["mentions"] == [bo.pk]
    assert created["message"] == sent["message"]
    assert replay["message"] == sent["message"]  # the same message, nothing new


def test_the_sending_socket_gets_its_message_once_and_the_senders_other_devices_get_it(
    ana: User, bo: User
) -> None:
    # Tried: Ana sends from her phone while her laptop is connected too. The phone's
    # `message.sent` carries the message, so the conversation's `message.created` skips
    # that socket (one frame less per message); the laptop and Bo get it.
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    services.accept_request(user=bo, conversation_id=chat.pk)
    tokens = token_for(ana), token_for(bo)

    async def scenario() -> tuple[Any, ...]:
        phone, laptop = Client(tokens[0], device="phone"), Client(tokens[0], device="laptop")
        b = Client(tokens[1])
        for client in (phone, laptop, b):
            await client.open()
        sent = await phone.ask(
            type="message.send", conversation=chat.pk, client_msg_id=str(uuid.uuid4()), body="1"
        )
        on_laptop = await laptop.until("message.created")
        on_bo = await b.until("message.created")
        answer = await b.ask(
            type="message.send", conversation=chat.pk, client_msg_id=str(uuid.uuid4()), body="2"
        )
        # Everything the phone got after its answer, up to Bo's message (published after
        # Ana's, on the same group, so an echo of Ana's would have come first).
        seen: list[dict[str, Any]] = []
        while not seen or seen[-1].get("message", {}).get("id") != answer["message"]["id"]:
            seen.append(await phone.next())
        for client in (phone, laptop, b):
            await client.close()
        return sent, on_laptop, on_bo, seen

    sent, on_laptop, on_bo, seen = run(scenario)
    assert on_laptop["message"] == sent["message"] == on_bo["message"]
    created = [f["message"]["seq"] for f in seen if f["type"] == "message.created"]
    assert created == [2]  # Bo's message; Ana's own never came back to the phone


@pytest.mark.parametrize(
    ("frame", "code", "field"),
    [
        ("not json", "bad_request", None),
        ("[1, 2]", "bad_request", None),
        ('{"no": "type"}', "bad_request", None),
        ('{"type": "dance"}', "unknown_type", None),
        ('{"type": "ping", "ref": 5}', "bad_request", None),
        ('{"type": "message.send", "conversation": "3"}', "bad_request", "conversation"),
        (
            '{"type": "message.send", "conversation": 3, "client_msg_id": 4}',
            "bad_request",
            "client_msg_id",
        ),
        ('{"type": "messages.fetch", "conversation": 1, "after": -1}', "bad_request", "after"),
        ('{"type": "receipt.read", "conversation": 1, "seq": true}', "bad_request", "seq"),
        ('{"type": "activity", "idle": "yes"}', "bad_request", "idle"),
        ('{"type": "presence.subscribe", "users": [0]}', "bad_request", "users"),
        ('{"type": "typing.start", "conversation": 99999}', "forbidden", None),
    ],
)
def test_bad_frames_get_an_error_frame_and_the_socket_stays_open(
    ana: User, frame: str, code: str, field: str | None
) -> None:
    token = token_for(ana)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        client = Client(token)
        await client.open()
        await client.ws.send_to(text_data=frame)
        error = await client.next()
        still = await client.ask(type="ping")
        await client.close()
        return error, still

    error, still = run(scenario)
    assert (error["type"], error["code"]) == ("error", code)
    assert error.get("details", {}).get("field") == field
    assert still["type"] == "pong"


def test_receipts_are_coalesced_into_one_write_and_one_event(
    ana: User, bo: User, settings: Any
) -> None:
    settings.CHAT_RECEIPT_COALESCE = 0.3
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    services.accept_request(user=bo, conversation_id=chat.pk)  # strangers: a request
    for body in ("one", "two", "three"):
        services.send_message(
            sender=ana, conversation_id=chat.pk, client_msg_id=uuid.uuid4(), body=body
        )
    tokens = token_for(ana), token_for(bo)

    async def scenario() -> list[dict[str, Any]]:
        a, b = Client(tokens[0]), Client(tokens[1])
        await a.open()
        await b.open()
        for seq, kind in ((1, "receipt.delivered"), (2, "receipt.read"), (3, "receipt.delivered")):
            await b.ws.send_to(
                text_data=json.dumps({"type": kind, "conversation": chat.pk, "seq": seq})
            )
        updates = [await a.until("receipt.updated")]
        while updates[-1]["read_seq"] < 2:
            updates.append(await a.until("receipt.updated"))
        await a.ask(type="ping")
        await a.close()
        await b.close()
        return updates

    updates = run(scenario)
    # The first receipt is written at once, the next two together 0.3 s later.
    assert [(u["user"], u["delivered_seq"], u["read_seq"]) for u in updates] == [
        (bo.pk, 1, 0),
        (bo.pk, 3, 2),
    ]
    member = Membership.objects.get(conversation=chat, user=bo)
    assert (member.delivered_seq, member.read_seq) == (3, 2)


def test_a_socket_gets_no_attribute_after_it_was_created(ana: User, bo: User) -> None:
    # Tried: a socket that connects and sends receipts, typing, presence, activity, ping
    # and sync frames, and gets a message. Every attribute it ends up with must already
    # be set by `FrameSocket.__init__`: one set later makes CPython give every socket a
    # dict of its own during a burst of handshakes (832 bytes against 296, measured).
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    services.accept_request(user=bo, conversation_id=chat.pk)
    tokens = token_for(ana), token_for(bo)

    async def scenario() -> list[set[str]]:
        a, b = Client(tokens[0]), Client(tokens[1])
        await a.open()
        await b.open()
        await b.ask(
            type="message.send", conversation=chat.pk, body="hi", client_msg_id=str(uuid.uuid4())
        )
        await a.until("message.created")
        for frame in (
            {"type": "receipt.read", "conversation": chat.pk, "seq": 1},
            {"type": "typing.start", "conversation": chat.pk},
            {"type": "activity", "idle": True},
        ):
            await a.ws.send_to(text_data=json.dumps(frame))
        await a.ask(type="presence.subscribe", users=[bo.pk])
        await a.ask(type="sync")
        await a.ask(type="ping")
        names = [set(vars(s)) for s in supervisor.sockets if isinstance(s, ChatConsumer)]
        await a.close()
        await b.close()
        return names

    names = run(scenario)
    assert len(names) == 2
    fresh = set(vars(ChatConsumer()))
    for later in names:
        assert later - fresh == set()


def test_typing_reaches_the_other_members_but_not_the_typist(ana: User, bo: User) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    tokens = token_for(ana), token_for(bo)

    async def scenario() -> tuple[dict[str, Any], list[str]]:
        a, b = Client(tokens[0]), Client(tokens[1])
        await a.open()
        await b.open()
        await a.ws.send_to(text_data=json.dumps({"type": "typing.start", "conversation": chat.pk}))
        seen = await b.until("typing")
        own: list[str] = []
        marker = await a.ask(type="ping")
        own.append(marker["type"])
        await a.close()
        await b.close()
        return seen, own

    seen, own = run(scenario)
    assert seen == {"type": "typing", "conversation": chat.pk, "user": ana.pk, "state": "start"}
    assert own == ["pong"]  # the typist's own socket got no typing frame first


def test_pong_carries_the_log_position_and_sync_the_snapshot(ana: User, bo: User) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    services.send_message(sender=bo, conversation_id=chat.pk, client_msg_id=uuid.uuid4(), body="x")
    token = token_for(ana)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        client = Client(token)
        await client.open()
        pong = await client.ask(type="ping")
        state = await client.ask(type="sync")
        batch = await client.ask(type="messages.fetch", conversation=chat.pk, after=0)
        await client.close()
        return pong, state, batch

    pong, state, batch = run(scenario)
    assert pong["log_position"] == 1
    assert [(c["id"], c["unread"]) for c in state["conversations"]] == [(chat.pk, 1)]
    assert (batch["upto"], [m["body"] for m in batch["messages"]]) == (1, ["x"])


def test_a_ping_naming_a_conversation_gets_its_members_marker_sum(
    ana: User, bo: User, cy: User
) -> None:
    """Tried: a ping naming a chat where both members read (the sum of both markers of
    both), one where the other person has read but not accepted Ana's request (counts
    0, as the member list shows them), one she is not in (no `markers`, the pong still
    comes), no conversation (no `markers`), and a conversation that is not a number
    (`bad_request`, with the ref)."""
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    first = services.send_message(
        sender=bo, conversation_id=chat.pk, client_msg_id=uuid.uuid4(), body="x"
    ).message
    services.mark_read(user=ana, conversation_id=chat.pk, seq=first.seq)
    request, _ = services.create_direct_conversation(user=ana, other_user_id=cy.pk)
    hi = services.send_message(
        sender=ana, conversation_id=request.pk, client_msg_id=uuid.uuid4(), body="hi"
    ).message
    services.mark_read(user=cy, conversation_id=request.pk, seq=hi.seq)  # not accepted
    others, _ = services.create_direct_conversation(user=bo, other_user_id=cy.pk)
    token = token_for(ana)

    async def scenario() -> list[dict[str, Any]]:
        client = Client(token)
        await client.open()
        answers = [
            await client.ask(type="ping", conversation=conversation)
            for conversation in (chat.pk, request.pk, others.pk)
        ]
        answers.append(await client.ask(type="ping"))
        answers.append(await client.ask(type="ping", conversation="x"))
        await client.close()
        return answers

    both, pending, not_mine, plain, bad = run(scenario)
    # Bo sent (read and delivered 1), Ana read it (1 and 1).
    assert both["markers"] == {"conversation": chat.pk, "sum": 4}
    assert pending["markers"] == {"conversation": request.pk, "sum": 2}  # Ana's own only
    assert not_mine["type"] == plain["type"] == "pong"
    assert "markers" not in not_mine and "markers" not in plain
    assert not_mine["log_position"] == plain["log_position"] == 2
    assert (bad["type"], bad["code"], bad["details"]) == (
        "error",
        "bad_request",
        {"field": "conversation"},
    )


def test_a_socket_without_credentials_is_closed_4401() -> None:
    async def scenario() -> Any:
        ws = WebsocketCommunicator(application, "/ws/v1/")
        connected, _ = await ws.connect()
        assert connected
        return await ws.receive_output(5)

    closed = run(scenario)
    assert closed == {"type": "websocket.close", "code": 4401}


def test_a_closing_socket_cleans_up_without_a_hop_to_channels_database_thread(
    ana: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tried: a socket that opens and closes. Its presence entry is gone afterwards, and
    Channels' `aclose_old_connections` (a hop to its one database thread, which the
    socket never uses) was not called."""
    import channels.generic.websocket

    from presence.store import get_store

    hops: list[str] = []

    async def recorded() -> None:
        hops.append("aclose_old_connections")

    monkeypatch.setattr(channels.generic.websocket, "aclose_old_connections", recorded)
    token = token_for(ana)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        client = Client(token)
        await client.open()
        while_open = (await get_store().connections([ana.pk]))[ana.pk]
        await client.close()
        for _ in range(100):  # the consumer's cleanup ends after the close returns
            after = (await get_store().connections([ana.pk]))[ana.pk]
            if not after:
                break
            await asyncio.sleep(0.02)
        return while_open, after

    while_open, after = run(scenario)
    assert len(while_open) == 1 and after == {}
    assert hops == []
