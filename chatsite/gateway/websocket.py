"""The gateway's WebSocket protocol for uvicorn: the sans-I/O implementation, flow-controlled.

Gateways run `--ws chatsite.gateway:FlowControlledWebSocket`. It is uvicorn's
`websockets-sansio` implementation, which holds a socket in one protocol object, one
queue and the application's task. uvicorn's `--ws websockets` (the legacy `websockets`
server) adds per socket a reader task, a keepalive task, a close task and their futures
and queues, and wakes three of them for every frame: more memory for an idle socket and
more CPU for each heartbeat.

The sans-I/O implementation never makes a send wait, though: a client that stops
reading would grow the gateway's buffer without bound, and the gateway would not
notice (the 4429 close, `WS_SEND_TIMEOUT`, is a send that waited too long). This class
adds what is missing:

- flow control: a send waits while the transport's buffer is over its high-water mark
  (asyncio's `pause_writing`/`resume_writing`), as the legacy server's drain did;
- a close does not wait: its frame is queued behind what the client has not read, so a
  client that reads again sees everything and then the code; a connection still open
  `CLOSE_TIMEOUT` seconds after the close is aborted;
- a send after the connection was lost raises `ClientDisconnected` (as the legacy
  server does) instead of writing into a closed transport;
- a send may say how long it waits for room (`"timeout"`, seconds; the scope's
  `extensions` name `SEND_TIMEOUT_EXTENSION`): when it runs out the send raises
  `TimeoutError`. A send that finds room, nearly all of them, then costs no timer.

It also reads ahead. uvicorn stops reading the socket after every frame until the
application has taken it (a `pause_reading` and a `resume_reading`, two `epoll_ctl`
calls and a selector key per frame: about a tenth of an idle gateway's time, where
nearly every frame is a `ping`). Here reading stops only while more than
`READ_AHEAD_BYTES` or `READ_AHEAD_FRAMES` wait for the application, so a client that
sends faster than its frames are handled still holds at most that much (plus the frame
being parsed) of the gateway's memory.

It reads the client's frames itself too, in the same case (no extension), for the frame
nearly every message is: a final, masked text frame under 64 KB. `websockets`' parser,
a chain of generators and a `Frame` object per frame, took about 5 µs a frame in
process (0.6 here) and a tenth of an idle gateway's time. Every other frame (control
frames, fragments, binary, and what `websockets` refuses: unmasked, reserved bits,
text that is not UTF-8) is handed to `websockets` as a whole frame, so its parser sees
a stream of whole frames with some left out and answers them as before; a frame of 64
KB or more, or over the size limit, goes to it with all that follows, until its parser
is back at the start of a frame. This is done only while that parser waits at the start
of a frame with nothing read (`at_frame_start`); a frame cut by a read waits for its
end in the protocol (at most one frame under 64 KB).

And it writes a text frame itself when no extension was negotiated (the reference
client and most native clients ask for none; a browser's permessage-deflate goes the
usual way): a server's frames are not masked, so the bytes of a frame depend only on its
text, and a text sent to many sockets (`chatsite.gateway.socket.encode_shared` hands
every socket of a group the same string; such a send carries `"shared": True`) is framed
once per gateway (`text_frame`) instead of once per socket through `websockets`' frame
objects.
"""

from __future__ import annotations

import asyncio
import struct
from collections import OrderedDict
from typing import Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import apply_mask  # type: ignore[attr-defined]  # C, or Python
from websockets.protocol import Protocol, State
from websockets.server import ServerProtocol
from websockets.streams import StreamReader

from chatsite.gateway.inbox import Flag, Inbox

# Seconds a closed connection may take to hand its last bytes to the client (the legacy
# server's close timeout).
CLOSE_TIMEOUT = 10.0
# Received frames the application has not taken yet, at most, before reading stops.
READ_AHEAD_BYTES = 64 * 1024
READ_AHEAD_FRAMES = 64
# Named in the scope's extensions: a `websocket.send` may carry `"timeout"`, and
# `"shared": True` for a text sent as the same string to many sockets (its frame is kept).
SEND_TIMEOUT_EXTENSION = "chat.send_timeout"

# The frames of the shared texts sent last, by the identity of their text (held, so the
# id is not reused), for texts up to this size: a group's frame is framed once.
_FRAMED: OrderedDict[int, tuple[str, bytes]] = OrderedDict()
_FRAMED_SIZE = 256
_FRAMED_MAX_TEXT = 64 * 1024


def text_frame(text: str, *, shared: bool = False) -> bytes:
    """Return the bytes of a final, unmasked text frame of `text` (RFC 6455, 5.2).

    `shared`: the same string goes to many sockets; its frame is kept for them.
    """
    key = id(text)
    hit = _FRAMED.get(key) if shared else None
    if hit is not None and hit[0] is text:
        return hit[1]
    payload = text.encode()
    size = len(payload)
    if size < 126:
        head = bytes((0x81, size))
    elif size < 1 << 16:
        head = struct.pack("!BBH", 0x81, 126, size)
    else:
        head = struct.pack("!BBQ", 0x81, 127, size)
    frame = head + payload
    if shared and len(text) <= _FRAMED_MAX_TEXT:
        _FRAMED[key] = (text, frame)
        if len(_FRAMED) > _FRAMED_SIZE:
            _FRAMED.popitem(last=False)
    return frame


class FlowControlledWebSocket(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol whose sends wait for a client that reads."""

    # Slots, not entries of the instance's dict: one attribute more there would make
    # every connection's dict larger (+1.7 KB per idle socket, measured).
    __slots__ = ("_cut", "_unread")

    _abort_timer: asyncio.TimerHandle | None = None
    _lost = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unread = 0  # characters (text) or bytes of the frames queued for the application
        self._cut = b""  # the start of a frame the last read cut (`_read_frames`)
        # The same, in a fraction of the memory (`chatsite.gateway.inbox`).
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Flag()  # type: ignore[assignment]
        self.writable.set()

    def handle_connect(self, event: Any) -> None:
        """Accept as uvicorn does, and say in the scope that sends may carry a timeout."""
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][SEND_TIMEOUT_EXTENSION] = {}

    def data_received(self, data: bytes) -> None:
        """Read frames (`_read_frames`); answer a handshake request `websockets` refused.

        uvicorn answers a handshake the parser read but `accept` refused (a missing key,
        say). One the parser itself refused (a body, an unknown method or version, too
        many or too long header lines) it left open with no answer and no deadline, and
        its shutdown then failed on that connection (an `AssertionError`, the answer
        it tried to send being past the end already sent). Such a request now gets a 400
        with the reason, and the connection is closed.
        """
        if self.conn.state is State.OPEN and (
            self._cut
            or (self.handshake_complete and not self.conn.extensions and at_frame_start(self.conn))
        ):
            data = self._read_frames(data)
            if not data:
                return
        elif self._cut:  # closing: `websockets` reads the rest, from the cut frame on
            data, self._cut = self._cut + data, b""
        super().data_received(data)
        if self._handshake_refused():
            self._refuse()

    def _read_frames(self, data: bytes) -> bytes:
        """Read the whole frames under 64 KB at the start of `data`, one at a time.

        A final masked text frame is queued here; any other goes to `websockets` alone,
        a whole frame (control frames, fragments, binary, and what it refuses: unmasked,
        reserved bits, text that is not UTF-8). A frame the read cut waits for the next
        read. Return what `websockets` reads from here on: from a frame of 64 KB or more
        (it reads those in parts), or all that is left once it is no longer at the start
        of a frame (it closed the connection).
        """
        if self._cut:
            data, self._cut = self._cut + data, b""
        conn, limit = self.conn, self.conn.max_size
        start, end = 0, len(data)
        while end - start >= 2:
            first, second = data[start], data[start + 1]
            size, head = second & 0x7F, 2
            if size == 126:
                if end - start < 4:
                    break
                size, head = int.from_bytes(data[start + 2 : start + 4]), 4
            elif size == 127:
                return data[start:]
            if limit is not None and size > limit:
                return data[start:]
            if second & 0x80:  # masked, as a client's frames must be
                head += 4
            stop = start + head + size
            if stop > end:
                break
            if first == 0x81 and second & 0x80 and conn.cur_size is None:
                body = start + head
                try:
                    text = apply_mask(data[body:stop], data[body - 4 : body]).decode()
                except UnicodeDecodeError:
                    text = None  # `websockets` reads it too, and closes with 1007
                if text is not None:
                    self._queue_text(text)
                    start = stop
                    continue
            super().data_received(data[start:stop])
            start = stop
            if not (conn.state is State.OPEN and at_frame_start(conn)):
                return data[start:]
        if start < end:
            self._cut = data[start:]
        return b""

    def _handshake_refused(self) -> bool:
        """Whether the parser refused the handshake request (nothing was accepted or sent)."""
        return self.conn.handshake_exc is not None and not self.handshake_initiated

    def _refuse(self) -> None:
        error = self.conn.handshake_exc
        if error is None or self.transport.is_closing():
            return
        reason = f"{error}: {error.__cause__}" if error.__cause__ is not None else str(error)
        response = self.conn.reject(400, f"Failed to open a WebSocket connection: {reason}.\n")
        self.transport.write(response.serialize())
        self.transport.close()

    def shutdown(self) -> None:
        """Close a connection whose handshake was refused; others as uvicorn does."""
        if self._handshake_refused():
            self.transport.close()
            return
        super().shutdown()

    def send_receive_event_to_app(self) -> None:
        """Queue a received frame; stop reading only when too much waits unread."""
        if self.curr_msg_data_type == "text":
            try:
                text = self.bytes.decode()
            except UnicodeDecodeError:
                self.logger.info("Invalid UTF-8 sequence received from client.")
                self.conn.send_close(1007)
                self.handle_parser_exception()
                return
            self.bytes = b""  # not held until the next frame
            self._queue_text(text)
            return
        self.queue.put_nowait({"type": "websocket.receive", "bytes": self.bytes})
        self._unread += len(self.bytes)
        self.bytes = b""
        self._read_less()

    def _queue_text(self, text: str) -> None:
        self.queue.put_nowait({"type": "websocket.receive", "text": text})
        self._unread += len(text)
        self._read_less()

    def _read_less(self) -> None:
        """Stop reading while too much waits for the application."""
        if not self.read_paused and (
            self._unread > READ_AHEAD_BYTES or self.queue.qsize() > READ_AHEAD_FRAMES
        ):
            self.read_paused = True
            self.transport.pause_reading()

    async def receive(self) -> Any:
        """Hand the application the next event; read again once the backlog is gone."""
        message = await self.queue.get()
        if message["type"] == "websocket.receive":
            self._unread -= len(message.get("text") or message.get("bytes") or "")
        if self.read_paused and self.queue.empty():
            self.read_paused = False
            self.transport.resume_reading()
        return message

    def pause_writing(self) -> None:
        """Make sends wait: the transport's buffer passed its high-water mark."""
        self.writable.clear()

    def resume_writing(self) -> None:
        """Let sends go on: the buffer fell under its low-water mark."""
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        """Let a send that waits for room learn that the client is gone."""
        self._lost = True
        if self._abort_timer is not None:
            self._abort_timer.cancel()
            self._abort_timer = None
        super().connection_lost(exc)
        self.writable.set()

    async def send(self, message: Any) -> None:
        """Send as uvicorn does, but wait for room first and never write after a loss."""
        if message["type"] == "websocket.close" and self._open():
            self._close(message.get("code", 1000), message.get("reason", "") or "")
            return
        if not self.writable.is_set():
            timeout = message.get("timeout")
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation.
            async with asyncio.timeout(timeout):
                await self.writable.wait()
        if message["type"] == "websocket.send":
            if self._lost:
                raise ClientDisconnected()
            text = message.get("text")
            if (
                text
                and self.conn.state is State.OPEN
                and not self.conn.extensions
                and self.handshake_complete
                and self.initial_response is None
                and not self.close_sent
            ):
                self.transport.write(text_frame(text, shared=bool(message.get("shared"))))
                return
        await super().send(message)
        if message["type"] == "websocket.accept":
            # The handshake's request and response (their headers) are not needed again.
            self.request = self.response = None  # type: ignore[assignment]
            forget_handshake(self.conn)

    def _open(self) -> bool:
        """Answer whether the handshake is done and neither side has closed."""
        return (
            self.handshake_complete
            and self.initial_response is None
            and not self.close_sent
            and not self.transport.is_closing()
        )

    def _close(self, code: int, reason: str) -> None:
        """Queue the close frame behind what is unread, close, and abort if it hangs."""
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.transport.close()
        if not self._lost:
            self._abort_timer = self.loop.call_later(CLOSE_TIMEOUT, self._abort)

    def _abort(self) -> None:
        self._abort_timer = None
        if not self._lost:
            self.transport.abort()


def at_frame_start(conn: Protocol) -> bool:
    """Whether `conn`'s parser waits for the first byte of a frame, with nothing read.

    The parser of a connection whose handshake `forget_handshake` dropped.
    """
    waiting = getattr(conn.parser, "gi_yieldfrom", None)
    return getattr(waiting, "gi_code", None) is _AT_EOF and not conn.reader.buffer


_AT_EOF = StreamReader.at_eof.__code__


def forget_handshake(conn: ServerProtocol) -> bool:
    """Drop what the connection keeps of its handshake; return whether its parser was swapped.

    `ServerProtocol.parse` reads the handshake's request into a local variable and then
    parses frames for the connection's lifetime with `yield from Protocol.parse(...)`,
    so the request (every header, the credential among them) lives as long as the
    socket: about 1.5 KB, more for a browser. While that parser waits for the first byte
    of a frame (nothing of one read yet), a fresh `Protocol.parse` in its place is the
    same parser without the request. A parser in any other state is left as it is.
    The extensions offered in the handshake are not needed after it either.
    """
    conn.available_extensions = []
    outer = conn.parser
    inner = getattr(outer, "gi_yieldfrom", None)
    waiting = getattr(inner, "gi_yieldfrom", None)
    if (
        getattr(outer, "gi_code", None) is not ServerProtocol.parse.__code__
        or getattr(inner, "gi_code", None) is not Protocol.parse.__code__
        or getattr(waiting, "gi_code", None) is not StreamReader.at_eof.__code__
        or conn.reader.buffer
    ):
        return False
    parser = Protocol.parse(conn)
    next(parser)  # to its first wait for data, as the old one was
    conn.parser = parser
    return True
