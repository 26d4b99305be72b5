"""Local servers that speak FCM HTTP v1 (with its OAuth 2 token endpoint) and APNs.

`FcmServer` is an HTTP/1.1 server: `/token` checks the service account's RS256
assertion (issuer, audience, scope, lifetime) and hands out bearer tokens;
`/v1/projects/{id}/messages:send` checks the bearer token and the message's shape
(`data` values strings, `android.collapse_key`, `android.priority`) and answers what a
test scripted per registration token (200 by default).

`ApnsServer` is HTTP/2 over TLS built on `h2` directly: it checks the provider JWT
(ES256, `kid`, `iss`, `iat` within the hour), the headers (`apns-topic`,
`apns-push-type`, `apns-collapse-id`) and the 4 KB limit, and answers 200, 410, 400
`BadDeviceToken`, 403 `ExpiredProviderToken` (that JWT is then expired for good), 429,
503 as scripted per device token, each after its delay and side by side with the
other streams (as APNs does); it counts the TLS connections it accepted and the most
requests it had in flight at once.

The tests (`tests/push/`) and the benchmark (`python -m bench.mobile_push`, the `mobile`
scenario of `make bench`) both use them.

Both generate their keys at start (`cryptography`) and write what the worker needs
(the service-account JSON, the .p8 key, the CA certificate) under a temporary directory;
`worker_env()` is the settings that point a worker at them.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import ssl
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
APNS_MAX_PAYLOAD = 4096


@dataclass(frozen=True)
class Answer:
    """What to answer one request: a status, an error code/reason, a delay, or hold it."""

    status: int = 200
    reason: str = ""
    delay: float = 0.0
    hold: bool = False
    retry_after: int | None = None


@dataclass
class Push:
    """One request the server accepted as well-formed, and what it answered."""

    token: str
    status: int
    payload: dict[str, Any]
    headers: dict[str, str]
    bearer: str
    received_at: float = field(default_factory=time.monotonic)


class _Base:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.scripts: dict[str, list[Answer]] = defaultdict(list)
        self.default = Answer()
        self.pushes: list[Push] = []
        self.rejections: list[str] = []
        self.held: list[Push] = []
        self.release = threading.Event()

    def script(self, token: str, *answers: Answer | int) -> None:
        """Answer the next requests to `token` with these, in order (then 200)."""
        with self.lock:
            self.scripts[token].extend(a if isinstance(a, Answer) else Answer(a) for a in answers)

    def _next(self, token: str) -> Answer:
        with self.lock:
            queue = self.scripts.get(token)
            return queue.pop(0) if queue else self.default

    def _reject(self, why: str) -> None:
        with self.lock:
            self.rejections.append(why)

    def _record(self, push: Push, answer: Answer) -> None:
        with self.lock:
            self.pushes.append(push)
            if answer.hold:
                self.held.append(push)

    def sent(self, token: str | None = None) -> list[Push]:
        """Return the requests answered 200 (to `token`)."""
        with self.lock:
            return [
                p for p in self.pushes if p.status == 200 and (token is None or p.token == token)
            ]

    def attempts(self, token: str | None = None) -> list[Push]:
        with self.lock:
            return [p for p in self.pushes if token is None or p.token == token]

    def wait_for(self, probe: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = probe()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not within {timeout} s: {what}; rejections {self.rejections}"
                )
            time.sleep(0.05)


# --- FCM -------------------------------------------------------------------------------


class FcmServer(_Base):
    """A local OAuth 2 token endpoint and FCM HTTP v1 send endpoint."""

    def __init__(self, directory: Path, *, token_lifetime: int = 3600) -> None:
        super().__init__()
        self.project_id = "chat-test"
        self.client_email = "push@chat-test.iam.gserviceaccount.com"
        self.key_id = uuid.uuid4().hex
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_key = key.public_key()
        self.token_lifetime = token_lifetime
        self.tokens: dict[str, float] = {}  # issued bearer token -> expiry
        self.token_requests: list[dict[str, Any]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.credentials_file = directory / "fcm-service-account.json"
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        self.credentials_file.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "project_id": self.project_id,
                    "private_key_id": self.key_id,
                    "private_key": pem,
                    "client_email": self.client_email,
                    "token_uri": f"{self.url}/token",
                }
            )
        )
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FcmServer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def worker_env(self) -> dict[str, str]:
        return {"FCM_ENDPOINT": self.url, "FCM_CREDENTIALS_FILE": str(self.credentials_file)}

    def _issue(self, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return 400, {"error": "unsupported_grant_type"}
        try:
            (assertion,) = form["assertion"]
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(
                assertion,
                self.public_key,
                algorithms=["RS256"],
                audience=f"{self.url}/token",
                issuer=self.client_email,
                options={"require": ["iat", "exp", "iss", "aud"]},
            )
        except (KeyError, ValueError, jwt.PyJWTError) as exc:
            self._reject(f"bad assertion: {exc}")
            return 400, {"error": "invalid_grant"}
        if header.get("kid") != self.key_id or claims.get("scope") != FCM_SCOPE:
            self._reject(f"bad assertion header/scope: {header} {claims}")
            return 400, {"error": "invalid_scope"}
        if claims["exp"] - claims["iat"] > 3600:
            self._reject("assertion lives over an hour")
            return 400, {"error": "invalid_grant"}
        token = f"ya29.{uuid.uuid4().hex}"
        with self.lock:
            self.tokens[token] = time.time() + self.token_lifetime
            self.token_requests.append(claims)
        return 200, {
            "access_token": token,
            "expires_in": self.token_lifetime,
            "token_type": "Bearer",
        }

    def _send(self, path: str, bearer: str, body: bytes) -> tuple[int, dict[str, Any], Answer]:
        ok = Answer()
        if path != f"/v1/projects/{self.project_id}/messages:send":
            self._reject(f"bad path {path}")
            return 404, {"error": {"status": "NOT_FOUND"}}, ok
        with self.lock:
            expiry = self.tokens.get(bearer)
        if expiry is None or expiry < time.time():
            self._reject("bad bearer token")
            return 401, {"error": {"status": "UNAUTHENTICATED"}}, ok
        try:
            message = json.loads(body)["message"]
            token = message["token"]
            data = message["data"]
            android = message["android"]
            assert isinstance(token, str) and token
            assert isinstance(data, dict) and all(isinstance(v, str) for v in data.values())
            assert android["priority"] in ("HIGH", "NORMAL")
            assert android["collapse_key"]
        except (KeyError, ValueError, TypeError, AssertionError) as exc:
            self._reject(f"bad message: {exc!r} {body[:300]!r}")
            return 400, {"error": {"status": "INVALID_ARGUMENT"}}, ok
        answer = self._next(token)
        if answer.delay:
            time.sleep(answer.delay)
        headers = {"collapse_key": android["collapse_key"], "priority": android["priority"]}
        self._record(Push(token, answer.status, data, headers, bearer), answer)
        if answer.hold:
            self.release.wait(60)
        if answer.status == 200:
            return 200, {"name": f"projects/{self.project_id}/messages/{uuid.uuid4().hex}"}, answer
        code = answer.reason or {404: "UNREGISTERED", 429: "QUOTA_EXCEEDED"}.get(answer.status, "")
        error = {"status": code, "details": [{"errorCode": code}]} if code else {}
        return answer.status, {"error": {"code": answer.status, **error}}, answer

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as FCM: the client's pool is reused
            disable_nagle_algorithm = True  # headers and body are two writes

            def log_message(self, *_: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                answer = Answer()
                if self.path == "/token":
                    status, reply = server._issue(parse_qs(body.decode()))
                else:
                    auth = self.headers.get("Authorization", "")
                    bearer = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
                    status, reply, answer = server._send(self.path, bearer, body)
                raw = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                if answer.retry_after is not None:
                    self.send_header("Retry-After", str(answer.retry_after))
                self.end_headers()
                self.wfile.write(raw)

        return Handler


# --- APNs ------------------------------------------------------------------------------


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """Write a self-signed certificate for 127.0.0.1/localhost and its key; return both."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "apns-ca.pem", directory / "apns-tls-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


class ApnsServer(_Base):
    """A local APNs provider API: HTTP/2 over TLS, token auth."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.team_id = "TEAM123456"
        self.key_id = "KEY1234567"
        self.topic = "org.example.chat"
        signing = ec.generate_private_key(ec.SECP256R1())
        self.public_key = signing.public_key()
        self.key_file = directory / "apns-AuthKey.p8"
        self.key_file.write_bytes(
            signing.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.ca_file, tls_key = _self_signed(directory)
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(self.ca_file, tls_key)
        self.tls.set_alpn_protocols(["h2"])
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self.listener.getsockname()[1]}"
        self.connections = 0
        # Requests received and not answered yet, now and at most (streams side by side).
        self.in_flight = 0
        self.max_in_flight = 0
        self.expired_jwts: set[str] = set()
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> ApnsServer:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping = True
        self.release.set()
        self.listener.close()

    def worker_env(self) -> dict[str, str]:
        return {
            "APNS_ENDPOINT": self.url,
            "APNS_KEY_FILE": str(self.key_file),
            "APNS_KEY_ID": self.key_id,
            "APNS_TEAM_ID": self.team_id,
            "APNS_TOPIC": self.topic,
            "APNS_CA_FILE": str(self.ca_file),
        }

    def _accept(self) -> None:
        while not self.stopping:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            sock = self.tls.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            self._reject(f"TLS handshake: {exc}")
            raw.close()
            return
        if sock.selected_alpn_protocol() != "h2":
            self._reject(f"ALPN {sock.selected_alpn_protocol()!r}, not h2")
            sock.close()
            return
        with self.lock:
            self.connections += 1
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        # Answers whose delay has not passed yet, by due time: streams are answered side
        # by side, as APNs does, not one after another.
        later: list[tuple[float, Callable[[], None]]] = []
        try:
            while not self.stopping:
                now = time.monotonic()
                due = [entry for entry in later if entry[0] <= now]
                for entry in due:
                    later.remove(entry)
                    entry[1]()
                if due:
                    sock.sendall(conn.data_to_send())
                wait = min((at for at, _ in later), default=now + 0.5) - now
                sock.settimeout(max(0.001, min(wait, 0.5)))
                try:
                    data = sock.recv(65535)
                except TimeoutError:
                    continue
                if not data:
                    return
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        headers = {
                            (k.decode() if isinstance(k, bytes) else k): (
                                v.decode() if isinstance(v, bytes) else v
                            )
                            for k, v in event.headers
                        }
                        streams[event.stream_id] = (headers, bytearray())
                    elif isinstance(event, h2.events.DataReceived):
                        streams[event.stream_id][1].extend(event.data)
                        conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    elif isinstance(event, h2.events.StreamEnded):
                        headers, body = streams.pop(event.stream_id)
                        self._respond(conn, event.stream_id, headers, bytes(body), later)
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        sock.sendall(conn.data_to_send())
                        return
                sock.sendall(conn.data_to_send())
        except (OSError, ssl.SSLError):
            return
        except h2.exceptions.ProtocolError as exc:
            # What APNs answers with GOAWAY PROTOCOL_ERROR: a client bug, made visible.
            self._reject(f"HTTP/2 protocol error: {exc!r}")
            return
        finally:
            sock.close()

    def _check(self, headers: dict[str, str], body: bytes) -> tuple[int, str, str, dict[str, Any]]:
        """Return (status, reason, device token, payload) of a request before any script."""
        path = headers.get(":path", "")
        token = path.removeprefix("/3/device/")
        if headers.get(":method") != "POST" or not path.startswith("/3/device/") or not token:
            return 405 if headers.get(":method") != "POST" else 404, "BadPath", token, {}
        auth = headers.get("authorization", "")
        bearer = auth.removeprefix("bearer ")
        if bearer in self.expired_jwts:
            return 403, "ExpiredProviderToken", token, {}
        try:
            header = jwt.get_unverified_header(bearer)
            claims = jwt.decode(
                bearer, self.public_key, algorithms=["ES256"], options={"require": ["iat", "iss"]}
            )
        except jwt.PyJWTError as exc:
            self._reject(f"bad provider token: {exc}")
            return 403, "InvalidProviderToken", token, {}
        if header.get("kid") != self.key_id or claims.get("iss") != self.team_id:
            self._reject(f"bad kid/iss: {header} {claims}")
            return 403, "InvalidProviderToken", token, {}
        if not time.time() - 3600 < claims["iat"] <= time.time() + 5:
            return 403, "ExpiredProviderToken", token, {}
        if headers.get("apns-topic") != self.topic:
            self._reject(f"bad topic {headers.get('apns-topic')}")
            return 400, "BadTopic", token, {}
        if headers.get("apns-push-type") not in ("alert", "background"):
            self._reject(f"bad push type {headers.get('apns-push-type')}")
            return 400, "InvalidPushType", token, {}
        if not headers.get("apns-collapse-id") or len(headers["apns-collapse-id"]) > 64:
            self._reject("no or long apns-collapse-id")
            return 400, "BadCollapseId", token, {}
        if len(body) > APNS_MAX_PAYLOAD:
            self._reject(f"payload of {len(body)} bytes")
            return 413, "PayloadTooLarge", token, {}
        try:
            payload = json.loads(body)
            assert isinstance(payload.get("aps"), dict)
        except (ValueError, AssertionError):
            self._reject(f"bad payload {body[:200]!r}")
            return 400, "BadPayload", token, {}
        return 200, "", token, payload

    def _respond(
        self,
        conn: h2.connection.H2Connection,
        stream: int,
        headers: dict[str, str],
        body: bytes,
        later: list[tuple[float, Callable[[], None]]],
    ) -> None:
        status, reason, token, payload = self._check(headers, body)
        bearer = headers.get("authorization", "").removeprefix("bearer ")
        answer = Answer(status, reason)
        if status != 200:
            self._record(Push(token, status, payload, headers, bearer), answer)
            self._reply(conn, stream, status, reason, answer, headers.get("apns-id"))
            return
        answer = self._next(token)
        if answer.reason == "ExpiredProviderToken":
            with self.lock:
                self.expired_jwts.add(bearer)
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

        def done() -> None:
            with self.lock:
                self.in_flight -= 1
            push = Push(token, answer.status, payload, headers, bearer, time.monotonic())
            self._record(push, answer)
            if not answer.hold:  # held: never answered, the worker is killed waiting
                self._reply(
                    conn, stream, answer.status, answer.reason, answer, headers.get("apns-id")
                )

        later.append((time.monotonic() + answer.delay, done))

    def _reply(
        self,
        conn: h2.connection.H2Connection,
        stream: int,
        status: int,
        reason: str,
        answer: Answer,
        apns_id: str | None = None,
    ) -> None:
        # APNs answers with the request's apns-id when it sent one (clients match on it).
        reply = [(":status", str(status)), ("apns-id", apns_id or str(uuid.uuid4()))]
        if answer.retry_after is not None:
            reply.append(("retry-after", str(answer.retry_after)))
        if status == 200:
            conn.send_headers(stream, reply, end_stream=True)
            return
        data = json.dumps({"reason": reason}).encode() if reason else b""
        reply.append(("content-type", "application/json"))
        conn.send_headers(stream, reply, end_stream=not data)
        if data:
            conn.send_data(stream, data, end_stream=True)
