"""The gateway's frames end to end: two real gateway processes, real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from accounts.models import User
from bench.harness import Deployment
from chatclient import ChatClient, bearer_auth
from messaging import services
from messaging.models import Membership
from tests.conftest import queries_waiting_on_locks
from tests.e2e.conftest import MakeDeployment, fanout_lost, table_locked
from tests.e2e.wsclient import bearer, drive, in_thread, open_socket

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def users_of(scope: dict[str, Any]) -> list[User]:
    return [v for v in scope.values() if isinstance(v, User)]


def text(body: str, conversation: int) -> dict[str, Any]:
    return {
        "type": "message.send",
        "conversation": conversation,
        "client_msg_id": str(uuid.uuid4()),
        "body": body,
    }


def test_session_ready_then_send_reaches_the_other_member_on_the_other_gateway(
    deployment: Deployment, ana: User, bo: User
) -> None:
    conversation, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)

    tok = {u.username: bearer(u) for u in users_of(locals())}

    async def scenario() -> None:
        a, ready = await open_socket(deployment.urls[0], tok["ana"], device="phone-1")
        b, _ = await open_socket(deployment.urls[1], tok["bo"])
        laptop, _ = await open_socket(deployment.urls[1], tok["ana"], device="laptop-1")
        assert ready["user"] == {
            "id": ana.pk,
            "username": "ana",
            "display_name": "Ana",
            "avatar_url": None,
        }
        assert ready["device"] == "phone-1"
        assert ready["heartbeat_interval"] > 0 and ready["server_time"].endswith("Z")
        assert [c["id"] for c in ready["conversations"]] == [conversation.pk]
        assert ready["conversations"][0]["title"] == "Bo"

        sent = await a.request(**text("hello bo", conversation.pk))
        received = await b.until(lambda f: f["type"] == "message.created")

        assert sent["type"] == "message.sent" and sent["message"]["seq"] == 1
        assert received["message"] == sent["message"]
        assert "member_seq" not in received  # internal, stripped by the gateway
        # Ana's other device gets her message; the sending socket had it in `message.sent`
        # and does not get it again: Bo's answer, published after it on the same group, is
        # the first `message.created` it sees.
        own_copy = await laptop.until(lambda f: f["type"] == "message.created")
        assert own_copy["message"] == sent["message"]
        answer = await b.request(**text("hello ana", conversation.pk))
        await a.until(lambda f: f.get("message", {}).get("id") == answer["message"]["id"])
        created = [f["message"]["seq"] for f in a.seen if f["type"] == "message.created"]
        assert created == [2]

    drive(scenario)


def test_replay_over_both_gateways_answers_the_same_message(
    deployment: Deployment, ana: User, bo: User
) -> None:
    conversation, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    frame = text("once", conversation.pk)

    tok = {u.username: bearer(u) for u in users_of(locals())}

    async def scenario() -> None:
        one, _ = await open_socket(deployment.urls[0], tok["ana"])
        two, _ = await open_socket(deployment.urls[1], tok["ana"])
        replies = await asyncio.gather(one.request(**frame), two.request(**frame))
        assert {r["type"] for r in replies} == {"message.sent"}
        assert {r["message"]["id"] for r in replies} == {replies[0]["message"]["id"]}
        assert {r["message"]["seq"] for r in replies} == {1}

    drive(scenario)
    assert Membership.objects.get(conversation=conversation, user=ana).read_seq == 1


def test_fetch_edit_delete_and_errors_answer_with_the_ref(
    deployment: Deployment, ana: User, bo: User
) -> None:
    conversation, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)

    tok = {u.username: bearer(u) for u in users_of(locals())}

    async def scenario() -> None:
        a, _ = await open_socket(deployment.urls[0], tok["ana"])
        b, _ = await open_socket(deployment.urls[1], tok["bo"])
        first = (await a.request(**text("one", conversation.pk)))["message"]
        await a.request(**text("two", conversation.pk))

        edited = await a.request(
            type="message.edit", conversation=conversation.pk, message=first["id"], body="uno"
        )
        assert edited["type"] == "message.updated" and edited["message"]["version"] == 3
        deleted = await a.request(
            type="message.delete", conversation=conversation.pk, message=first["id"]
        )
        assert deleted["message"]["deleted"] is True and deleted["message"]["body"] == ""

        batch = await b.request(type="messages.fetch", conversation=conversation.pk, after=2)
        assert batch["type"] == "messages.batch"
        assert [(m["id"], m["version"]) for m in batch["messages"]] == [(first["id"], 4)]
        assert (batch["upto"], batch["has_more"]) == (4, False)
        older = await b.request(type="messages.fetch", conversation=conversation.pk, before=2)
        assert [m["seq"] for m in older["messages"]] == [1] and older["upto"] is None

        not_hers = await b.request(
            type="message.edit", conversation=conversation.pk, message=first["id"], body="x"
        )
        assert (not_hers["type"], not_hers["code"]) == ("error", "forbidden")
        too_long = await a.request(**text("x" * 100_001, conversation.pk))
        assert too_long["code"] == "message_too_long" and "client_msg_id" in too_long
        empty = await a.request(**text("   ", conversation.pk))
        assert empty["code"] == "empty_message"
        bad = await a.request(type="messages.fetch", conversation=conversation.pk, limit=500)
        assert bad["code"] == "bad_request" and bad["details"] == {"field": "limit"}
        missing = await a.request(type="message.send", conversation=conversation.pk, body="x")
        assert missing["details"] == {"field": "client_msg_id"}
        unknown = await a.request(type="message.explode")
        assert unknown["code"] == "unknown_type"
        pong = await a.request(type="ping")
        assert pong["type"] == "pong"

    drive(scenario)


def test_a_reaction_reaches_every_device_of_every_member_live_and_by_a_cold_sync(
    deployment: Deployment, ana: User, bo: User, cy: User
) -> None:
    """Bo reacts on gateway 1; Ana's two devices (one per gateway) and Cy see it live with
    the new version; a device that was away catches up with `after=`; a reaction frame
    with words instead of an emoji is answered with an error and changes nothing."""
    group = services.create_group(creator=ana, title="Lunch", member_ids=[bo.pk, cy.pk])
    thumbs = "\N{THUMBS UP SIGN}"

    tok = {u.username: bearer(u) for u in users_of(locals())}

    async def scenario() -> None:
        phone, _ = await open_socket(deployment.urls[0], tok["ana"], device="phone")
        laptop, _ = await open_socket(deployment.urls[1], tok["ana"], device="laptop")
        b, _ = await open_socket(deployment.urls[0], tok["bo"])
        c, _ = await open_socket(deployment.urls[1], tok["cy"])
        sent = (await phone.request(**text("pizza?", group.pk)))["message"]

        answer = await b.request(
            type="reaction.add", conversation=group.pk, message=sent["id"], emoji=thumbs
        )
        assert answer["type"] == "message.updated"
        reacted = answer["message"]
        assert reacted["version"] == sent["seq"] + 1
        assert reacted["reactions"] == [{"emoji": thumbs, "count": 1, "users": [bo.pk]}]
        for device in (phone, laptop, c):
            live = await device.until(
                lambda f: f["type"] == "message.updated" and f["message"]["id"] == sent["id"]
            )
            assert live["message"] == reacted

        words = await b.request(
            type="reaction.add", conversation=group.pk, message=sent["id"], emoji="yes"
        )
        assert (words["type"], words["code"], words["details"]) == (
            "error",
            "bad_request",
            {"field": "emoji"},
        )
        taken_back = await b.request(
            type="reaction.remove", conversation=group.pk, message=sent["id"], emoji=thumbs
        )
        assert taken_back["message"]["reactions"] == []

        # A device that saw only the send catches up on both changes by `after=`.
        away, _ = await open_socket(deployment.urls[1], tok["cy"], device="tablet")
        batch = await away.request(type="messages.fetch", conversation=group.pk, after=sent["seq"])
        assert [(m["id"], m["version"], m["reactions"]) for m in batch["messages"]] == [
            (sent["id"], sent["seq"] + 2, [])
        ]

    drive(scenario)


def test_a_reply_reaches_the_other_gateway_with_what_it_quotes(
    deployment: Deployment, ana: User, bo: User
) -> None:
    """Bo replies on gateway 2 to Ana's message; Ana sees the quote live on gateway 1; a
    reply naming a message of no conversation of theirs is an error and stores nothing."""
    direct, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    tok = {u.username: bearer(u) for u in users_of(locals())}

    async def scenario() -> None:
        a, _ = await open_socket(deployment.urls[0], tok["ana"])
        b, _ = await open_socket(deployment.urls[1], tok["bo"])
        question = (await a.request(**text("Friday or Saturday?", direct.pk)))["message"]
        sent = await b.request(**text("Saturday", direct.pk), reply_to=question["id"])
        quote = {
            "id": question["id"],
            "seq": question["seq"],
            "sender": ana.pk,
            "preview": "Friday or Saturday?",
            "deleted": False,
        }
        assert sent["message"]["reply_to"] == quote
        live = await a.until(
            lambda f: f["type"] == "message.created" and f["message"]["id"] == sent["message"]["id"]
        )
        assert live["message"]["reply_to"] == quote

        wrong = await b.request(**text("?", direct.pk), reply_to=question["id"] + 10_000)
        assert (wrong["type"], wrong["code"], wrong["details"]) == (
            "error",
            "bad_request",
            {"field": "reply_to"},
        )
        batch = await b.request(type="messages.fetch", conversation=direct.pk, after=0)
        assert [m["body"] for m in batch["messages"]] == ["Friday or Saturday?", "Saturday"]

    drive(scenario)


def test_the_reference_client_reacts_and_a_repeat_returns_without_a_new_version(
    deployment: Deployment, ana: User, bo: User
) -> None:
    direct, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    thumbs = "\N{THUMBS UP SIGN}"
    tokens = bearer(ana), bearer(bo)

    async def scenario() -> tuple[Any, Any, Any]:
        a = ChatClient(deployment.urls[:1], bearer_auth(tokens[0]), name="ana")
        b = ChatClient(deployment.urls[1:], bearer_auth(tokens[1]), name="bo")
        await a.connect()
        await b.connect()
        try:
            sent = await b.send(direct.pk, "shall we?")
            await a.wait_for_message(lambda m: m["id"] == sent["id"])
            reply = await a.send(direct.pk, "yes!", reply_to=sent["id"])
            assert reply["reply_to"]["preview"] == "shall we?"
            reacted = await a.react(direct.pk, sent["id"], thumbs)
            repeated = await a.react(direct.pk, sent["id"], thumbs)
            seen = await b.wait_for_message(
                lambda m: m["id"] == sent["id"] and m["version"] == reacted["version"]
            )
            return reacted, repeated, seen
        finally:
            await a.close()
            await b.close()

    results: list[Any] = []
    drive(lambda: _collect(results, scenario()))
    reacted, repeated, seen = results[0]

    assert reacted["reactions"] == [{"emoji": thumbs, "count": 1, "users": [ana.pk]}]
    assert repeated["version"] == reacted["version"]
    assert seen["reactions"] == reacted["reactions"]


def test_read_receipts_are_coalesced_into_one_event_per_burst(
    deployment: Deployment, ana: User, bo: User
) -> None:
    conversation, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    services.accept_request(user=bo, conversation_id=conversation.pk)  # strangers: a request
    for n in range(5):
        services.send_message(
            sender=ana, conversation_id=conversation.pk, client_msg_id=uuid.uuid4(), body=str(n)
        )

    tok = {u.username: bearer(u) for u in users_of(locals())}

    async def scenario() -> None:
        a, _ = await open_socket(deployment.urls[0], tok["ana"])
        b, _ = await open_socket(deployment.urls[1], tok["bo"])
        for seq in range(1, 6):  # a burst of reads, as a client scrolling through
            await b.send(type="receipt.read", conversation=conversation.pk, seq=seq)
        receipt = await a.until(lambda f: f["type"] == "receipt.updated")
        assert (receipt["user"], receipt["read_seq"], receipt["delivered_seq"]) in {
            (bo.pk, 1, 1),
            (bo.pk, 5, 5),
        }
        if receipt["read_seq"] == 1:  # the first write went at once; the rest coalesced
            receipt = await a.until(lambda f: f["type"] == "receipt.updated")
            assert receipt["read_seq"] == 5
        # no third event for the same burst
        assert not [f for f in await a.quiet() if f["type"] == "receipt.updated"]
        stranger = await b.request(type="receipt.read", conversation=conversation.pk + 999, seq=1)
        assert stranger["code"] == "forbidden"

    drive(scenario)
    assert Membership.objects.get(conversation=conversation, user=bo).read_seq == 5


def test_typing_reaches_other_members_but_not_the_typists_own_devices(
    deployment: Deployment, ana: User, bo: User
) -> None:
    conversation, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)

    tok = {u.username: bearer(u) for u in users_of(locals())}

    async def scenario() -> None:
        a_phone, _ = await open_socket(deployment.urls[0], tok["ana"])
        a_laptop, _ = await open_socket(deployment.urls[1], tok["ana"])
        b, _ = await open_socket(deployment.urls[1], tok["bo"])
        await a_phone.send(type="typing.start", conversation=conversation.pk)
        typing = await b.until(lambda f: f["type"] == "typing")
        assert typing == {
            "type": "typing",
            "conversation": conversation.pk,
            "user": ana.pk,
            "state": "start",
        }
        assert not [f for f in await a_laptop.quiet() if f["type"] == "typing"]

    drive(scenario)


def test_membership_changes_move_sockets_in_and_out_of_the_conversation(
    deployment: Deployment, ana: User, bo: User, cy: User
) -> None:
    group = services.create_group(creator=ana, title="Team", member_ids=[bo.pk])

    tok = {u.username: bearer(u) for u in users_of(locals())}

    async def scenario() -> None:
        a, _ = await open_socket(deployment.urls[0], tok["ana"])
        c, ready = await open_socket(deployment.urls[1], tok["cy"])
        assert ready["conversations"] == []

        await in_thread(services.add_members, actor=ana, conversation_id=group.pk, user_ids=[cy.pk])
        joined = await c.until(lambda f: f["type"] == "conversation.updated")
        assert joined["reason"] == "joined" and joined["conversation"]["id"] == group.pk
        live = await a.request(**text("welcome cy", group.pk))
        got = await c.until(lambda f: f["type"] == "message.created")
        assert got["message"]["id"] == live["message"]["id"]

        await in_thread(services.remove_member, actor=ana, conversation_id=group.pk, user_id=cy.pk)
        removed = await c.until(lambda f: f["type"] == "conversation.updated")
        assert removed["reason"] == "removed"
        after = await a.request(**text("cy is gone", group.pk))
        leaked = [
            f for f in await c.quiet() if f.get("message", {}).get("id") == after["message"]["id"]
        ]
        assert leaked == []
        denied = await c.request(type="messages.fetch", conversation=group.pk, after=0)
        assert denied["code"] == "forbidden"

    drive(scenario)


def test_sync_answers_the_conversations_and_joins_new_ones(
    deployment: Deployment, ana: User, bo: User
) -> None:
    tok = {u.username: bearer(u) for u in users_of(locals())}

    async def scenario() -> None:
        b, _ = await open_socket(deployment.urls[0], tok["bo"])
        group = await in_thread(
            services.create_group, creator=ana, title="Late", member_ids=[bo.pk]
        )
        state = await b.request(type="sync")
        assert state["type"] == "sync.state"
        assert [c["id"] for c in state["conversations"]] == [group.pk]
        assert state["conversations"][0]["last_seq"] == 1

    drive(scenario)


def test_a_ticket_opens_one_socket_once(deployment: Deployment, ana: User) -> None:
    import urllib.request

    access = bearer(ana)
    request = urllib.request.Request(  # noqa: S310 - loopback URL built by the harness
        f"{deployment.http_urls[0]}/api/v1/ws-tickets",
        data=b"{}",
        method="POST",
        headers={"Authorization": f"Bearer {access}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        ticket = json.loads(response.read())["ticket"]

    tok = {u.username: bearer(u) for u in users_of(locals())}

    async def scenario() -> None:
        async with connect(f"{deployment.urls[1]}?ticket={ticket}") as ws:
            ready = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert ready["type"] == "session.ready" and ready["user"]["id"] == ana.pk
        async with connect(f"{deployment.urls[0]}?ticket={ticket}") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401

    drive(scenario)


def test_a_socket_on_any_other_path_is_refused_before_accept(
    deployment: Deployment, ana: User
) -> None:
    # Tried: a valid token on paths that are not `/ws/v1/` (another version, a longer
    # path, no trailing slash). Each handshake is answered 403, and `/ws/v1/` with the
    # same token still opens.
    from websockets.exceptions import InvalidStatus

    access = bearer(ana)
    base = deployment.urls[0].split("/ws/v1/")[0]

    statuses: list[int] = []

    async def scenario() -> None:
        for path in ("/ws/v2/", "/ws/v1/extra/", "/ws/v1", "/"):
            with pytest.raises(InvalidStatus) as refused:
                ws = await connect(
                    base + path, additional_headers={"Authorization": f"Bearer {access}"}
                )
                await ws.close()
            statuses.append(refused.value.response.status_code)
        _socket, ready = await open_socket(deployment.urls[0], access)
        assert ready["user"]["id"] == ana.pk

    drive(scenario)
    assert statuses == [403, 403, 403, 403]


def test_pong_carries_the_users_log_position_across_conversations(
    deployment: Deployment, ana: User, bo: User, cy: User
) -> None:
    direct, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    group = services.create_group(creator=bo, title="Trip", member_ids=[ana.pk, cy.pk])
    for n in range(3):
        services.send_message(
            sender=bo, conversation_id=direct.pk, client_msg_id=uuid.uuid4(), body=f"d{n}"
        )
    services.send_message(sender=cy, conversation_id=group.pk, client_msg_id=uuid.uuid4(), body="g")
    tok = {u.username: bearer(u) for u in users_of(locals())}

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        a, _ = await open_socket(deployment.urls[0], tok["ana"])
        before = await a.request(type="ping")
        await in_thread(services.remove_member, actor=bo, conversation_id=group.pk, user_id=ana.pk)
        await a.until(lambda f: f["type"] == "conversation.updated")
        after = await a.request(type="ping")
        c, _ = await open_socket(deployment.urls[1], tok["cy"])
        return before, after, await c.request(type="ping")

    results: list[Any] = []
    drive(lambda: _collect(results, scenario()))
    before, after, cy_pong = results[0]

    # 3 messages in the direct chat + "created" and "g" in the group.
    assert before["type"] == "pong" and before["log_position"] == 3 + 2
    assert after["log_position"] == 3  # the group no longer counts
    assert cy_pong["log_position"] == 3  # created, g, and Ana's removal


def test_a_delivery_is_not_held_behind_a_ping_and_never_overtakes_its_pong(
    make_deployment: MakeDeployment, ana: User, bo: User
) -> None:
    """Tried: pings answered in 1 s windows (`WS_PING_WINDOW`). Ana pings, and Bo sends
    her a message at once; then Bo sends 150 messages, one every 20 ms, while Ana pings
    every 0.4 s.

    The first message reaches Ana before her pong (her socket does not wait out the
    window), and the pong's position counts it. At every pong of the stream, no message
    Ana already has is past the pong's position: a delivery committed after the
    position was read never overtakes the pong (a client takes a position below its own
    for a missed departure, and syncs).
    """
    # Bo's sends at 50 a second: past the per-user limit (5 a second) without this.
    env = {"WS_PING_WINDOW": "1", "CHAT_SEND_RATE": "100", "CHAT_SEND_BURST": "200"}
    deployment = make_deployment(gateways=2, env=env)
    direct, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    services.accept_request(user=bo, conversation_id=direct.pk)
    tok = {u.username: bearer(u) for u in users_of(locals())}
    first: list[str] = []
    checks: list[tuple[int, int]] = []  # (highest seq Ana had, the pong's position)

    async def scenario() -> None:
        a, _ = await open_socket(deployment.urls[0], tok["ana"])
        b, _ = await open_socket(deployment.urls[1], tok["bo"])
        await a.send(type="ping", ref="first")
        await b.request(**text("while the ping waits", direct.pk))
        highest = 0
        while True:
            frame = await a.next()
            first.append(frame["type"])
            if frame["type"] == "message.created":
                highest = max(highest, frame["message"]["seq"])
            if frame.get("ref") == "first":
                checks.append((highest, frame["log_position"]))
                break

        async def stream() -> None:
            for n in range(150):
                await b.send(**text(f"m{n}", direct.pk))
                await asyncio.sleep(0.02)

        async def pings() -> None:
            for n in range(10):
                await a.send(type="ping", ref=f"p{n}")
                await asyncio.sleep(0.4)

        tasks = [asyncio.create_task(stream()), asyncio.create_task(pings())]
        answered = 0
        while answered < 10:
            frame = await a.next()
            if frame["type"] == "message.created":
                highest = max(highest, frame["message"]["seq"])
            elif frame["type"] == "pong":
                answered += 1
                checks.append((highest, frame["log_position"]))
        await asyncio.gather(*tasks)

    drive(scenario)
    assert first[0] == "message.created", first  # not held behind the ping's window
    assert checks[0] == (1, 1)  # and the pong counts it
    assert len(checks) == 11
    overtaken = [(had, position) for had, position in checks if had > position]
    assert overtaken == [], checks
    assert checks[-1][1] > 1  # the stream was under way while Ana pinged


async def _collect(into: list[Any], work: Any) -> None:
    into.append(await work)


def test_a_lost_live_event_is_repaired_by_the_reference_client_within_a_heartbeat(
    make_deployment: MakeDeployment, settings: Any, ana: User, bo: User
) -> None:
    deployment = make_deployment(gateways=2, env={"WS_HEARTBEAT_INTERVAL": "1"})
    direct, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    token = bearer(bo)

    async def scenario() -> tuple[list[str], int]:
        # The periodic sync stays at its 60 s default: only the heartbeat can find the loss.
        client = ChatClient(deployment.urls[1:], bearer_auth(token), name="bo")
        await client.connect()
        try:
            await in_thread(
                services.send_message,
                sender=ana,
                conversation_id=direct.pk,
                client_msg_id=uuid.uuid4(),
                body="heard live",
            )
            await client.wait_for_message(lambda m: m["body"] == "heard live")
            with fanout_lost(settings):
                await in_thread(
                    services.send_message,
                    sender=ana,
                    conversation_id=direct.pk,
                    client_msg_id=uuid.uuid4(),
                    body="its event was lost",
                )
            # Well inside the first periodic sync (60 s after connecting).
            got = await client.wait_for_message(
                lambda m: m["body"] == "its event was lost", timeout=20.0
            )
            assert got["seq"] == 2
            return [m["body"] for m in client.view(direct.pk)], client.missed_event_syncs
        finally:
            await client.close()

    results: list[Any] = []
    drive(lambda: _collect(results, scenario()))
    bodies, repairs = results[0]

    assert bodies == ["heard live", "its event was lost"]
    assert repairs >= 1  # found by a pong's log position, not by the periodic sync


def test_a_handshake_the_gateway_cannot_start_in_time_is_closed_1013_unserved(
    make_deployment: MakeDeployment, ana: User, bo: User
) -> None:
    """Tried: a gateway with one database thread, held by Ana's send that waits on a lock
    of the message table, while Bo's handshake waits behind it for 3 s, past
    WS_READY_DEADLINE (1 s). Bo's handshake is closed with 1013 without its lookups being
    made (his client gave up long ago), counted on /metrics; Ana's send is stored once
    the lock goes, and the next handshake is served as usual."""
    from bench.harness import http_get
    from messaging.models import Message

    deployment = make_deployment(gateways=1, env={"WS_DB_THREADS": "1", "WS_READY_DEADLINE": "1"})
    conversation, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    tokens = {"ana": bearer(ana), "bo": bearer(bo)}
    url = deployment.urls[0]

    def shed_count() -> float:
        status, body = http_get(f"{deployment.http_urls[0]}/metrics")
        assert status == 200
        for line in body.decode().splitlines():
            if line.startswith("chat_ws_handshakes_shed_total "):
                return float(line.split()[1])
        raise AssertionError("chat_ws_handshakes_shed_total is not on /metrics")

    async def open_raw(url: str, access: str) -> Any:
        headers = {"Authorization": f"Bearer {access}"}
        return await connect(url, additional_headers=headers, open_timeout=30)

    async def scenario() -> None:
        ana_socket, _ = await open_socket(url, tokens["ana"])
        assert shed_count() == 0
        with table_locked(Message._meta.db_table):
            sent = asyncio.create_task(
                ana_socket.request(timeout=30, **text("behind the lock", conversation.pk))
            )
            # The gateway's only database thread is now waiting on the lock.
            for _ in range(200):
                if await in_thread(queries_waiting_on_locks):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the send never waited on the lock")
            bo_opens = asyncio.create_task(open_raw(url, tokens["bo"]))
            await asyncio.sleep(3.0)  # Bo's lookup waits behind the send, past its deadline
        answer = await sent
        assert answer["type"] == "message.sent", answer
        bo_ws = await bo_opens
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(bo_ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        assert shed_count() == 1
        # Nothing is left behind: Bo connects again at once and is served.
        _, ready = await open_socket(url, tokens["bo"])
        assert [c["id"] for c in ready["conversations"]] == [conversation.pk]
        assert shed_count() == 1

    drive(scenario)
    assert Message.objects.filter(conversation=conversation, body="behind the lock").count() == 1
