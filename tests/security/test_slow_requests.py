"""Slow requests are timed out: every request's headers and body, and idle keep-alives.

Tried (in the review, against a gateway with the defaults): 45 sockets sending
`Content-Length: 1000000` and then one body byte every 3 s, and 45 kept-alive sockets
trickling a second request one byte at a time: all still open after 36 s, as the
handshake deadline covered only a connection's first request headers. Here, with a
2 s request deadline: 20 of each (one byte every 0.4 s), plus idle kept-alive sockets;
the gateway must close them all within the deadline plus a margin, answer a normal
client meanwhile, and leave a WebSocket opened on it alone past the deadline. Under
uvicorn and under Daphne (`chatsite.gateway.daphne`) alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from websockets.asyncio.client import connect

from accounts.models import User
from bench.harness import LOCALHOST, Gateway
from tests.e2e.conftest import MakeDeployment
from tests.e2e.wsclient import bearer

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

REQUEST_TIMEOUT = 2.0
KEEPALIVE_TIMEOUT = 2.0
# The gateway closes at the deadline; other engineers' tests share the two cores.
MARGIN = 4.0
SOCKETS = 20
TRICKLE = 0.4
ENV = {
    "GATEWAY_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT),
    "GATEWAY_KEEPALIVE_TIMEOUT": str(KEEPALIVE_TIMEOUT),
}
SLOW_BODY_HEAD = (
    b"POST /api/v1/auth/token HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{"
)
HEALTH = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


async def read_response(reader: asyncio.StreamReader) -> bytes:
    """Read one HTTP/1.1 response with a Content-Length body; return its status line."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return head.split(b"\r\n", 1)[0]


async def trickle_until_closed(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes, give_up: float
) -> float | None:
    """Send `data` a byte every TRICKLE s; return when the server closed (None: never)."""
    started = time.monotonic()
    for byte in data:
        if time.monotonic() - started > give_up:
            return None
        try:
            writer.write(bytes([byte]))
            await writer.drain()
            if await asyncio.wait_for(reader.read(65536), TRICKLE) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except OSError:  # reset: closed as well
            return time.monotonic() - started
    return None


async def slow_body(gateway: Gateway, give_up: float) -> float | None:
    reader, writer = await asyncio.open_connection(LOCALHOST, gateway.port)
    try:
        writer.write(SLOW_BODY_HEAD)
        await writer.drain()
        return await trickle_until_closed(reader, writer, b" " * 1000, give_up)
    finally:
        writer.close()


async def slow_second_request(gateway: Gateway, give_up: float) -> float | None:
    reader, writer = await asyncio.open_connection(LOCALHOST, gateway.port)
    try:
        writer.write(HEALTH)
        await writer.drain()
        assert (await read_response(reader)).startswith(b"HTTP/1.1 200")
        return await trickle_until_closed(reader, writer, HEALTH * 50, give_up)
    finally:
        writer.close()


async def idle_keepalive(gateway: Gateway, give_up: float) -> float | None:
    reader, writer = await asyncio.open_connection(LOCALHOST, gateway.port)
    try:
        writer.write(HEALTH)
        await writer.drain()
        await read_response(reader)
        started = time.monotonic()
        with contextlib.suppress(TimeoutError):
            if await asyncio.wait_for(reader.read(), give_up) == b"":
                return time.monotonic() - started
        return None
    finally:
        writer.close()


async def normal_client(gateway: Gateway, stop: asyncio.Event) -> list[float]:
    """GET /healthz on a fresh connection every 0.2 s; return each answer's latency."""
    latencies: list[float] = []
    while not stop.is_set():
        started = time.monotonic()
        reader, writer = await asyncio.open_connection(LOCALHOST, gateway.port)
        writer.write(HEALTH)
        await writer.drain()
        status = await asyncio.wait_for(read_response(reader), 5)
        writer.close()
        assert status.startswith(b"HTTP/1.1 200"), status
        latencies.append(time.monotonic() - started)
        await asyncio.sleep(0.2)
    return latencies


SERVERS = pytest.mark.parametrize("server", ["uvicorn", "daphne"])


@SERVERS
def test_slow_bodies_and_slow_later_requests_are_closed_at_the_deadline(
    make_deployment: MakeDeployment, server: str
) -> None:
    gateway = make_deployment(gateways=1, env=ENV, server=server).gateways[0]
    give_up = REQUEST_TIMEOUT + MARGIN

    Closed = list[float | None]

    async def scenario() -> tuple[Closed, Closed, Closed, list[float]]:
        stop = asyncio.Event()
        client = asyncio.create_task(normal_client(gateway, stop))
        bodies, later, idle = await asyncio.gather(
            asyncio.gather(*(slow_body(gateway, give_up) for _ in range(SOCKETS))),
            asyncio.gather(*(slow_second_request(gateway, give_up) for _ in range(SOCKETS))),
            asyncio.gather(*(idle_keepalive(gateway, give_up) for _ in range(4))),
        )
        stop.set()
        return bodies, later, idle, list(await client)

    bodies, later_requests, idle, latencies = asyncio.run(asyncio.wait_for(scenario(), 60))

    assert None not in bodies, bodies
    assert None not in later_requests, later_requests
    assert None not in idle, idle
    assert max(t for t in idle if t is not None) < KEEPALIVE_TIMEOUT + MARGIN, idle
    # Not before the deadline either: a request that is still arriving gets its time.
    assert min(t for t in bodies if t is not None) >= REQUEST_TIMEOUT - 0.5, bodies
    assert len(latencies) >= 5 and max(latencies) < REQUEST_TIMEOUT, latencies
    assert "Traceback" not in gateway.output()


@SERVERS
def test_a_websocket_outlives_the_request_deadline(
    make_deployment: MakeDeployment, ana: User, server: str
) -> None:
    gateway = make_deployment(gateways=1, env=ENV, server=server).gateways[0]
    access = bearer(ana)

    async def scenario() -> tuple[str, str]:
        headers = {"Authorization": f"Bearer {access}"}
        async with connect(gateway.ws_url, additional_headers=headers) as ws:
            ready = await asyncio.wait_for(ws.recv(), 10)
            await asyncio.sleep(REQUEST_TIMEOUT + KEEPALIVE_TIMEOUT + 1)
            await ws.send('{"type": "ping", "ref": "late"}')
            pong = await asyncio.wait_for(ws.recv(), 10)
            return str(ready), str(pong)

    ready, pong = asyncio.run(asyncio.wait_for(scenario(), 30))

    assert '"session.ready"' in ready
    assert '"pong"' in pong and '"late"' in pong
