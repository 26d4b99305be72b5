"""Blocking and delete for me end to end over two gateways, through the reference client."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

import chatclient
from accounts.models import User
from bench.harness import Deployment
from messaging import services
from tests.e2e.wsclient import bearer, drive, open_socket

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def is_presence(user: User, state: str) -> Any:
    return (
        lambda f: f["type"] == "presence.changed" and f["user"] == user.pk and f["state"] == state
    )


def test_a_block_hides_presence_and_typing_refuses_sends_and_unblock_restores(
    deployment: Deployment, ana: User, bo: User
) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    services.accept_request(user=bo, conversation_id=chat.pk)
    tok = {u.username: bearer(u) for u in (ana, bo)}
    http = deployment.http_urls

    async def scenario() -> None:
        ana_ws, _ = await open_socket(deployment.urls[0], tok["ana"])
        bo_phone, _ = await open_socket(deployment.urls[1], tok["bo"], "phone")
        bo_laptop, _ = await open_socket(deployment.urls[0], tok["bo"], "laptop")
        snap = await ana_ws.request(type="presence.subscribe", users=[bo.pk])
        assert snap["users"][0]["state"] == "online"

        await chatclient.block(http[1], tok["bo"], ana.pk)
        for device in (bo_phone, bo_laptop):
            told = await device.until(lambda f: f["type"] == "block.updated")
            assert told == {"type": "block.updated", "user": ana.pk, "blocked": True}
        gone = await ana_ws.until(lambda f: f["type"] == "presence.changed")
        assert (gone["state"], gone["last_seen"]) == ("offline", None)
        assert [b["user"]["id"] for b in await chatclient.list_blocks(http[0], tok["bo"])] == [
            ana.pk
        ]

        refused = await ana_ws.request(
            type="message.send", conversation=chat.pk, client_msg_id=str(uuid.uuid4()), body="hi"
        )
        assert (refused["type"], refused["code"]) == ("error", "cannot_send")
        # Ana's typing is dropped at Bo's gateway while the block lasts...
        await ana_ws.send(type="typing.start", conversation=chat.pk)
        await ana_ws.request(type="ping")  # relayed (frames are handled in order)

        await chatclient.unblock(http[0], tok["bo"], ana.pk)
        await bo_phone.until(lambda f: f["type"] == "block.updated" and not f["blocked"])
        await ana_ws.until(is_presence(bo, "online"))
        # ...and shown again after: the first typing frame Bo gets is the later `stop`.
        await ana_ws.send(type="typing.stop", conversation=chat.pk)
        await bo_phone.until(lambda f: f["type"] == "typing")
        typing = [f for f in bo_phone.seen if f["type"] == "typing"]
        assert [(f["user"], f["state"]) for f in typing] == [(ana.pk, "stop")]
        sent = await ana_ws.request(
            type="message.send", conversation=chat.pk, client_msg_id=str(uuid.uuid4()), body="hi"
        )
        assert sent["type"] == "message.sent"

    drive(scenario)


def test_delete_for_me_reaches_the_users_devices_on_both_gateways_and_syncs_later(
    deployment: Deployment, ana: User, bo: User
) -> None:
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    message = services.send_message(
        sender=ana, conversation_id=chat.pk, client_msg_id=uuid.uuid4(), body="oops"
    ).message
    tok = {u.username: bearer(u) for u in (ana, bo)}
    http = deployment.http_urls

    async def scenario() -> None:
        phone, _ = await open_socket(deployment.urls[0], tok["bo"], "phone")
        laptop, _ = await open_socket(deployment.urls[1], tok["bo"], "laptop")
        ana_ws, _ = await open_socket(deployment.urls[1], tok["ana"])

        tablet = chatclient.ChatClient(
            deployment.urls[1:], chatclient.bearer_auth(tok["bo"]), name="bo-tablet"
        )
        await tablet.connect()
        try:
            heard = asyncio.create_task(
                tablet.wait_for(lambda u: u["type"] == "message.hidden", timeout=10)
            )
            await asyncio.sleep(0)  # the wait is registered before the hide
            hidden = await chatclient.hide(http[0], tok["bo"], chat.pk, message.pk)
            for device in (phone, laptop):
                frame = await device.until(lambda f: f["type"] == "message.hidden")
                assert frame == {"type": "message.hidden", **hidden}
            assert (await heard)["message"] == message.pk
            assert tablet.hidden == {(chat.pk, message.pk)}
        finally:
            await tablet.close()
        assert await ana_ws.quiet() == []  # others see nothing change

        # A device that was offline catches up from its cursor; history leaves it out.
        found, cursor = await chatclient.hidden_since(http[1], tok["bo"], 0)
        assert [(h["conversation"], h["message"]) for h in found] == [(chat.pk, message.pk)]
        assert await chatclient.hidden_since(http[1], tok["bo"], cursor) == ([], cursor)
        batch = await laptop.request(type="messages.fetch", conversation=chat.pk, after=0)
        assert batch["messages"] == []
        theirs = await ana_ws.request(type="messages.fetch", conversation=chat.pk, after=0)
        assert [m["body"] for m in theirs["messages"]] == ["oops"]

    drive(scenario)
