"""Blocking and delete for me at the consumer: typing and presence filters, live frames."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async

from accounts.models import User
from messaging import services
from messaging.models import Conversation
from tests.messaging.test_consumers import Client, run, token_for

pytestmark = pytest.mark.django_db(transaction=True)


def contacts(a: User, b: User) -> Conversation:
    chat, _ = services.create_direct_conversation(user=a, other_user_id=b.pk)
    services.accept_request(user=b, conversation_id=chat.pk)
    return chat


async def type_in(client: Client, conversation: int) -> None:
    await client.ws.send_to(
        text_data=json.dumps({"type": "typing.start", "conversation": conversation})
    )


def test_typing_is_filtered_both_ways_in_groups_for_a_blocked_pair(
    ana: User, bo: User, cy: User
) -> None:
    team = services.create_group(creator=ana, title="Team", member_ids=[bo.pk, cy.pk])
    services.block_user(user=ana, other_user_id=bo.pk)
    tokens = token_for(ana), token_for(bo), token_for(cy)

    async def scenario() -> tuple[dict[str, Any], ...]:
        a, b, c = Client(tokens[0]), Client(tokens[1]), Client(tokens[2])
        for client in (a, b, c):
            await client.open()
        await type_in(b, team.pk)
        cy_saw_bo = await c.until("typing")  # Bo's typing reached the group
        await type_in(a, team.pk)
        cy_saw_ana = await c.until("typing")
        await type_in(c, team.pk)
        ana_saw = await a.until("typing")  # Bo's came first, and was filtered
        bo_saw = await b.until("typing")  # Ana's came first, and was filtered
        for client in (a, b, c):
            await client.close()
        return cy_saw_bo, cy_saw_ana, ana_saw, bo_saw

    cy_saw_bo, cy_saw_ana, ana_saw, bo_saw = run(scenario)
    assert (cy_saw_bo["user"], cy_saw_ana["user"]) == (bo.pk, ana.pk)
    assert ana_saw["user"] == cy.pk
    assert bo_saw["user"] == cy.pk


def test_block_and_unblock_change_presence_live_and_refuse_sends(ana: User, bo: User) -> None:
    chat = contacts(ana, bo)
    tokens = token_for(ana), token_for(bo)

    async def scenario() -> dict[str, Any]:
        a, b = Client(tokens[0]), Client(tokens[1])
        await a.open()
        await b.open()
        seen: dict[str, Any] = {}
        seen["before"] = await a.ask(type="presence.subscribe", users=[bo.pk])
        await database_sync_to_async(services.block_user)(user=bo, other_user_id=ana.pk)
        seen["blocker_told"] = await b.until("block.updated")
        seen["blocked_sees"] = await a.until("presence.changed")
        seen["send"] = await a.ask(
            type="message.send",
            conversation=chat.pk,
            client_msg_id=str(uuid.uuid4()),
            body="hello?",
        )
        seen["resubscribe"] = await a.ask(type="presence.subscribe", users=[bo.pk])
        await database_sync_to_async(services.unblock_user)(user=bo, other_user_id=ana.pk)
        seen["unblocker_told"] = await b.until("block.updated")
        seen["restored"] = await a.until("presence.changed")
        await a.close()
        await b.close()
        return seen

    seen = run(scenario)
    assert seen["before"]["users"][0]["state"] == "online"
    assert seen["blocker_told"] == {"type": "block.updated", "user": ana.pk, "blocked": True}
    assert seen["blocked_sees"] == {
        "type": "presence.changed",
        "user": bo.pk,
        "state": "offline",
        "last_seen": None,
    }
    assert seen["send"]["type"] == "error"
    assert seen["send"]["code"] == "cannot_send"
    assert seen["resubscribe"]["users"] == [{"id": bo.pk, "state": "offline", "last_seen": None}]
    assert seen["unblocker_told"]["blocked"] is False
    assert (seen["restored"]["user"], seen["restored"]["state"]) == (bo.pk, "online")


def test_delete_for_me_reaches_every_device_of_the_user(ana: User, bo: User) -> None:
    chat = contacts(ana, bo)
    message = services.send_message(
        sender=ana, conversation_id=chat.pk, client_msg_id=uuid.uuid4(), body="oops"
    ).message
    tokens = token_for(bo), token_for(bo)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        phone, laptop = Client(tokens[0], "phone"), Client(tokens[1], "laptop")
        await phone.open()
        await laptop.open()
        await database_sync_to_async(services.hide_message)(
            user=bo, conversation_id=chat.pk, message_id=message.pk
        )
        frames = await phone.until("message.hidden"), await laptop.until("message.hidden")
        await phone.close()
        await laptop.close()
        return frames

    on_phone, on_laptop = run(scenario)
    assert on_phone == on_laptop
    assert (on_phone["conversation"], on_phone["message"]) == (chat.pk, message.pk)
