"""Obtaining a JWT pair over REST and turning it into handshake headers."""

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from chatclient import Auth, ChatError, bearer_auth, obtain_token


class TokenHandler(BaseHTTPRequestHandler):
    """Answer POST /api/v1/auth/token like the REST API: a pair, or a REST error."""

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        body = json.loads(self.rfile.read(length))
        if self.path != "/api/v1/auth/token" or self.headers["Content-Type"] != "application/json":
            self._answer(404, {"error": {"code": "not_found", "message": "No such page."}})
        elif body == {"username": "ana", "password": "pw-secret-1"}:
            self._answer(200, {"access": "acc", "refresh": "ref"})
        else:
            error = {"code": "bad_request", "message": "Wrong credentials.", "details": {}}
            self._answer(400, {"error": error})

    def _answer(self, status: int, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output quiet."""


@pytest.fixture
def http_base() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), TokenHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_obtain_token_returns_the_access_and_refresh_pair(http_base: str) -> None:
    tokens = asyncio.run(obtain_token(http_base + "/", "ana", "pw-secret-1"))

    assert tokens == {"access": "acc", "refresh": "ref"}


def test_obtain_token_raises_the_rest_error_code_on_refusal(http_base: str) -> None:
    with pytest.raises(ChatError) as raised:
        asyncio.run(obtain_token(http_base, "ana", "wrong"))

    assert raised.value.code == "bad_request"
    assert raised.value.message == "Wrong credentials."


def test_obtain_token_reports_an_unreachable_server_as_unavailable(http_base: str) -> None:
    with pytest.raises(ChatError) as raised:
        asyncio.run(obtain_token("http://127.0.0.1:9", "ana", "pw-secret-1", timeout=2))

    assert raised.value.code == "unavailable"


def test_obtain_token_refuses_a_non_http_base() -> None:
    with pytest.raises(ValueError):
        asyncio.run(obtain_token("file:///etc", "ana", "pw"))


def test_bearer_auth_builds_the_authorization_header_from_a_token_or_a_pair() -> None:
    async def headers(auth: Auth) -> dict[str, str]:
        return await auth()

    assert asyncio.run(headers(bearer_auth("abc"))) == {"Authorization": "Bearer abc"}
    pair = {"access": "acc", "refresh": "ref"}
    assert asyncio.run(headers(bearer_auth(pair))) == {"Authorization": "Bearer acc"}
