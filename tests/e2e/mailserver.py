"""A local SMTP server (aiosmtpd) that collects what it receives, for e2e tests."""

from __future__ import annotations

import collections
import email
import email.policy
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from bench.harness import _LIVE, LOCALHOST, HarnessError, Managed, free_port


@dataclass(frozen=True)
class Mail:
    """One message the server accepted: the parsed message and its SMTP envelope."""

    message: EmailMessage
    mail_from: str
    rcpt_tos: list[str]
    received_at: float = field(default_factory=time.monotonic)

    @property
    def subject(self) -> str:
        """Return the decoded Subject header ("" if none)."""
        return str(self.message.get("Subject", ""))

    @property
    def text(self) -> str:
        """Return the text/plain body ("" if none)."""
        return self._body("plain")

    @property
    def html(self) -> str:
        """Return the text/html body ("" if none)."""
        return self._body("html")

    def _body(self, subtype: str) -> str:
        part = self.message.get_body(preferencelist=(subtype,))
        if part is None or part.get_content_subtype() != subtype:
            return ""
        # As sent on the wire the lines end in CRLF.
        return str(part.get_content()).replace("\r\n", "\n")


class _Handler:
    def __init__(self, owner: SmtpServer) -> None:
        self.owner = owner

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return self.owner._receive(envelope)


class SmtpServer(Managed):
    """An SMTP server on 127.0.0.1:free port that accepts every message and keeps it."""

    def __init__(self) -> None:
        """Prepare (but do not start) the server."""
        self.host = LOCALHOST
        self.port = free_port()
        self._lock = threading.Condition()
        self._messages: list[Mail] = []
        self._refusals: collections.deque[str] = collections.deque()
        self.refused: list[tuple[str, list[str], str]] = []
        self._controller: Controller | None = None

    def worker_env(self) -> dict[str, str]:
        """Return the settings that make Django send its email here."""
        return {"EMAIL_HOST": self.host, "EMAIL_PORT": str(self.port)}

    @property
    def messages(self) -> list[Mail]:
        """Return every accepted message in arrival order."""
        with self._lock:
            return list(self._messages)

    def refuse_next(self, count: int = 1, reply: str = "451 4.3.0 Try again later") -> None:
        """Answer the next `count` messages' DATA with `reply` instead of accepting them."""
        with self._lock:
            self._refusals.extend([reply] * count)

    def wait_for(
        self, predicate: Callable[[Mail], bool] = lambda m: True, timeout: float = 10.0
    ) -> Mail:
        """Return the first message matching `predicate`; fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for mail in self._messages:
                    if predicate(mail):
                        return mail
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(m.rcpt_tos, m.subject) for m in self._messages]
                    raise AssertionError(
                        f"no matching email within {timeout} s; received {seen!r}, "
                        f"refused {self.refused!r}"
                    )
                self._lock.wait(min(left, 0.1))

    def _receive(self, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        mail_from = envelope.mail_from or ""
        rcpt_tos = list(envelope.rcpt_tos)
        with self._lock:
            if self._refusals:
                reply = self._refusals.popleft()
                self.refused.append((mail_from, rcpt_tos, reply))
                return reply
            message = email.message_from_bytes(data, policy=email.policy.default)
            self._messages.append(Mail(message, mail_from, rcpt_tos))
            self._lock.notify_all()
        return "250 Message accepted for delivery"

    def start(self) -> None:
        """Listen and serve in aiosmtpd's background thread."""
        # aiosmtpd logs every SMTP command at INFO: keep failure reports readable.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        self._controller = Controller(
            _Handler(self), hostname=self.host, port=self.port, server_hostname="localhost"
        )
        try:
            self._controller.start()
        except (OSError, RuntimeError, TimeoutError) as exc:
            self._controller = None
            raise HarnessError(f"SMTP server cannot listen on port {self.port}: {exc}") from exc
        _LIVE[id(self)] = self

    def close(self) -> None:
        """Stop the server."""
        if self._controller is not None:
            self._controller.stop(no_assert=True)
            self._controller = None
        _LIVE.pop(id(self), None)
