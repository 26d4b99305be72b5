"""`/healthz` and `/readyz`: PostgreSQL and Redis answer, the gateway is not draining.

What is tried: both up; Redis unreachable (a closed port); the gateway draining (the
flag SIGTERM sets); and, under production settings with the HTTPS redirect on, a plain
HTTP probe (answered, not redirected, while the API is redirected).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from django.test import Client
from pytest_django.fixtures import SettingsWrapper

from bench.harness import free_port
from chatsite.gateway import drain
from chatsite.redis import forget_clients
from tests.test_settings import production_env, run

pytestmark = pytest.mark.django_db


@pytest.fixture
def fresh_redis_client() -> Iterator[None]:
    forget_clients()
    yield
    forget_clients()


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_both_up_is_200_with_each_check(client: Client, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": True, "redis": True}}
    assert "no-cache" in response["Cache-Control"]


def test_redis_unreachable_is_503_and_says_which(
    client: Client, settings: SettingsWrapper, fresh_redis_client: None
) -> None:
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": True, "redis": False},
    }


def test_a_draining_gateway_fails_both_checks_while_its_services_are_fine(
    client: Client,
) -> None:
    drain.state.draining = True
    try:
        answers = [client.get(path) for path in ("/healthz", "/readyz")]
    finally:
        drain.state.draining = False

    assert [a.status_code for a in answers] == [503, 503]
    assert answers[0].json()["status"] == "draining"
    assert answers[0].json()["checks"] == {"database": True, "redis": True}
    assert client.get("/healthz").status_code == 200


def test_probes_are_not_redirected_to_https_but_the_api_is() -> None:
    probe = (
        "import json, django; django.setup(); from django.test import Client; "
        "c = Client(SERVER_NAME='chat.example.com'); "
        "print(json.dumps({p: c.get(p).status_code for p in "
        "('/healthz', '/readyz', '/metrics', '/api/v1/conversations')}))"
    )
    result = run(production_env(), "-c", probe)

    assert result.returncode == 0, result.stderr
    codes = json.loads(result.stdout.strip().splitlines()[-1])
    # Embedded defaults (SQLite, no Redis): healthy. /metrics is exempt too (404 until
    # a gateway serves it, never a redirect).
    assert codes["/healthz"] == 200 and codes["/readyz"] == 200
    assert codes["/metrics"] in (200, 404)
    assert codes["/api/v1/conversations"] == 301
