"""The client against an in-memory server: cursors, retries, reconnects and close codes."""

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import chatclient.client
import chatclient.session
from chatclient import ChatClient, ChatError, History, SessionClosed, Update, bearer_auth, check
from tests.client.fake_server import FakeServer

CONV = 3


def run(scenario: Callable[[], Awaitable[None]], timeout: float = 10.0) -> None:
    """Run an async scenario; a hang fails the test instead of stalling the suite."""

    async def bounded() -> None:
        async with asyncio.timeout(timeout):
            await scenario()

    asyncio.run(bounded())


@contextlib.asynccontextmanager
async def serving(heartbeat_interval: float = 25.0) -> AsyncIterator[FakeServer]:
    server = await FakeServer(heartbeat_interval).start()
    try:
        yield server
    finally:
        await server.stop()


def client_for(
    server: FakeServer, user: int, history: History | None = None, **options: Any
) -> ChatClient:
    options.setdefault("send_timeout", 2.0)
    return ChatClient(
        [server.url],
        bearer_auth(server.add_user(user)),
        name=f"u{user}",
        history=history,
        backoff_base=0.01,
        backoff_max=0.05,
        rng=random.Random(user),
        **options,
    )


def next_event(client: ChatClient, kind: str) -> asyncio.Future[Update]:
    """Start waiting for the next event of `kind` (before causing it)."""
    return asyncio.ensure_future(client.wait_for(lambda u: u.get("type") == kind, 10.0))


@pytest.mark.parametrize("with_orjson", [True, False], ids=["orjson", "json"])
def test_messages_sent_by_one_client_reach_the_other_live_and_the_check_passes(
    with_orjson: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Frames are encoded and decoded by orjson where it is installed, by the json module
    # otherwise: either way every frame the server gets is a JSON text frame.
    monkeypatch.setattr(chatclient.session, "_ORJSON", with_orjson)

    async def scenario() -> None:
        async with serving() as server:
            server.create_conversation(CONV, {1, 2})
            history = History()
            ana, bo = client_for(server, 1, history), client_for(server, 2, history)
            async with ana, bo:
                sent = [await ana.send(CONV, f"m{n}\u00e9\U0001f600") for n in range(10)]
                await bo.wait_for_message(lambda m: m["id"] == sent[-1]["id"])
                views = {"u1": ana.views(), "u2": bo.views()}
                assert [c.binary_frames for c in server.connections] == [0, 0]

        report = check(history, views, {CONV: {"u1", "u2"}})
        assert report.ok, report.summary()
        assert report.sent_ok == 10
        assert report.latency.count == 10
        assert [m["seq"] for m in views["u2"][CONV]] == list(range(1, 11))
        assert views["u2"][CONV][-1]["body"] == "m9\u00e9\U0001f600"
        assert all(r.via == "live" for r in history.recvs if r.client == "u2")

    run(scenario)


def test_a_gap_in_live_events_is_filled_by_a_fetch_in_order() -> None:
    async def scenario() -> None:
        async with serving() as server:
            server.create_conversation(CONV, {1, 2})
            server.drop_live = lambda user, frame: user == 2 and frame["message"]["seq"] in {
                3,
                4,
                7,
            }
            history = History()
            ana, bo = client_for(server, 1, history), client_for(server, 2, history)
            async with ana, bo:
                for n in range(10):
                    await ana.send(CONV, f"m{n}")
                await bo.wait_for_message(lambda m: m["seq"] == 10)
                views = {"u1": ana.views(), "u2": bo.views()}
                fetches = server.frames_of(2, "messages.fetch")

        assert views["u2"] == views["u1"]
        fetched = {r.seq for r in history.recvs if r.client == "u2" and r.via == "fetch"}
        assert {3, 4, 7} <= fetched
        assert fetches and all(f["limit"] == 200 for f in fetches)
        assert check(history, views, {CONV: {"u1", "u2"}}).ok

    run(scenario)


def test_a_lost_reply_is_retried_with_the_same_client_msg_id_and_stored_once() -> None:
    async def scenario() -> None:
        async with serving() as server:
            server.create_conversation(CONV, {1, 2})
            dropped: set[str] = set()

            def drop_first_reply(frame: dict[str, Any]) -> bool:
                if frame["client_msg_id"] in dropped:
                    return False
                dropped.add(frame["client_msg_id"])
                return True

            server.drop_reply = drop_first_reply
            history = History()
            ana = client_for(server, 1, history, send_timeout=0.2)
            bo = client_for(server, 2, history)
            async with ana, bo:
                for n in range(5):
                    await ana.send(CONV, f"m{n}")
                await bo.wait_for_message(lambda m: m["seq"] == 5)
                views = {"u1": ana.views(), "u2": bo.views()}
                attempts = server.frames_of(1, "message.send")

        assert [r.attempts for r in history.sends] == [2] * 5
        assert len(attempts) == 10
        assert all(
            a["client_msg_id"] == b["client_msg_id"]
            for a, b in zip(attempts[::2], attempts[1::2], strict=True)
        )
        assert len(server.rows(CONV)) == 5
        report = check(history, views, {CONV: {"u1", "u2"}}, truth={CONV: server.rows(CONV)})
        assert report.ok, report.summary()

    run(scenario)


def test_rate_limited_sends_are_retried_after_retry_after() -> None:
    async def scenario() -> None:
        async with serving() as server:
            server.create_conversation(CONV, {1})
            server.send_errors = [{"code": "rate_limited", "retry_after": 0.3}]
            history = History()
            async with client_for(server, 1, history) as ana:
                loop = asyncio.get_running_loop()
                started = loop.time()
                message = await ana.send(CONV, "hello")
                elapsed = loop.time() - started
                attempts = server.frames_of(1, "message.send")

        assert message["seq"] == 1
        assert elapsed >= 0.3
        assert history.sends[0].outcome == "ok"
        assert history.sends[0].attempts == 2
        assert attempts[0]["client_msg_id"] == attempts[1]["client_msg_id"]

    run(scenario)


def test_unavailable_sends_are_retried_until_they_land() -> None:
    async def scenario() -> None:
        async with serving() as server:
            server.create_conversation(CONV, {1})
            server.send_errors = [{"code": "unavailable"}, {"code": "unavailable"}]
            history = History()
            async with client_for(server, 1, history) as ana:
                await ana.send(CONV, "hello")

        assert history.sends[0].attempts == 3
        assert len(server.rows(CONV)) == 1

    run(scenario)


@pytest.mark.parametrize("code", ["forbidden", "conflict", "message_too_long", "bad_request"])
def test_other_send_errors_raise_at_once_without_a_retry(code: str) -> None:
    async def scenario() -> None:
        async with serving() as server:
            server.create_conversation(CONV, {1})
            server.send_errors = [{"code": code}]
            history = History()
            async with client_for(server, 1, history) as ana:
                with pytest.raises(ChatError) as raised:
                    await ana.send(CONV, "hello")
                assert ana.pending_sends == 0

        assert raised.value.code == code
        record = history.sends[0]
        assert (record.outcome, record.error_code, record.attempts) == ("fail", code, 1)

    run(scenario)


def test_a_send_that_gets_no_answer_before_its_timeout_is_recorded_unknown() -> None:
    async def scenario() -> None:
        async with serving() as server:
            server.create_conversation(CONV, {1})
            server.drop_reply = lambda frame: True
            history = History()
            async with client_for(server, 1, history, send_timeout=0.1) as ana:
                with pytest.raises(TimeoutError):
                    await ana.send(CONV, "hello", timeout=0.35)
                views = {"u1": ana.views()}

        record = history.sends[0]
        assert record.outcome == "unknown"
        assert record.attempts >= 2
        report = check(history, views, {CONV: {"u1"}}, truth={CONV: server.rows(CONV)})
        assert report.ok
        assert report.unknown_duplicated == 0

    run(scenario)


def test_a_dropped_connection_reconnects_resumes_and_flushes_the_outbox() -> None:
    async def scenario() -> None:
        async with serving() as server:
            server.create_conversation(CONV, {1, 2})
            history = History()
            ana, bo = client_for(server, 1, history), client_for(server, 2, history)
            async with ana, bo:
                await ana.send(CONV, "before")
                await bo.wait_for_message(lambda m: m["seq"] == 1)
                ready_again = next_event(bo, "session.ready")

                server.kill_user(2)
                sending = asyncio.ensure_future(bo.send(CONV, "while away"))
                for n in range(3):
                    await ana.send(CONV, f"missed {n}")
                await ready_again
                mine = await sending
                await ana.wait_for_message(lambda m: m["id"] == mine["id"])
                await bo.wait_for_message(lambda m: m["body"] == "missed 2")
                views = {"u1": ana.views(), "u2": bo.views()}

        assert views["u1"] == views["u2"]
        assert len(history.reconnects) == 1
        assert history.reconnects[0].client == "u2"
        assert bo.reconnect_durations
        report = check(history, views, {CONV: {"u1", "u2"}}, truth={CONV: server.rows(CONV)})
        assert report.ok, report.summary()
        assert report.reconnect.count == 1

    run(scenario)


@pytest.mark.parametrize("code", [4401, 4409])
def test_auth_failure_and_eviction_stop_the_client_and_fail_pending_sends(code: int) -> None:
    async def scenario() -> None:
        async with serving() as server:
            server.create_conversation(CONV, {1})
            history = History()
            ana = client_for(server, 1, history)
            await ana.connect()
            server.drop_reply = lambda frame: True
            pending = asyncio.ensure_future(ana.send(CONV, "never acknowledged"))
            await ana.wait_for_message(lambda m: m["body"] == "never acknowledged")

            await server.close_user(1, code)

            with pytest.raises(SessionClosed) as raised:
                await pending
            assert ana.closed_code == code
            assert raised.value.close_code == code
            with pytest.raises(SessionClosed):
                await ana.send(CONV, "after")
            await ana.close()
            assert server.handshakes == 1

        assert history.sends[0].outcome == "unknown"

    run(scenario)


@pytest.mark.parametrize("code", [4429, 4408, 1012])
def test_other_close_codes_reconnect(code: int) -> None:
    async def scenario() -> None:
        async with serving() as server:
            server.create_conversation(CONV, {1})
            async with client_for(server, 1) as ana:
                ready_again = next_event(ana, "session.ready")
                await server.close_user(1, code)
                await ready_again
                assert ana.connected
                assert ana.closed_code is None
                assert server.handshakes == 2

    run(scenario)


def test_a_refused_handshake_stops_the_client_with_4401() -> None:
    async def scenario() -> None:
        async with serving() as server:
            client = ChatClient([server.url], bearer_auth("wrong"), backoff_base=0.01)
            with pytest.raises(SessionClosed) as raised:
                await client.connect(timeout=5)
            assert raised.value.close_code == 4401
            assert client.closed_code == 4401
            await client.close()

    run(scenario)


def test_an_auth_callable_that_is_refused_stops_and_one_that_is_unreachable_retries() -> None:
    async def scenario() -> None:
        async with serving() as server:
            token = server.add_user(1)
            outcomes = [ChatError("unavailable"), None]

            async def flaky_auth() -> dict[str, str]:
                error = outcomes.pop(0)
                if error is not None:
                    raise error
                return {"Authorization": f"Bearer {token}"}

            async def refused_auth() -> dict[str, str]:
                raise ChatError("bad_request", "Wrong credentials.")

            flaky = ChatClient([server.url], flaky_auth, backoff_base=0.01)
            await flaky.connect(timeout=5)
            await flaky.close()
            refused = ChatClient([server.url], refused_auth, backoff_base=0.01)
            with pytest.raises(SessionClosed):
                await refused.connect(timeout=5)

        assert outcomes == []
        assert refused.closed_code == 4401

    run(scenario)


def test_a_joined_conversation_is_fetched_from_the_start_and_a_removed_one_dropped() -> None:
    async def scenario() -> None:
        async with serving() as server:
            server.create_conversation(5, {1})
            for n in range(3):
                await server.post(1, 5, f"old {n}")
            async with client_for(server, 2) as bo:
                assert bo.conversations == []

                await server.join(5, 2)
                await bo.wait_for_message(lambda m: m["conversation"] == 5 and m["seq"] == 4)
                assert bo.conversations == [5]
                assert [m["body"] for m in bo.view(5)] == ["old 0", "old 1", "old 2", "joined"]
                assert bo.cursor(5) == 4

                removed = next_event(bo, "conversation.updated")
                await server.remove(5, 2)
                await removed
                assert bo.conversations == []
                assert len(bo.view(5)) == 4  # what was seen stays readable

    run(scenario)


def test_sync_catches_a_lost_last_message() -> None:
    async def scenario() -> None:
        async with serving() as server:
            server.create_conversation(CONV, {1, 2})
            server.drop_live = lambda user, frame: user == 2 and frame["message"]["seq"] == 2
            history = History()
            ana, bo = client_for(server, 1, history), client_for(server, 2, history)
            async with ana, bo:
                await ana.send(CONV, "first")
                await bo.wait_for_message(lambda m: m["seq"] == 1)
                await ana.send(CONV, "last")
                await bo.ping()  # the dropped event would have arrived before this pong
                assert bo.cursor(CONV) == 1

                conversations = await bo.sync()

                assert [c["id"] for c in conversations] == [CONV]
                assert bo.cursor(CONV) == 2
                assert [m["body"] for m in bo.view(CONV)] == ["first", "last"]

        assert history.syncs[-1].behind == [CONV]
        assert [r.via for r in history.recvs if r.client == "u2"] == ["live", "fetch"]

    run(scenario)


def test_a_sync_refused_rate_limited_is_sent_again_after_retry_after() -> None:
    # The server's per-socket sync budget answers `rate_limited` with `retry_after`.
    async def scenario() -> None:
        async with serving() as server:
            server.create_conversation(CONV, {1, 2})
            server.frame_errors["sync"] = [
                {"code": "rate_limited", "retry_after": 0.2},
                {"code": "rate_limited", "retry_after": 0.2},
            ]
            ana = client_for(server, 1, History())
            async with ana:
                loop = asyncio.get_running_loop()
                started = loop.time()
                conversations = await ana.sync()
                waited = loop.time() - started

                assert [c["id"] for c in conversations] == [CONV]
                assert waited >= 0.4
                assert server.frame_errors["sync"] == []

    run(scenario)


def test_a_heartbeat_pong_reveals_a_lost_last_message_and_the_client_syncs() -> None:
    async def scenario() -> None:
        # Sync every 60 s (the default): only the pong's log position can find the loss.
        async with serving(heartbeat_interval=0.1) as server:
            server.create_conversation(CONV, {1, 2})
            server.drop_live = lambda user, frame: user == 2 and frame["message"]["seq"] == 2
            ana, bo = client_for(server, 1), client_for(server, 2)
            async with ana, bo:
                await ana.send(CONV, "first")
                await bo.wait_for_message(lambda m: m["seq"] == 1)
                await ana.send(CONV, "last")

                got = await bo.wait_for_message(lambda m: m["seq"] == 2, timeout=5.0)

                assert got["body"] == "last"
                assert bo.missed_event_syncs >= 1
                assert bo.log_position() == 2
                assert server.frames_of(2, "sync")

    run(scenario)


def test_a_pong_that_matches_the_view_causes_no_sync() -> None:
    async def scenario() -> None:
        async with serving(heartbeat_interval=0.05) as server:
            server.create_conversation(CONV, {1, 2})
            async with client_for(server, 1) as ana:
                await ana.send(CONV, "hello")
                for _ in range(3):
                    await ana.wait_for(lambda u: u.get("type") == "pong", 2.0)
                assert ana.log_position() == 1
                assert ana.missed_event_syncs == 0
                assert server.frames_of(1, "sync") == []

    run(scenario)


def test_an_edit_returns_the_new_version_and_reaches_other_members() -> None:
    async def scenario() -> None:
        async with serving() as server:
            server.create_conversation(CONV, {1, 2})
            ana, bo = client_for(server, 1), client_for(server, 2)
            async with ana, bo:
                message = await ana.send(CONV, "helo")

                edited = await ana.edit(CONV, message["id"], "hello")

                assert (edited["id"], edited["body"], edited["version"]) == (
                    message["id"],
                    "hello",
                    2,
                )
                seen = await bo.wait_for_message(lambda m: m["version"] == 2)
                assert seen["body"] == "hello"
                assert [m["body"] for m in bo.view(CONV)] == ["hello"]

    run(scenario)


def test_an_edit_the_server_refuses_raises_its_error() -> None:
    async def scenario() -> None:
        async with serving() as server:
            server.create_conversation(CONV, {1})
            async with client_for(server, 1) as ana:
                with pytest.raises(ChatError) as raised:
                    await ana.edit(CONV, 12345, "nope")

        assert raised.value.code == "not_found"

    run(scenario)


def test_the_device_goes_in_the_url_and_a_server_assigned_one_is_reused() -> None:
    async def scenario() -> None:
        async with serving() as server:
            async with client_for(server, 1, device="phone-1") as phone:
                assert server.connections[0].device == "phone-1"
                assert phone.device == "phone-1"
            async with client_for(server, 2) as laptop:
                assigned = laptop.device
                assert server.connections[1].device is None
                ready_again = next_event(laptop, "session.ready")
                server.kill_user(2)
                await ready_again
                assert server.connections[2].device == assigned

    run(scenario)


def test_heartbeat_pings_are_sent_every_heartbeat_interval() -> None:
    async def scenario() -> None:
        async with serving(heartbeat_interval=0.05) as server, client_for(server, 1) as ana:
            for _ in range(2):
                await ana.wait_for(lambda u: u.get("type") == "pong", 2.0)
            pong = await ana.ping()
            assert pong["type"] == "pong"
            assert len(server.frames_of(1, "ping")) >= 3

    run(scenario)


def test_a_connection_that_goes_silent_is_dropped_within_two_heartbeats_and_reconnected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Tried: the server stops answering (no pong, nothing else is sent) while
    # the TCP connection stays open, as a vanished gateway or a dead network looks. The
    # client sends no protocol pings of its own, so only the `ping` heartbeat can tell.
    monkeypatch.setattr(chatclient.client, "SILENCE_GRACE", 0.1)

    async def scenario() -> None:
        async with serving(heartbeat_interval=0.05) as server, client_for(server, 1) as ana:
            # Answered pongs keep the connection: several silence limits (0.2 s) pass.
            for _ in range(8):
                await ana.wait_for(lambda u: u.get("type") == "pong", 2.0)
            assert (ana.silent_drops, server.handshakes) == (0, 1)

            server.silent = True
            dropped = next_event(ana, "client.disconnected")
            ready = next_event(ana, "session.ready")
            await dropped
            server.silent = False
            await ready

            assert ana.silent_drops == 1
            assert server.handshakes == 2
            pong = await ana.ping()  # the new connection works
            assert pong["type"] == "pong"

    run(scenario)


def test_wait_for_message_finds_a_message_already_in_the_view() -> None:
    async def scenario() -> None:
        async with serving() as server:
            server.create_conversation(CONV, {1})
            async with client_for(server, 1) as ana:
                sent = await ana.send(CONV, "already here")

                found = await ana.wait_for_message(lambda m: m["id"] == sent["id"], timeout=0.5)

                assert found["body"] == "already here"
                with pytest.raises(TimeoutError):
                    await ana.wait_for_message(lambda m: m["body"] == "never", timeout=0.05)

    run(scenario)


def test_a_send_before_connect_waits_in_the_outbox_until_the_session_is_ready() -> None:
    async def scenario() -> None:
        async with serving() as server:
            server.create_conversation(CONV, {1})
            ana = client_for(server, 1)
            queued = asyncio.ensure_future(ana.send(CONV, "queued offline"))
            await asyncio.sleep(0)
            assert ana.pending_sends == 1

            await ana.connect()
            message = await queued
            await ana.close()

        assert message["seq"] == 1

    run(scenario)


def test_close_right_after_a_rejected_send_returns_promptly_and_keeps_cancellation() -> None:
    async def scenario() -> None:
        async with serving() as server:
            server.create_conversation(CONV, {1})
            server.send_errors = [{"code": "forbidden"}]
            ana = client_for(server, 1)
            await ana.connect()
            with pytest.raises(ChatError):
                await ana.send(CONV, "hello")

            async with asyncio.timeout(2.0):
                await ana.close()

            assert ana.closed
            closing = asyncio.ensure_future(client_for(server, 2).close())
            closing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await closing

    run(scenario)


def test_the_proxy_is_read_from_the_environment_once_per_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Tried: a proxy in the environment, an address it must bypass (NO_PROXY), and the
    environment changed afterwards (the answer is kept: it is read once)."""
    from chatclient.client import proxy_for

    proxy_for.cache_clear()
    monkeypatch.setenv("https_proxy", "http://proxy.example:3128")
    monkeypatch.setenv("no_proxy", "direct.example")
    try:
        assert proxy_for("wss://chat.example/ws/v1/") == "http://proxy.example:3128"
        assert proxy_for("wss://direct.example/ws/v1/") is None
        monkeypatch.delenv("https_proxy")
        assert proxy_for("wss://chat.example/ws/v1/") == "http://proxy.example:3128"
    finally:
        proxy_for.cache_clear()
