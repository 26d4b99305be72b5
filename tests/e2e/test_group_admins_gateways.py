"""Group admins end to end over two gateways, through the reference client and raw sockets."""

from __future__ import annotations

import asyncio
import io
import uuid

import pytest
from PIL import Image

import chatclient
from accounts.models import User
from bench.harness import Deployment
from chatclient import groups
from messaging import services
from tests.e2e.wsclient import bearer, drive, open_socket

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (120, 80), "teal").save(buffer, format="PNG")
    return buffer.getvalue()


def test_settings_and_roles_made_on_one_gateway_converge_live_and_by_a_cold_sync(
    deployment: Deployment, ana: User, bo: User, cy: User
) -> None:
    group = services.create_group(creator=ana, title="Board", member_ids=[bo.pk, cy.pk])
    tok = {u.username: bearer(u) for u in (ana, bo, cy)}
    http = deployment.http_urls

    async def scenario() -> None:
        bo_ws, _ = await open_socket(deployment.urls[1], tok["bo"], "phone")
        cy_ws, _ = await open_socket(deployment.urls[0], tok["cy"], "laptop")
        cy_client = chatclient.ChatClient(
            deployment.urls[1:], chatclient.bearer_auth(tok["cy"]), name="cy-tablet"
        )
        await cy_client.connect()
        try:
            pictured = asyncio.create_task(
                cy_client.wait_for(
                    lambda u: u["type"] == "conversation.updated"
                    and (u.get("conversation") or {}).get("picture_url") is not None,
                    timeout=15,
                )
            )
            await asyncio.sleep(0)  # the wait is registered before the changes
            # Ana (gateway 0's REST) makes it an announcement group with Bo as admin.
            await groups.update_group(
                http[0], tok["ana"], group.pk, description="Board news", post_policy="admins"
            )
            await groups.set_role(http[0], tok["ana"], group.pk, bo.pk, "admin")
            await groups.set_picture(http[1], tok["ana"], group.pk, _png())

            # Bo, on the other gateway, hears each change and his own new role.
            role = await bo_ws.until(
                lambda f: f["type"] == "conversation.updated" and f["reason"] == "role"
            )
            assert role["conversation"]["role"] == "admin"
            await bo_ws.until(
                lambda f: f["type"] == "conversation.updated"
                and f["reason"] == "settings"
                and f["conversation"]["picture_url"] is not None
            )
            # Cy's reference client converges on the settings.
            await pictured
            info = cy_client.conversation(group.pk)
            assert info is not None
            assert (info["description"], info["post_policy"]) == ("Board news", "admins")

            # Cy may not post; Bo (admin) may, and Cy sees it.
            refused = await cy_ws.request(
                type="message.send", conversation=group.pk, client_msg_id=str(uuid.uuid4()),
                body="me too",
            )  # fmt: skip
            assert (refused["type"], refused["code"]) == ("error", "admins_only")
            sent = await bo_ws.request(
                type="message.send", conversation=group.pk, client_msg_id=str(uuid.uuid4()),
                body="Meeting at 10",
            )  # fmt: skip
            assert sent["type"] == "message.sent"
            await cy_client.wait_for_message(lambda m: m["body"] == "Meeting at 10", timeout=10)
        finally:
            await cy_client.close()

        # A cold device of Cy syncs the log from 0: every change is there, in order.
        cold, ready = await open_socket(deployment.urls[1], tok["cy"], "cold")
        mine = next(c for c in ready["conversations"] if c["id"] == group.pk)
        assert (mine["role"], mine["post_policy"], mine["description"]) == (
            "member",
            "admins",
            "Board news",
        )
        assert mine["picture_url"] and mine["picture_url"].startswith("/api/v1/avatars/")
        batch = await cold.request(type="messages.fetch", conversation=group.pk, after=0)
        events = [
            (m["system"]["event"], m["system"].get("role") or m["system"].get("post_policy"))
            for m in batch["messages"]
            if m["kind"] == "system"
        ]
        assert events == [
            ("created", None),
            ("description", None),
            ("post_policy", "admins"),
            ("role", "admin"),
            ("picture", None),
        ]
        assert batch["messages"][-1]["body"] == "Meeting at 10"

    drive(scenario)
