"""Fixtures of the mobile push tests: the e2e stack (gateways, Celery) and the local servers."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.pushfakes import ApnsServer, FcmServer
from tests.e2e.conftest import (  # noqa: F401 - fixtures and the failure-log hook
    db_url,
    make_deployment,
    make_workers,
    pytest_runtest_makereport,
    redis_server,
)


@pytest.fixture
def fcm_server(tmp_path: Path) -> Iterator[FcmServer]:
    """Return a running local OAuth 2 + FCM HTTP v1 server with a fresh service account."""
    with FcmServer(tmp_path) as server:
        yield server


@pytest.fixture
def apns_server(tmp_path: Path) -> Iterator[ApnsServer]:
    """Return a running local APNs (HTTP/2 over TLS) with a fresh signing key and TLS cert."""
    with ApnsServer(tmp_path) as server:
        yield server
