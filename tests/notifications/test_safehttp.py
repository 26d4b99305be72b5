"""Push endpoints cannot be aimed inside our network: checked at send time, no SSRF."""

from __future__ import annotations

import http.server
import socket
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.utils import timezone

from accounts.models import User
from messaging import devices, services
from messaging.devices import SubscriptionKeys
from messaging.models import Device, Notification, NotificationDue, PushWindow
from messaging.notifications import decide, sending
from messaging.push import safehttp

SUBSCRIPTION_KEYS: SubscriptionKeys = {
    "p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u"
    "-Ts1XbjhazAkj7I99e8QcYP7DkM",
    "auth": "tBHItJI5svbpez7KI4CCXg",
}
# What public DNS answers for these names (this machine has no DNS beyond itself).
PUBLIC_DNS = {"localtest.me": "127.0.0.1", "169.254.169.254.nip.io": "169.254.169.254"}


@pytest.fixture
def public_dns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Answer names as the internet's DNS would; record every lookup."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        lookups.append(host)
        return real(PUBLIC_DNS.get(host, host), port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return lookups


@pytest.fixture
def trap() -> Iterator[list[tuple[str, int]]]:
    """Listen on 127.0.0.1:443 (and [::1]:443) and record every connection that arrives."""
    seen: list[tuple[str, int]] = []
    listeners = []
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, 443))
        except OSError as exc:
            pytest.fail(f"cannot listen on {host}:443 to watch for leaks: {exc}")
        sock.listen(16)
        sock.settimeout(0.2)
        listeners.append(sock)
    stop = threading.Event()

    def accept(sock: socket.socket) -> None:
        while not stop.is_set():
            try:
                conn, peer = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            seen.append(peer[:2])
            conn.close()

    threads = [threading.Thread(target=accept, args=(s,), daemon=True) for s in listeners]
    for thread in threads:
        thread.start()
    yield seen
    stop.set()
    for thread in threads:
        thread.join(2)
    for sock in listeners:
        sock.close()


@pytest.mark.parametrize(
    "endpoint",
    [
        "https://127.1/push/1",
        "https://0x7f.0.0.1/push/2",
        "https://localtest.me/push/3",
        "https://169.254.169.254.nip.io/latest/meta-data/",
        "https://2130706433/push/4",
        "https://[::1]/push/5",
        "https://[::ffff:127.0.0.1]/push/6",
        "https://10.1.2.3/push/7",
    ],
)
def test_endpoints_that_resolve_inside_are_refused_before_any_request(
    endpoint: str, public_dns: list[str], trap: list[tuple[str, int]]
) -> None:
    with pytest.raises(safehttp.Refused, match="non-public address"):
        safehttp.post(endpoint, b"x", {}, timeout=2)
    assert trap == []  # no connection reached the loopback listener


def test_plain_http_is_refused_unless_the_origin_is_allowed() -> None:
    with pytest.raises(safehttp.Refused, match="scheme"):
        safehttp.post("http://push.example.org/x", b"x", {}, timeout=2)
    with pytest.raises(safehttp.Refused, match="credentials"):
        safehttp.post("https://user:pw@push.example.org/x", b"x", {}, timeout=2)


def test_the_host_is_looked_up_once_and_that_address_is_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A name that answers a public address first and a private one next cannot slip in."""
    answers = iter(["203.0.113.9", "127.0.0.1"])  # 203.0.113.0/24 is not global either
    lookups: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        lookups.append(host)
        return real(next(answers), port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with pytest.raises(safehttp.Refused):
        safehttp.post("https://rebind.example.org/x", b"x", {}, timeout=2)
    assert lookups == ["rebind.example.org"]


class _Handler(http.server.BaseHTTPRequestHandler):
    answers: list[tuple[int, dict[str, str], bytes]] = []
    bodies: list[bytes] = []

    def do_POST(self) -> None:
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        status, headers, body = self.answers.pop(0)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def local_service() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Handler.answers, _Handler.bodies = [], []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_allowed_origin_is_reached_redirects_are_not_followed_answers_are_capped(
    local_service: str,
) -> None:
    _Handler.answers = [
        (201, {}, b""),
        (302, {"Location": "http://169.254.169.254/"}, b""),
        (400, {}, b"x" * (safehttp.MAX_RESPONSE_BYTES * 3)),
    ]
    allow = [local_service]

    created = safehttp.post(f"{local_service}/push/1", b"one", {}, timeout=2, allow=allow)
    moved = safehttp.post(f"{local_service}/push/1", b"two", {}, timeout=2, allow=allow)
    big = safehttp.post(f"{local_service}/push/1", b"three", {}, timeout=2, allow=allow)

    assert created.status == 201 and moved.status == 302  # not followed
    assert len(big.body) == safehttp.MAX_RESPONSE_BYTES
    assert _Handler.bodies == [b"one", b"two", b"three"]
    with pytest.raises(safehttp.Refused):  # the same origin, not allowed
        safehttp.post(f"{local_service}/push/1", b"four", {}, timeout=2)


@pytest.mark.django_db
def test_a_device_aimed_inside_is_refused_deleted_and_traced(
    ana: User, bo: User, settings: Any, public_dns: list[str], trap: list[tuple[str, int]]
) -> None:
    settings.WEBPUSH_VAPID_PRIVATE_KEY = "SV2IFc_uJK-CwmIulYEimUr95KPvJ94QByHSyq-GD9A"
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    # Registration checks only the spelling: these all pass it.
    names = ["127.1", "0x7f.0.0.1", "localtest.me", "169.254.169.254.nip.io"]
    for name in names:
        devices.register_device(
            user=bo,
            platform="webpush",
            subscription={"endpoint": f"https://{name}/push", "keys": SUBSCRIPTION_KEYS},
        )
    message = services.send_message(
        sender=ana, conversation_id=chat.pk, client_msg_id=uuid.uuid4(), body="hi"
    ).message
    NotificationDue.objects.update(due_at=timezone.now())  # the delay is over
    decide.decide_due_messages(now=timezone.now())

    (window_id,) = sending.claim_due_windows(now=timezone.now())
    sending.send_push_window(window_id)

    rows = Notification.objects.filter(user=bo, message=message)
    assert {(r.decision, r.reason) for r in rows} == {("failed", "provider_error")}
    assert all(r.provider_status.startswith("refused:") for r in rows)
    assert not Device.objects.filter(user=bo).exists()  # can never be delivered: removed
    assert trap == []
    assert PushWindow.objects.get(pk=window_id).due_at is None


@pytest.mark.django_db
def test_a_device_whose_host_does_not_resolve_is_kept_and_retried(
    ana: User, bo: User, settings: Any
) -> None:
    settings.WEBPUSH_VAPID_PRIVATE_KEY = "SV2IFc_uJK-CwmIulYEimUr95KPvJ94QByHSyq-GD9A"
    chat, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    devices.register_device(
        user=bo,
        platform="webpush",
        subscription={"endpoint": "https://push.invalid/x", "keys": SUBSCRIPTION_KEYS},
    )
    services.send_message(
        sender=ana, conversation_id=chat.pk, client_msg_id=uuid.uuid4(), body="hi"
    )
    NotificationDue.objects.update(due_at=timezone.now())  # the delay is over
    decide.decide_due_messages(now=timezone.now())

    (window_id,) = sending.claim_due_windows(now=timezone.now())
    sending.send_push_window(window_id)

    row = Notification.objects.get(user=bo)
    assert (row.decision, row.attempts) == ("pending", 1)  # a DNS failure may pass
    assert row.provider_status.startswith("unreachable: cannot resolve push.invalid")
    assert Device.objects.filter(user=bo).exists()
    window = PushWindow.objects.get(pk=window_id)
    assert window.due_at is not None and window.due_at > timezone.now()
