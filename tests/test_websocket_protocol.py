"""The gateway's WebSocket protocol (`FlowControlledWebSocket`) on real sockets.

A uvicorn server runs in the test's event loop with the protocol and a small ASGI
application of the test's own, so the test decides when the application takes frames;
the client is the `websockets` library over loopback.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn
from websockets.asyncio.client import connect
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import Protocol
from websockets.server import ServerProtocol

from chatsite.gateway import websocket as websocket_module
from chatsite.gateway.websocket import (
    READ_AHEAD_BYTES,
    SEND_TIMEOUT_EXTENSION,
    FlowControlledWebSocket,
    forget_handshake,
)

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
# Small kernel buffers on both ends (they also turn off Linux's autotuning, up to 32 MB
# here), so what the server does not read backs up to the client after a few hundred KB.
KERNEL_BUFFER = 64 * 1024


@asynccontextmanager
async def serving(app: App, max_size: int = 2**20) -> AsyncIterator[str]:
    """Serve `app` with the gateway's protocol on a loopback port; yield its URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, KERNEL_BUFFER)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = uvicorn.Config(
        app, ws=FlowControlledWebSocket, lifespan="off", log_level="warning", ws_max_size=max_size
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        yield f"ws://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        listener.close()


HANDSHAKE = (
    b"GET /ws/v1/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer secret-token\r\n\r\n"
)


def accepted_connection() -> ServerProtocol:
    """A sans-I/O server connection that has read HANDSHAKE and answered 101."""
    conn = ServerProtocol()
    conn.receive_data(HANDSHAKE)
    [request] = conn.events_received()
    assert isinstance(request, Request)
    conn.send_response(conn.accept(request))
    conn.data_to_send()
    return conn


def masked_text(text: str) -> bytes:
    """A client's text frame, as it goes over the wire (masked)."""
    frame = Frame(Opcode.TEXT, text.encode())
    return frame.serialize(mask=True)


def texts(conn: ServerProtocol) -> list[str]:
    """The text frames the connection has parsed since last asked."""
    return [bytes(e.data).decode() for e in conn.events_received() if isinstance(e, Frame)]


def holds_a_request(conn: ServerProtocol) -> bool:
    """Whether anything the connection's parser chain keeps is the handshake's request."""
    generator: Any = conn.parser
    while generator is not None:
        frame = generator.gi_frame
        if frame is not None and any(isinstance(v, Request) for v in frame.f_locals.values()):
            return True
        generator = generator.gi_yieldfrom
    return False


def test_after_the_handshake_the_parser_keeps_no_request_and_still_reads_frames() -> None:
    # Tried: a connection whose handshake carried a bearer token. websockets' parser keeps
    # the request (the token among its headers) for the connection's lifetime;
    # `forget_handshake` swaps it for a frame parser, and frames, one whole and one that
    # arrives a byte at a time, are read exactly as before.
    conn = accepted_connection()
    assert holds_a_request(conn), "websockets no longer keeps the request: drop the swap"
    assert forget_handshake(conn)
    assert not holds_a_request(conn)
    assert conn.parser.gi_code is Protocol.parse.__code__  # type: ignore[attr-defined]
    conn.receive_data(masked_text("hello"))
    for byte in masked_text("one byte at a time"):
        conn.receive_data(bytes([byte]))
    assert texts(conn) == ["hello", "one byte at a time"]
    assert conn.parser_exc is None
    assert conn.available_extensions == []


def test_a_parser_in_the_middle_of_a_frame_is_left_as_it_is() -> None:
    # Tried: the client's first frame arrives split, and the swap is asked for between
    # the two halves. Replacing the parser then would lose the half already read, so it
    # is left alone (and keeps the request), and the frame arrives whole.
    conn = accepted_connection()
    frame = masked_text("split in two")
    conn.receive_data(frame[:3])
    assert not forget_handshake(conn)
    conn.receive_data(frame[3:])
    assert texts(conn) == ["split in two"]


def client_socket(port_url: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, KERNEL_BUFFER)
    host, port = port_url.removeprefix("ws://").rstrip("/").split(":")
    sock.connect((host, int(port)))
    sock.setblocking(False)
    return sock


def test_a_client_faster_than_its_application_is_read_only_a_bounded_way_ahead() -> None:
    # Tried: a client sends 16 MB in 64 KB frames while the application takes none of
    # them. The server stops reading after READ_AHEAD_BYTES (plus the kernel buffers),
    # so the client's sends back up instead of the server's memory growing; once the
    # application reads again every frame arrives, in order, none lost.
    frame_size, count = 64 * 1024, 256
    release = asyncio.Event()
    received: list[str] = []
    scope_extensions: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        scope_extensions.update(scope["extensions"])
        await send({"type": "websocket.accept"})
        await release.wait()
        while len(received) < count:
            message = await receive()
            assert message["type"] == "websocket.receive"
            received.append(message["text"])
        await send({"type": "websocket.send", "text": "all"})
        await receive()  # the client's close

    async def scenario() -> tuple[int, int]:
        async with serving(app) as url:
            sock = client_socket(url)
            async with connect(url, sock=sock, max_size=None, compression=None) as ws:
                sent = 0

                async def flood() -> None:
                    nonlocal sent
                    for number in range(count):
                        await ws.send(f"{number:08d}".ljust(frame_size, "x"))
                        sent += 1

                flooding = asyncio.create_task(flood())
                # Wait until the sends stop making progress.
                last = -1
                while sent != last and not flooding.done():
                    last = sent
                    await asyncio.sleep(0.5)
                held = sent
                release.set()
                await asyncio.wait_for(flooding, 30)
                answer = await asyncio.wait_for(ws.recv(), 30)
                assert answer == "all"
                return held, sent

    held, sent = asyncio.run(scenario())
    assert sent == count
    taken = held * frame_size
    # Read ahead, the kernel buffers of both ends and the client's own write buffer: well
    # under a megabyte here. Reading everything would have taken all 16 MB.
    assert taken < READ_AHEAD_BYTES + 2 * 1024 * 1024, f"the server took {taken} bytes unread"
    assert [int(text[:8]) for text in received] == list(range(count))
    assert SEND_TIMEOUT_EXTENSION in scope_extensions


def test_a_send_that_finds_no_room_raises_timeout_error_when_its_timeout_runs_out() -> None:
    # Tried: the application sends 256 KB frames to a client that never reads, each send
    # with a 0.5 s timeout. Once the buffers are full a send waits for room, and gives up
    # with TimeoutError after its timeout instead of waiting for ever.
    outcome: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        loop = asyncio.get_running_loop()
        sent = 0
        try:
            while sent < 1000:
                started = loop.time()
                await send({"type": "websocket.send", "text": "y" * 256 * 1024, "timeout": 0.5})
                sent += 1
        except TimeoutError:
            outcome["waited"] = loop.time() - started
        outcome["sent"] = sent
        await send({"type": "websocket.close", "code": 4429})

    async def scenario() -> None:
        async with serving(app) as url:
            sock = client_socket(url)
            async with connect(url, sock=sock, max_size=None, compression=None) as ws:
                ws.transport.pause_reading()
                for _ in range(100):
                    if "sent" in outcome:
                        break
                    await asyncio.sleep(0.1)
                ws.transport.abort()

    asyncio.run(scenario())
    assert outcome.get("sent", 1000) < 1000, "every send found room: the client read them"
    assert 0.4 < outcome["waited"] < 5


def test_text_frames_written_by_the_gateway_arrive_whole_with_and_without_compression() -> None:
    # Tried: texts of every length encoding (under 126 bytes, 16-bit and 64-bit lengths;
    # multi-byte characters), each sent twice as the same string object as a group's
    # frame is (`shared`), a text that is not shared, an empty text and a binary frame,
    # to a client that negotiated no extension (the gateway frames the texts itself, a
    # shared one once) and to one that negotiated permessage-deflate (framed and
    # compressed by `websockets`).
    framed_here: dict[str, list[bool]] = {}

    def texts_for(kind: str) -> list[str]:
        # New string objects for each connection (the frame cache is by identity).
        return [f"hi {kind}", "é" * 150 + kind, "x" * 70_000 + kind]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        compressed = (
            "permessage-deflate"
            in dict(scope["headers"]).get(b"sec-websocket-extensions", b"").decode()
        )
        kind = "deflate" if compressed else "plain"
        texts_sent = texts_for(kind)
        for text in texts_sent:
            for _ in range(2):
                await send({"type": "websocket.send", "text": text, "shared": True})
        reply = f"a reply {kind}"
        await send({"type": "websocket.send", "text": reply})
        await send({"type": "websocket.send", "text": ""})  # sends nothing, as before
        await send({"type": "websocket.send", "bytes": b"\x00\x01"})
        framed_here[kind] = [id(text) in websocket_module._FRAMED for text in [*texts_sent, reply]]
        await send({"type": "websocket.close", "code": 1000})

    async def receive_all(url: str, compression: str | None) -> list[Any]:
        async with connect(url, max_size=None, compression=compression) as ws:
            return [message async for message in ws]

    async def scenario() -> list[list[Any]]:
        async with serving(app) as url:
            return [await receive_all(url, None), await receive_all(url, "deflate")]

    plain, deflate = asyncio.run(scenario())
    for kind, received in (("plain", plain), ("deflate", deflate)):
        shared = [text for text in texts_for(kind) for _ in range(2)]
        assert received == [*shared, f"a reply {kind}", b"\x00\x01"]
    # Kept: the shared texts up to 64 KB, framed here; not the reply, not the 70 KB text.
    assert framed_here == {
        "plain": [True, True, False, False],
        "deflate": [False, False, False, False],
    }


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True) -> bytes:
    """A client's frame as bytes, built by hand (so it can also be what `websockets` refuses)."""
    size = len(payload)
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head = bytes((opcode | (0x80 if fin else 0), mask_bit | size))
    elif size < 1 << 16:
        head = bytes((opcode | (0x80 if fin else 0), mask_bit | 126)) + size.to_bytes(2)
    else:
        head = bytes((opcode | (0x80 if fin else 0), mask_bit | 127)) + size.to_bytes(8)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def raw_session(
    url: str, chunks: list[bytes], *, pause: float = 0.0, wait: float = 5.0
) -> tuple[bytes, bool]:
    """Open a WebSocket by hand, write `chunks` (`pause` s apart), and return what the
    server wrote after its 101 and whether it closed the connection within `wait` s."""
    loop = asyncio.get_running_loop()
    sock = client_socket(url)
    try:
        await loop.sock_sendall(sock, HANDSHAKE)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += await loop.sock_recv(sock, 4096)
        assert answer.startswith(b"HTTP/1.1 101"), answer
        after = answer.split(b"\r\n\r\n", 1)[1]
        try:
            for chunk in chunks:
                await loop.sock_sendall(sock, chunk)
                if pause:
                    await asyncio.sleep(pause)
        except (ConnectionResetError, BrokenPipeError):
            pass  # the server closed before all was written (a refused frame)
        closed = False
        try:
            async with asyncio.timeout(wait):
                while data := await loop.sock_recv(sock, 65536):
                    after += data
                closed = True
        except TimeoutError:
            pass
        return after, closed
    finally:
        sock.close()


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """The (opcode, payload) of the server's (unmasked) frames in `data`."""
    frames, at = [], 0
    while at + 2 <= len(data):
        opcode, size, head = data[at] & 0x0F, data[at + 1] & 0x7F, 2
        if size == 126:
            size, head = int.from_bytes(data[at + 2 : at + 4]), 4
        elif size == 127:
            size, head = int.from_bytes(data[at + 2 : at + 10]), 10
        frames.append((opcode, data[at + head : at + head + size]))
        at += head + size
    return frames


def recording_app(events: list[dict[str, Any]], done: asyncio.Event, expected: int) -> App:
    """An application that records what it receives, until `expected` frames or a close."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            events.append(message)
            if message["type"] == "websocket.disconnect" or len(events) >= expected:
                done.set()
                if message["type"] != "websocket.disconnect":
                    await send({"type": "websocket.send", "text": "got all"})
                return

    return app


@pytest.mark.parametrize("cut", ["whole", "bytes of 1 to 7"])
def test_every_kind_of_client_frame_arrives_in_order_read_here_or_by_websockets(
    cut: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tried: small text frames and texts of 16-bit length (the gateway reads those itself)
    # between frames it hands to `websockets`: a text in two fragments, a binary frame, a
    # ping, an empty text, a text of 70 KB (64-bit length); multi-byte characters; written
    # at once, then in pieces of 1 to 7 bytes (every small frame cut by reads somewhere).
    # Every text and binary arrives whole and in order, the ping is answered, and
    # `websockets` parsed only the frames handed to it (its `Frame.parse`, counted).
    parsed: list[int] = []
    original = Frame.parse.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Frame], *args: Any, **kwargs: Any) -> Any:
        frame = yield from original(cls, *args, **kwargs)
        parsed.append(int(frame.opcode))
        return frame

    monkeypatch.setattr(Frame, "parse", classmethod(counting))
    expected: list[tuple[str, Any]] = [
        ("text", '{"type":"ping"}'),
        ("text", "é" * 100),
        ("text", "m" * 300),
        ("text", "first half, second half"),
        ("bytes", b"\x00\x01\x02"),
        ("text", "after the ping"),
        ("text", ""),
        ("text", "x" * 70_000),
        ("text", "last"),
    ]
    stream = b"".join(
        [
            client_frame(0x1, expected[0][1].encode()),
            client_frame(0x1, expected[1][1].encode()),
            client_frame(0x1, expected[2][1].encode()),
            client_frame(0x1, b"first half, ", fin=False),
            client_frame(0x0, b"second half"),
            client_frame(0x2, expected[4][1]),
            client_frame(0x9, b"are you there"),
            client_frame(0x1, expected[5][1].encode()),
            client_frame(0x1, b""),
            client_frame(0x1, expected[7][1].encode()),
            client_frame(0x1, b"last"),
        ]
    )
    if cut == "whole":
        chunks = [stream]
    else:
        sizes = itertools.cycle(range(1, 8))
        chunks, at = [], 0
        while at < len(stream):
            size = next(sizes) if at < 2_000 or at > len(stream) - 2_000 else 16_384
            chunks.append(stream[at : at + size])
            at += size
    events: list[dict[str, Any]] = []

    async def scenario() -> bytes:
        done = asyncio.Event()
        async with serving(recording_app(events, done, len(expected))) as url:
            written, _ = await raw_session(url, chunks, pause=0.0005 if len(chunks) > 1 else 0)
            await asyncio.wait_for(done.wait(), 10)
            return written

    written = asyncio.run(scenario())
    received = [
        ("text", e["text"]) if e.get("text") is not None else ("bytes", e["bytes"]) for e in events
    ]
    assert received == expected
    frames = server_frames(written)
    assert (0xA, b"are you there") in frames, "the ping was answered"
    assert (0x1, b"got all") in frames
    # websockets parsed the two fragments, the binary frame, the ping and the 70 KB text
    # (and, with it, the frame after it when both came in one read); the small texts and
    # those of 16-bit length were read here.
    assert parsed[:5] == [0x1, 0x0, 0x2, 0x9, 0x1]
    assert parsed[5:] == ([0x1] if cut == "whole" else parsed[5:]) and len(parsed) <= 6


@pytest.mark.parametrize(
    ("tried", "frame", "code", "max_size"),
    [
        ("text that is not UTF-8", client_frame(0x1, b"ok \xff\xfe"), 1007, 2**20),
        ("an unmasked text frame", client_frame(0x1, b"hello", masked=False), 1002, 2**20),
        ("reserved bits set", b"\xf1" + client_frame(0x1, b"hello")[1:], 1002, 2**20),
        ("a frame over the size limit", client_frame(0x1, b"y" * (2**20 + 1)), 1009, 2**20),
        ("a 16-bit frame over a small limit", client_frame(0x1, b"y" * 1001), 1009, 1000),
        (
            "a final text between fragments",
            client_frame(0x1, b"a", fin=False) + client_frame(0x1, b"b"),
            1002,
            2**20,
        ),
    ],
    ids=["not utf-8", "unmasked", "reserved bits", "over the limit", "over 1000", "fragments"],
)
def test_a_bad_frame_after_good_ones_is_refused_with_its_close_code(
    tried: str, frame: bytes, code: int, max_size: int
) -> None:
    # Tried: two small text frames, then `tried`. The two arrive; the bad frame is
    # refused as `websockets` refuses it (the gateway hands it over): the close frame
    # carries `code`, and the connection is closed.
    events: list[dict[str, Any]] = []

    async def scenario() -> tuple[bytes, bool]:
        done = asyncio.Event()
        async with serving(recording_app(events, done, 3), max_size) as url:
            stream = client_frame(0x1, b"one") + client_frame(0x1, b"two") + frame
            return await raw_session(url, [stream])

    written, closed = asyncio.run(scenario())
    assert [e.get("text") for e in events[:2]] == ["one", "two"]
    assert all(e["type"] != "websocket.receive" for e in events[2:]), tried
    closes = [payload for opcode, payload in server_frames(written) if opcode == 0x8]
    assert closes and int.from_bytes(closes[0][:2]) == code, (tried, closes)
    assert closed, f"{tried}: the connection stayed open"
