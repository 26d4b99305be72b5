"""A local Web Push service (RFC 8030, RFC 8291 aes128gcm, RFC 8292 VAPID) for e2e tests."""

from __future__ import annotations

import base64
import collections
import contextlib
import http.server
import json
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, Self, TypeVar

import http_ece  # type: ignore[import-untyped,unused-ignore]
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from py_vapid import Vapid  # type: ignore[import-untyped,unused-ignore]

from bench.harness import _LIVE, LOCALHOST, HarnessError, Managed, free_port

if TYPE_CHECKING:
    from messaging.devices import Subscription as PushSubscription
    from messaging.devices import SubscriptionKeys

# RFC 8030 section 5.3 and 5.4.
URGENCIES = ("very-low", "low", "normal", "high")
_TOPIC = re.compile(r"[A-Za-z0-9_-]{1,32}")
_TTL = re.compile(r"[0-9]+")
# `vapid t=<jwt>, k=<key>` in either order (RFC 8292 section 3).
_VAPID_SCHEME = re.compile(r"vapid\s+(.+)", re.IGNORECASE | re.DOTALL)
_AUTH_PARAM = re.compile(r"\s*([A-Za-z]+)\s*=\s*([A-Za-z0-9._=-]+)\s*")
# The largest payload every push service must accept (RFC 8030 section 7.2).
MAX_BODY = 4096
# A VAPID JWT may not expire more than 24 hours after it is used (RFC 8292 section 2).
MAX_JWT_LIFETIME = 24 * 3600

_T = TypeVar("_T")


def b64url(data: bytes) -> str:
    """Encode `data` as base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    """Decode base64url with or without padding."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _public_point(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)


def vapid_keypair() -> tuple[str, str]:
    """Return a new VAPID key pair (public_b64url, private_b64url): raw P-256 point, scalar."""
    key = ec.generate_private_key(ec.SECP256R1())
    private = b64url(key.private_numbers().private_value.to_bytes(32, "big"))
    public = b64url(_public_point(key.public_key()))
    # The server signs with py_vapid: make sure it reads this key as we mean it.
    if b64url(_public_point(Vapid.from_string(private).public_key)) != public:
        raise HarnessError("py_vapid derives another public key from the private key")
    return public, private


class Answer(NamedTuple):
    """A scripted answer of the push service to one request."""

    status: int
    retry_after: int | None = None
    body: bytes = b""
    # Read and record the request, then answer nothing until `release_held()`.
    hold: bool = False


class Attempt(NamedTuple):
    """A request that reached the service: whose, what it answered ("held"), its Topic."""

    name: str | None
    status: int | str
    topic: str | None


class Rejection(NamedTuple):
    """A request the service refused as a protocol error, and why."""

    name: str | None
    reason: str


@dataclass(frozen=True)
class Delivery:
    """A push message the service accepted (or held), decrypted."""

    name: str
    payload: dict[str, Any]
    topic: str | None
    urgency: str | None
    ttl: int
    # Request headers, names lower-cased.
    headers: dict[str, str]
    received_at: float = field(default_factory=time.monotonic)
    received_wall: float = field(default_factory=time.time)


@dataclass
class _Subscription:
    name: str
    token: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    gone: bool = False

    @property
    def info(self) -> SubscriptionKeys:
        return {
            "p256dh": b64url(_public_point(self.private_key.public_key())),
            "auth": b64url(self.auth),
        }


class _ProtocolError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class _Held:
    delivery: Delivery
    answer: Answer
    released: threading.Event = field(default_factory=threading.Event)
    deliver: bool = False
    dropped: bool = False


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    # Keep-alive connections hold their handler thread: never join them on close.
    block_on_close = False

    def __init__(self, service: PushService, address: tuple[str, int]) -> None:
        self.service = service
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    # An idle keep-alive connection is closed after this many seconds.
    timeout = 30

    def do_POST(self) -> None:
        self.server.service._handle(self)

    def do_GET(self) -> None:
        self.reply(405, b"push endpoints take POST\n")

    def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        self.server.service._log(format % args)


class PushService(Managed):
    """A Web Push service on 127.0.0.1:free port that checks, decrypts and records pushes.

    Every request is checked as a real push service would (VAPID JWT for this origin
    signed by `vapid_public`, aes128gcm body for the subscription's keys, TTL, Urgency,
    Topic); a failure is answered 400/401 and recorded in `rejections`, never delivered.
    `script(name, ...)` makes the next requests for a subscription answer otherwise.
    """

    def __init__(
        self,
        vapid_public: str,
        *,
        vapid_private: str | None = None,
        log_path: Path | None = None,
    ) -> None:
        """Prepare a service that accepts pushes signed by the VAPID key `vapid_public`."""
        self.vapid_public = vapid_public
        self.vapid_private = vapid_private
        self._expected_key = unb64url(vapid_public)
        self.port = free_port()
        self.log_path = log_path
        self._lock = threading.Condition()
        self._subscriptions: dict[str, _Subscription] = {}
        self._by_token: dict[str, _Subscription] = {}
        self._scripts: dict[str, collections.deque[Answer]] = {}
        self._deliveries: list[Delivery] = []
        self._attempts: list[Attempt] = []
        self._rejections: list[Rejection] = []
        self._held: list[_Held] = []
        self._log_lines: list[str] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def origin(self) -> str:
        """Return the service's origin, the `aud` every VAPID JWT must carry."""
        return f"http://{LOCALHOST}:{self.port}"

    def worker_env(self) -> dict[str, str]:
        """Return the settings that make a worker sign for and push to this service."""
        env = {"WEBPUSH_VAPID_PUBLIC_KEY": self.vapid_public, "PUSH_ENDPOINT_ALLOW": self.origin}
        if self.vapid_private is not None:
            env["WEBPUSH_VAPID_PRIVATE_KEY"] = self.vapid_private
        return env

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Listen on the service's port and serve in a background thread."""
        try:
            self._server = _Server(self, (LOCALHOST, self.port))
        except OSError as exc:
            raise HarnessError(f"push service cannot listen on {self.origin}: {exc}") from exc
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"push-service-{self.port}",
            daemon=True,
        )
        self._thread.start()
        _LIVE[id(self)] = self

    def close(self) -> None:
        """Stop serving; held requests are dropped unanswered, open connections are cut."""
        with self._lock:
            for held in self._held:
                held.dropped = True
                held.released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.drop_connections()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        _LIVE.pop(id(self), None)

    # --- subscriptions and scripts ---------------------------------------------------

    def subscribe(self, name: str) -> PushSubscription:
        """Create a subscription as a browser does; return its PushSubscription JSON."""
        with self._lock:
            if name in self._subscriptions:
                raise ValueError(f"subscription {name!r} exists")
            sub = _Subscription(
                name=name,
                token=secrets.token_urlsafe(16),
                private_key=ec.generate_private_key(ec.SECP256R1()),
                auth=secrets.token_bytes(16),
            )
            self._subscriptions[name] = sub
            self._by_token[sub.token] = sub
        return {"endpoint": f"{self.origin}/push/{sub.token}", "keys": sub.info}

    def unsubscribe(self, name: str) -> None:
        """End a subscription: from now on its endpoint answers 410 Gone."""
        with self._lock:
            self._subscriptions[name].gone = True

    def script(self, name: str, *answers: int | Answer) -> None:
        """Queue answers for the next requests to `name` (after them: 201 again)."""
        queued = [a if isinstance(a, Answer) else Answer(a) for a in answers]
        with self._lock:
            if name not in self._subscriptions:
                raise KeyError(f"no subscription {name!r}")
            self._scripts.setdefault(name, collections.deque()).extend(queued)

    def release_held(self, *, deliver: bool = False) -> int:
        """Answer every held request as scripted; return how many were held.

        With `deliver`, a held request answered 2xx is also recorded as a delivery (the
        service got it whole, so it may deliver it even if the sender never heard back).
        """
        with self._lock:
            held, self._held = self._held, []
        for item in held:
            item.deliver = deliver
            item.released.set()
        return len(held)

    # --- what was received -----------------------------------------------------------

    def deliveries(self, name: str | None = None) -> list[Delivery]:
        """Return the accepted pushes in arrival order (only `name`'s if given)."""
        with self._lock:
            return [d for d in self._deliveries if name is None or d.name == name]

    def shown(self, name: str) -> list[dict[str, Any]]:
        """Return what `name`'s device shows: payloads in order, a Topic replacing its last."""
        shown: list[Delivery] = []
        for delivery in self.deliveries(name):
            if delivery.topic is not None:
                shown = [d for d in shown if d.topic != delivery.topic]
            shown.append(delivery)
        return [d.payload for d in shown]

    @property
    def attempts(self) -> list[Attempt]:
        """Return every request that reached the service, in order."""
        with self._lock:
            return list(self._attempts)

    @property
    def rejections(self) -> list[Rejection]:
        """Return every request refused as a protocol error, with the reason."""
        with self._lock:
            return list(self._rejections)

    @property
    def held(self) -> list[Delivery]:
        """Return the requests held unanswered right now."""
        with self._lock:
            return [h.delivery for h in self._held]

    def output(self) -> str:
        """Return the service's request log."""
        with self._lock:
            return "\n".join(self._log_lines)

    def wait_for(
        self, predicate: Callable[[Delivery], bool] = lambda d: True, timeout: float = 10.0
    ) -> Delivery:
        """Return the first delivery matching `predicate`; fail after `timeout` seconds."""
        return self._wait(
            lambda: next((d for d in self._deliveries if predicate(d)), None), timeout
        )

    def wait_for_attempt(
        self, predicate: Callable[[Attempt], bool] = lambda a: True, timeout: float = 10.0
    ) -> Attempt:
        """Return the first attempt matching `predicate`; fail after `timeout` seconds."""
        return self._wait(lambda: next((a for a in self._attempts if predicate(a)), None), timeout)

    def wait_for_held(self, name: str | None = None, timeout: float = 10.0) -> Delivery:
        """Return the first request held now (for `name` if given); fail after `timeout`."""
        return self._wait(
            lambda: next(
                (h.delivery for h in self._held if name is None or h.delivery.name == name), None
            ),
            timeout,
        )

    def _wait(self, find: Callable[[], _T | None], timeout: float) -> _T:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = find()
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"nothing matched within {timeout} s; {self._summary()}")
                self._lock.wait(min(left, 0.1))

    def _summary(self) -> str:
        deliveries = [(d.name, d.topic, d.payload) for d in self._deliveries]
        held = [(h.delivery.name, h.delivery.topic) for h in self._held]
        return (
            f"deliveries={deliveries!r} attempts={self._attempts!r} "
            f"rejections={self._rejections!r} held={held!r}"
        )

    # --- the protocol ----------------------------------------------------------------

    def _log(self, line: str) -> None:
        with self._lock:
            self._log_lines.append(line)
        if self.log_path is not None:
            with self.log_path.open("a") as log:
                log.write(line + "\n")

    def _handle(self, request: _Handler) -> None:
        length = request.headers.get("Content-Length")
        if length is None or not length.isdigit():
            request.close_connection = True
            self._record(Attempt(None, 411, None), Rejection(None, "no Content-Length"))
            request.reply(411, b"Content-Length required\n")
            return
        body = request.rfile.read(int(length))
        headers = {k.lower(): v for k, v in request.headers.items()}
        topic = headers.get("topic")
        match = re.fullmatch(r"/push/([A-Za-z0-9_-]+)", request.path)
        with self._lock:
            sub = self._by_token.get(match.group(1)) if match else None
        if sub is None:
            self._record(Attempt(None, 404, topic))
            request.reply(404, b"no such subscription\n")
            return
        if sub.gone:
            self._record(Attempt(sub.name, 410, topic))
            request.reply(410, b"subscription expired\n")
            return
        try:
            delivery = self._check(sub, headers, body)
        except _ProtocolError as error:
            self._record(Attempt(sub.name, error.status, topic), Rejection(sub.name, error.reason))
            request.reply(error.status, error.reason.encode() + b"\n")
            return
        with self._lock:
            queue = self._scripts.get(sub.name)
            answer = queue.popleft() if queue else Answer(201)
        if answer.hold:
            self._hold(request, delivery, answer)
            return
        if answer.status < 300:
            self._record(Attempt(sub.name, answer.status, topic), delivery=delivery)
        else:
            self._record(Attempt(sub.name, answer.status, topic))
        request.reply(answer.status, answer.body, self._answer_headers(answer))

    def _hold(self, request: _Handler, delivery: Delivery, answer: Answer) -> None:
        held = _Held(delivery, answer)
        with self._lock:
            self._held.append(held)
            self._attempts.append(Attempt(delivery.name, "held", delivery.topic))
            self._lock.notify_all()
        held.released.wait()
        if held.dropped:
            request.close_connection = True
            return
        if held.deliver and answer.status < 300:
            self._record(delivery=delivery)
        request.reply(answer.status, answer.body, self._answer_headers(answer))

    def _answer_headers(self, answer: Answer) -> dict[str, str]:
        headers: dict[str, str] = {}
        if answer.status == 201:
            headers["Location"] = f"{self.origin}/message/{secrets.token_urlsafe(12)}"
        if answer.retry_after is not None:
            headers["Retry-After"] = str(answer.retry_after)
        return headers

    def _record(
        self,
        attempt: Attempt | None = None,
        rejection: Rejection | None = None,
        delivery: Delivery | None = None,
    ) -> None:
        with self._lock:
            if attempt is not None:
                self._attempts.append(attempt)
            if rejection is not None:
                self._rejections.append(rejection)
            if delivery is not None:
                self._deliveries.append(delivery)
            self._lock.notify_all()

    def _check(self, sub: _Subscription, headers: dict[str, str], body: bytes) -> Delivery:
        """Return the decrypted delivery, or raise _ProtocolError with what is wrong."""
        self._check_vapid(headers.get("authorization"))
        encoding = headers.get("content-encoding")
        if encoding != "aes128gcm":
            raise _ProtocolError(400, f"Content-Encoding is {encoding!r}, not aes128gcm")
        ttl = headers.get("ttl")
        if ttl is None or not _TTL.fullmatch(ttl.strip()):
            raise _ProtocolError(400, f"TTL is {ttl!r}, not an integer >= 0")
        urgency = headers.get("urgency")
        if urgency is not None and urgency not in URGENCIES:
            raise _ProtocolError(400, f"Urgency {urgency!r} is not one of {URGENCIES}")
        topic = headers.get("topic")
        if topic is not None and not _TOPIC.fullmatch(topic):
            raise _ProtocolError(400, f"Topic {topic!r} is not 1-32 base64url characters")
        if not body:
            raise _ProtocolError(400, "empty body: no payload")
        if len(body) > MAX_BODY:
            raise _ProtocolError(413, f"body of {len(body)} bytes exceeds {MAX_BODY}")
        try:
            plain = http_ece.decrypt(
                body, private_key=sub.private_key, auth_secret=sub.auth, version="aes128gcm"
            )
        except (http_ece.ECEException, ValueError) as exc:
            raise _ProtocolError(400, f"cannot decrypt the body: {exc}") from exc
        try:
            payload = json.loads(plain)
        except ValueError as exc:
            raise _ProtocolError(400, f"payload is not JSON: {plain[:100]!r}") from exc
        if not isinstance(payload, dict):
            raise _ProtocolError(400, f"payload is not a JSON object: {payload!r}")
        return Delivery(
            name=sub.name,
            payload=payload,
            topic=topic,
            urgency=urgency,
            ttl=int(ttl),
            headers=headers,
        )

    def _check_vapid(self, authorization: str | None) -> None:
        if authorization is None:
            raise _ProtocolError(401, "no Authorization header")
        scheme = _VAPID_SCHEME.fullmatch(authorization.strip())
        if scheme is None:
            raise _ProtocolError(401, f"Authorization is not `vapid ...`: {authorization!r}")
        params: dict[str, str] = {}
        for part in scheme.group(1).split(","):
            param = _AUTH_PARAM.fullmatch(part)
            if param is None or param.group(1).lower() in params:
                raise _ProtocolError(401, f"malformed vapid parameters: {authorization!r}")
            params[param.group(1).lower()] = param.group(2)
        if set(params) != {"t", "k"}:
            raise _ProtocolError(401, f"vapid needs t= and k=, got {sorted(params)}")
        try:
            key_bytes = unb64url(params["k"])
        except ValueError as exc:
            raise _ProtocolError(401, f"k is not base64url: {params['k']!r}") from exc
        if key_bytes != self._expected_key:
            raise _ProtocolError(401, f"k is not the subscription's VAPID key: {params['k']!r}")
        public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key_bytes)
        try:
            claims = jwt.decode(
                params["t"],
                key=public_key,
                algorithms=["ES256"],
                audience=self.origin,
                options={"require": ["exp", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise _ProtocolError(401, f"JWT expired: {exc}") from exc
        except jwt.InvalidAudienceError as exc:
            raise _ProtocolError(401, f"JWT aud is not {self.origin}: {exc}") from exc
        except jwt.InvalidTokenError as exc:
            raise _ProtocolError(401, f"JWT invalid: {type(exc).__name__}: {exc}") from exc
        if claims["aud"] != self.origin:
            raise _ProtocolError(401, f"JWT aud {claims['aud']!r} is not {self.origin}")
        if claims["exp"] > time.time() + MAX_JWT_LIFETIME:
            raise _ProtocolError(401, f"JWT exp {claims['exp']} is more than 24 h ahead")
        sub = claims["sub"]
        if not isinstance(sub, str) or not sub.startswith(("mailto:", "https:")):
            raise _ProtocolError(401, f"JWT sub {sub!r} is not a mailto: or https: URL")


class Trap:
    """Listen on `host:port` and record every TCP connection (closed at once) made to it.

    A test points an endpoint that must never be contacted here and asserts that
    `connections` stays empty. Port 443 needs root; a busy port raises HarnessError.
    """

    def __init__(self, host: str = LOCALHOST, port: int | None = None) -> None:
        """Prepare a trap on `host:port` (a free port when None)."""
        self.host = host
        self.port = free_port() if port is None else port
        self._connections: list[tuple[tuple[str, int], float]] = []
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closing = False

    @property
    def connections(self) -> list[tuple[tuple[str, int], float]]:
        """Return every connection accepted: (peer address, monotonic time)."""
        with self._lock:
            return list(self._connections)

    def start(self) -> None:
        """Bind and listen; raise HarnessError if the address cannot be bound."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
            sock.listen(64)
        except OSError as exc:
            sock.close()
            raise HarnessError(
                f"trap cannot listen on {self.host}:{self.port} ({exc}); "
                "is the port taken, or does it need root?"
            ) from exc
        self._sock = sock
        self._thread = threading.Thread(
            target=self._accept, args=(sock,), name=f"trap-{self.port}", daemon=True
        )
        self._thread.start()
        _LIVE[id(self)] = self

    def _accept(self, sock: socket.socket) -> None:
        # The socket comes as an argument: close() drops self._sock while this
        # thread may be between two accept() calls.
        while True:
            try:
                conn, peer = sock.accept()
            except OSError:
                return
            if self._closing:
                conn.close()
                return
            with self._lock:
                self._connections.append((peer, time.monotonic()))
            conn.close()

    def close(self) -> None:
        """Stop listening."""
        self._closing = True
        if self._sock is not None:
            # shutdown() wakes the thread blocked in accept().
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        _LIVE.pop(id(self), None)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
