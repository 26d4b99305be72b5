"""A local Web Push endpoint for the benchmark: decrypts every push and records its arrival.

It runs in its own process (so its decryption does not share the harness's GIL) on
127.0.0.1, and answers each POST to `/p/<name>` with 201 after `delay` seconds, like a
push service that takes 50 ms to accept. Before answering it reads the whole body,
notes the arrival time (wall clock, `time.time()`: the same clock as a message's
`created_at`), checks that the request is VAPID-signed (`Authorization: vapid t=…,k=…`)
and aes128gcm-encoded, and decrypts it with the subscription's private key
(`http_ece.decrypt`) to read what it carries (`message_id`).

The subscriptions are made here (`new_subscription`): a P-256 key pair and a 16-byte
auth secret per device; the harness registers the public half with the product
(`messaging.devices.register_device`) and hands the private half to the sink.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import multiprocessing
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

if TYPE_CHECKING:
    from messaging.devices import Subscription as PushSubscription

MAX_HEADER_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024


def b64url(data: bytes) -> str:
    """Encode `data` as base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def vapid_keypair() -> tuple[str, str]:
    """Return a new VAPID key pair: (public, private), base64url raw P-256, no padding.

    The same format as `messaging.push.webpush.generate_vapid_keys()`, made here because
    the deployment needs the keys in its environment before Django is set up.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_numbers().private_value.to_bytes(32, "big")
    public = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return b64url(public), b64url(private)


@dataclass(frozen=True)
class Subscription:
    """One device's Web Push subscription: what the product gets and what the sink keeps."""

    name: str
    endpoint: str
    p256dh: str  # base64url uncompressed public point (65 bytes)
    auth: str  # base64url 16-byte secret
    private_scalar: bytes  # the private key (32 bytes), kept by the sink only

    @property
    def info(self) -> PushSubscription:
        """Return the subscription as a browser gives it (`PushSubscription.toJSON()`)."""
        return {"endpoint": self.endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}


def new_subscription(origin: str, name: str) -> Subscription:
    """Return a fresh subscription whose endpoint is `<origin>/p/<name>`."""
    key = ec.generate_private_key(ec.SECP256R1())
    point = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    return Subscription(
        name=name,
        endpoint=f"{origin}/p/{name}",
        p256dh=b64url(point),
        auth=b64url(secrets.token_bytes(16)),
        private_scalar=key.private_numbers().private_value.to_bytes(32, "big"),
    )


class Arrival(NamedTuple):
    """One request that reached the sink."""

    name: str
    at: float  # time.time() when the whole body was read
    kind: str  # the payload's `type` ("message", "remove"), or "" when refused
    message_id: int | None
    status: int
    error: str


# --- the sink process ------------------------------------------------------------------


class _Sink:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.keys: dict[str, tuple[ec.EllipticCurvePrivateKey, bytes]] = {}
        self.arrivals: list[Arrival] = []
        self.open = 0

    def register(self, subs: Sequence[tuple[str, bytes, bytes]]) -> None:
        for name, scalar, auth in subs:
            key = ec.derive_private_key(int.from_bytes(scalar, "big"), ec.SECP256R1())
            self.keys[name] = (key, auth)

    def check(self, path: str, headers: dict[str, str], body: bytes) -> Arrival:
        import http_ece  # type: ignore[import-untyped,unused-ignore]

        at = time.time()
        name = path.removeprefix("/p/")
        sub = self.keys.get(name)
        if not path.startswith("/p/") or sub is None:
            return Arrival(name, at, "", None, 404, "unknown subscription")
        auth = headers.get("authorization", "")
        if not auth.lower().startswith("vapid ") or "t=" not in auth or "k=" not in auth:
            return Arrival(name, at, "", None, 401, f"no VAPID authorization: {auth[:60]!r}")
        if headers.get("content-encoding") != "aes128gcm":
            return Arrival(name, at, "", None, 400, "not aes128gcm")
        try:
            plain = http_ece.decrypt(
                body, private_key=sub[0], auth_secret=sub[1], version="aes128gcm"
            )
            payload = json.loads(plain)
        except Exception as exc:  # noqa: BLE001 - any failure is a refused push, recorded
            return Arrival(name, at, "", None, 400, f"cannot decrypt: {exc!r}"[:200])
        kind = str(payload.get("type", ""))
        message_id = payload.get("message_id")
        return Arrival(
            name, at, kind, int(message_id) if isinstance(message_id, int) else None, 201, ""
        )

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.open += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _version = [*lines[0].split(" "), "", "", ""][:3]
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        key, value = line.split(":", 1)
                        headers[key.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0") or 0)
                if length > MAX_BODY_BYTES:
                    await self.reply(writer, 413, close=True)
                    return
                try:
                    body = await reader.readexactly(length) if length else b""
                except (asyncio.IncompleteReadError, OSError):
                    return
                if method != "POST":
                    await self.reply(writer, 405, close=True)
                    return
                arrival = self.check(path, headers, body)
                self.arrivals.append(arrival)
                if self.delay > 0:
                    await asyncio.sleep(self.delay)
                close = headers.get("connection", "").lower() == "close"
                await self.reply(writer, arrival.status, close=close)
                if close:
                    return
        finally:
            self.open -= 1
            with contextlib.suppress(OSError):
                writer.close()

    @staticmethod
    async def reply(writer: asyncio.StreamWriter, status: int, *, close: bool) -> None:
        reason = {201: "Created", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}
        head = [
            f"HTTP/1.1 {status} {reason.get(status, 'Error')}",
            "Content-Length: 0",
            f"Connection: {'close' if close else 'keep-alive'}",
        ]
        if status == 201:
            head.append(f"Location: /m/{secrets.token_hex(8)}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        with contextlib.suppress(OSError):
            await writer.drain()


def _main(conn: Connection, delay: float) -> None:
    asyncio.run(_serve(conn, delay))


async def _serve(conn: Connection, delay: float) -> None:
    sink = _Sink(delay)
    server = await asyncio.start_server(sink.handle, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    conn.send(("port", port))
    async with server:
        while True:
            command, arg = await asyncio.to_thread(conn.recv)
            if command == "register":
                sink.register(arg)
                conn.send(("ok", len(sink.keys)))
            elif command == "delay":
                sink.delay = float(arg)
                conn.send(("ok", sink.delay))
            elif command == "take":
                taken, sink.arrivals = sink.arrivals, []
                conn.send(("arrivals", [tuple(a) for a in taken]))
            elif command == "exit":
                conn.send(("ok", None))
                return


# --- the harness's handle --------------------------------------------------------------


class PushSink:
    """The sink process, seen from the harness: start, register subscriptions, collect."""

    def __init__(self, delay: float = 0.05) -> None:
        """Prepare a sink that answers each push after `delay` seconds."""
        self.delay = delay
        self.port = 0
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None

    @property
    def origin(self) -> str:
        """Return `http://127.0.0.1:<port>` (what PUSH_ENDPOINT_ALLOW must list)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """Return the sink process's pid (0 before start)."""
        if self._process is None or self._process.pid is None:
            return 0
        return self._process.pid

    def start(self, timeout: float = 30.0) -> None:
        """Start the process and wait until it listens."""
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        process = context.Process(
            target=_main, args=(child, self.delay), name="bench-push-sink", daemon=True
        )
        process.start()
        child.close()
        self._process, self._conn = process, parent
        self.port = int(self._ask(None, "port", timeout))

    def _ask(self, command: tuple[str, Any] | None, kind: str, timeout: float = 60.0) -> Any:
        assert self._conn is not None and self._process is not None
        if command is not None:
            self._conn.send(command)
        if not self._conn.poll(timeout):
            raise TimeoutError(f"push sink did not answer {kind!r} in {timeout:.0f} s")
        got, value = self._conn.recv()
        if got != kind:
            raise RuntimeError(f"push sink answered {got!r}, expected {kind!r}")
        return value

    def register(self, subscriptions: Sequence[Subscription]) -> None:
        """Give the sink the private keys of `subscriptions`."""
        keys = [
            (s.name, s.private_scalar, base64.urlsafe_b64decode(s.auth + "=="))
            for s in subscriptions
        ]
        self._ask(("register", keys), "ok")

    def set_delay(self, seconds: float) -> None:
        """Answer later pushes after `seconds`."""
        self.delay = self._ask(("delay", seconds), "ok")

    def take(self) -> list[Arrival]:
        """Return (and forget) every arrival recorded since the last `take()`."""
        return [Arrival(*a) for a in self._ask(("take", None), "arrivals")]

    def close(self) -> None:
        """Stop the process."""
        process, conn = self._process, self._conn
        if process is None or conn is None:
            return
        with contextlib.suppress(OSError, TimeoutError, RuntimeError, EOFError):
            self._ask(("exit", None), "ok", timeout=5)
        process.join(5)
        if process.is_alive():
            process.kill()
            process.join()
        conn.close()
        self._process = self._conn = None
