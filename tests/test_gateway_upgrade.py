"""A WebSocket upgrade hands the request h11 read to the WebSocket protocol, parsed once.

`H11WithHandshakeDeadline.handle_websocket_upgrade` gives the sans-I/O protocol the
request as `websockets` would have parsed it, instead of writing it out again for a
second parse. What the tests hold it to: the same request (path, headers, their case
and order, repeated headers, bytes past ASCII), the same refusals (anything the
`websockets` parser refuses goes the usual way and is refused by it), and, on a real
server over loopback, a working socket whose scope and first frame are intact.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import h11
import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.http11 import MAX_LINE_LENGTH, MAX_NUM_HEADERS, Request
from websockets.streams import StreamReader

from chatsite.gateway.http import H11WithHandshakeDeadline, _websocket_request
from chatsite.gateway.websocket import FlowControlledWebSocket

UPGRADE = (
    b"Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


def h11_request(raw: bytes) -> h11.Request:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    return event


def websockets_parse(raw: bytes) -> Request:
    """What `websockets`' own parser makes of the request uvicorn writes out again."""
    event = h11_request(raw)
    again = [event.method, b" ", event.target, b" HTTP/1.1\r\n"]
    for name, value in event.headers.raw_items():
        again += [name, b": ", value, b"\r\n"]
    reader = StreamReader()
    reader.feed_data(b"".join([*again, b"\r\n"]))
    parser = Request.parse(reader.read_line)
    with pytest.raises(StopIteration) as done:
        next(parser)
    request = done.value.value
    assert isinstance(request, Request)
    return request


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /ws/v1/?device=d-1 HTTP/1.1\r\n" + UPGRADE + b"Authorization: Bearer abc.def\r\n\r\n",
        # Names in any case, a repeated header, a value with a tab and bytes past ASCII,
        # a percent-encoded path and query.
        b"GET /ws/v1/%7Euser?device=d%2D2&x= HTTP/1.1\r\n"
        + UPGRADE
        + b"x-Custom: one\r\nX-CUSTOM: two\r\nCookie: a=1;\tb=\xe9t\xc3\xa9\r\n"
        + b"Sec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Protocol: other\r\n\r\n",
    ],
)
def test_the_request_is_the_one_websockets_would_have_parsed(raw: bytes) -> None:
    """Tried: requests with repeated headers, mixed-case names and non-ASCII bytes: the
    path and every header (name, value, case, order) are what `websockets` parses."""
    expected = websockets_parse(raw)
    request = _websocket_request(h11_request(raw))
    assert request is not None
    assert request.path == expected.path
    assert list(request.headers.raw_items()) == list(expected.headers.raw_items())


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("a POST", b"POST /ws/v1/ HTTP/1.1\r\n" + UPGRADE + b"Content-Length: 0\r\n\r\n"),
        ("HTTP/1.0", b"GET /ws/v1/ HTTP/1.0\r\n" + UPGRADE + b"\r\n"),
        ("a body", b"GET /ws/v1/ HTTP/1.1\r\n" + UPGRADE + b"Content-Length: 2\r\n\r\n"),
        ("chunks", b"GET /ws/v1/ HTTP/1.1\r\n" + UPGRADE + b"Transfer-Encoding: chunked\r\n\r\n"),
        (
            "too many headers",
            b"GET /ws/v1/ HTTP/1.1\r\n"
            + UPGRADE
            + b"".join(b"X-%d: 1\r\n" % n for n in range(MAX_NUM_HEADERS))
            + b"\r\n",
        ),
        (
            "a header line too long",
            b"GET /ws/v1/ HTTP/1.1\r\n"
            + UPGRADE
            + b"X-Long: "
            + b"a" * MAX_LINE_LENGTH
            + b"\r\n\r\n",
        ),
        (
            "a request line too long",
            b"GET /" + b"a" * MAX_LINE_LENGTH + b" HTTP/1.1\r\n" + UPGRADE + b"\r\n",
        ),
    ],
)
def test_what_websockets_refuses_goes_the_usual_way(name: str, raw: bytes) -> None:
    """Tried: each request `websockets`' parser refuses (a method, a version, a body, too
    many or too long lines): none is handed over parsed, so its parser still refuses it."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=4 * MAX_LINE_LENGTH)
    conn.receive_data(raw)
    event = conn.next_event()
    assert isinstance(event, h11.Request), name
    assert _websocket_request(event) is None, name


def test_a_request_just_inside_the_limits_is_handed_over() -> None:
    """Tried: the longest header line and the most headers `websockets` takes."""
    fill = MAX_NUM_HEADERS - UPGRADE.count(b"\r\n") - 1
    longest = b"X-Long: " + b"a" * (MAX_LINE_LENGTH - len(b"X-Long: \r\n")) + b"\r\n"
    raw = (
        b"GET /ws/v1/ HTTP/1.1\r\n"
        + UPGRADE
        + longest
        + b"".join(b"X-%d: 1\r\n" % n for n in range(fill))
        + b"\r\n"
    )
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=4 * MAX_LINE_LENGTH)
    conn.receive_data(raw)
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    request = _websocket_request(event)
    assert request is not None and len(list(request.headers.raw_items())) == MAX_NUM_HEADERS
    assert list(request.headers.raw_items()) == list(websockets_parse(raw).headers.raw_items())


async def echo_scope(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Accept, then answer each text frame with the path, query and one header of the scope."""
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    headers = {name.lower(): value for name, value in scope["headers"]}
    while (message := await receive())["type"] == "websocket.receive":
        answer = f"{scope['path']}|{scope['query_string'].decode()}|{headers[b'x-custom'].decode()}"
        await send({"type": "websocket.send", "text": f"{answer}|{message['text']}"})


def test_a_socket_upgraded_by_the_gateways_protocol_works(settings: Any) -> None:
    """Tried: a real uvicorn server with the gateways' HTTP and WebSocket protocols; a
    client that sends its first frame right behind the handshake, and a raw upgrade
    request with a body: the socket's scope is intact and its frames go both ways; the
    request with a body is answered 400 with the reason and closed (uvicorn left such a
    connection open and unanswered, and its shutdown then failed on it)."""

    async def scenario() -> tuple[list[str], bytes]:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        config = uvicorn.Config(
            echo_scope,
            http=H11WithHandshakeDeadline,
            ws=FlowControlledWebSocket,
            lifespan="off",
            log_level="warning",
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[listener]))
        try:
            while not server.started:
                await asyncio.sleep(0.01)
            url = f"ws://127.0.0.1:{port}/ws/v1/%7Eme?device=d-1"
            async with connect(url, additional_headers={"X-Custom": "yes"}) as ws:
                await ws.send("first")
                await ws.send("second")
                answers = [str(await ws.recv()), str(await ws.recv())]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /ws/v1/ HTTP/1.1\r\n" + UPGRADE + b"Content-Length: 2\r\n\r\nhi")
            answer = await asyncio.wait_for(reader.read(), 5)  # to the end: it is closed
            writer.close()
            await writer.wait_closed()
            return answers, answer
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 10)
            listener.close()

    answers, status = asyncio.run(scenario())
    assert answers == ["/ws/v1/~me|device=d-1|yes|first", "/ws/v1/~me|device=d-1|yes|second"]
    assert status.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert status.endswith(b"did not receive a valid HTTP request: unsupported request body.\n")
