"""Fixtures shared by the whole suite: users, conversations, a channel-layer listener.

The suite runs against the real PostgreSQL (`DATABASE_URL`) and Redis (`REDIS_URL`);
`make test` points both at the local servers. It refuses to run on anything else,
because the concurrency and fan-out tests would prove nothing there.
"""

import asyncio
import io
import itertools
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from channels.layers import channel_layers, get_channel_layer
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from pytest_django import DjangoDbBlocker

from accounts.models import User
from messaging.management.commands.partition_messages import partition_count
from messaging.models import Message
from tests.wirecheck import check_event

_counter = itertools.count(1)


# `tests/embedded/` runs on the embedded default (SQLite, in-memory channel layer, no
# Redis) in a process of its own (tests/test_embedded.py starts it with this set).
EMBEDDED = os.environ.get("CHAT_TESTS_EMBEDDED") == "1"
collect_ignore = [] if EMBEDDED else ["embedded"]

# CHAT_PARTITIONED_MESSAGES=1: once the test database exists, its message table becomes
# `PARTITION BY HASH (conversation_id)` (`manage.py partition_messages`), so the tests run
# on the partitioned layout unchanged. `make test` runs the message tests a second time so.
PARTITIONED = os.environ.get("CHAT_PARTITIONED_MESSAGES") == "1" and not EMBEDDED
TEST_PARTITIONS = 4


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to run without PostgreSQL and Redis (see the module docstring)."""
    if EMBEDDED:
        return
    missing = [name for name in ("DATABASE_URL", "REDIS_URL") if not os.environ.get(name)]
    if missing:
        raise pytest.UsageError(
            f"{' and '.join(missing)} not set: run the suite with `make test`, which points "
            "it at the local PostgreSQL and Redis."
        )


@pytest.fixture(scope="session")
def django_db_modify_db_settings() -> None:
    """Give each run its own test database, so concurrent runs never drop each other's."""
    if EMBEDDED:
        return  # SQLite's test database is in memory, private to this process
    database = settings.DATABASES["default"]
    # This process connects per thread and closes after each call (below); its pool
    # would outlive the test database. Gateways and workers that tests start keep theirs.
    database.get("OPTIONS", {}).pop("pool", None)
    database.setdefault("TEST", {})["NAME"] = f"test_{database['NAME']}_{os.getpid()}"


if PARTITIONED:

    @pytest.fixture(scope="session")
    def django_db_setup(django_db_setup: None, django_db_blocker: DjangoDbBlocker) -> None:
        """Create the test database as usual, then partition its message table."""
        out = io.StringIO()
        with django_db_blocker.unblock():
            call_command(
                "partition_messages", partitions=TEST_PARTITIONS, drop_old=True, stdout=out
            )
            with connection.cursor() as cursor:
                partitions = partition_count(cursor, Message._meta.db_table)
        assert partitions == TEST_PARTITIONS, out.getvalue()


@pytest.fixture(scope="session")
def partitioned_messages() -> bool:
    """Return whether this run's message table is partitioned (CHAT_PARTITIONED_MESSAGES=1)."""
    return PARTITIONED


@pytest.fixture(scope="session", autouse=True)
def _suite_settings() -> Iterator[None]:
    """Give this run its own channel-layer prefix on the shared Redis and fast hashing."""
    if EMBEDDED:
        assert connection.vendor == "sqlite", "the embedded suite runs on the embedded default"
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
        yield
        return
    assert connection.vendor == "postgresql", "the suite must run against PostgreSQL"
    # Threads that run database work close their connections after each call, as they
    # would in a request (gateways keep them; CONN_MAX_AGE comes from the environment).
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0
    # PBKDF2 at full strength costs ~0.3 s per user; tests create hundreds.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    config = settings.CHANNEL_LAYERS["default"]
    assert config["BACKEND"] == "chatsite.layers.BoundedPubSubChannelLayer"
    run_prefix = f"test-{uuid.uuid4().hex[:8]}"
    config["CONFIG"]["prefix"] = run_prefix
    settings.REDIS_KEY_PREFIX = run_prefix
    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture
def make_user(db: None) -> Callable[..., User]:
    """Return a factory of active users with unique usernames (password `pw-secret-1`)."""

    def make(username: str | None = None, **fields: Any) -> User:
        name = username or f"user{next(_counter)}"
        fields.setdefault("display_name", name.capitalize())
        return User.objects.create_user(username=name, password="pw-secret-1", **fields)

    return make


@pytest.fixture
def ana(make_user: Callable[..., User]) -> User:
    return make_user("ana", display_name="Ana")


@pytest.fixture
def bo(make_user: Callable[..., User]) -> User:
    return make_user("bo", display_name="Bo")


@pytest.fixture
def cy(make_user: Callable[..., User]) -> User:
    return make_user("cy", display_name="Cy")


class Listener:
    """A channel on the real channel layer that joins groups and reads their events.

    The pub/sub layer keeps subscriptions per event loop, so the listener owns one loop,
    running in a thread, and does all its channel-layer work there.
    """

    def __init__(self) -> None:
        self.layer = get_channel_layer()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.channel: str = self._run(self.layer.new_channel())

    def _run(self, work: Any, timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout)

    def join(self, group: str) -> None:
        self._run(self.layer.group_add(group, self.channel))

    def receive(self, timeout: float = 5.0) -> dict[str, Any]:
        async def read() -> dict[str, Any]:
            async with asyncio.timeout(timeout):
                message: dict[str, Any] = await self.layer.receive(self.channel)
                return message

        result: dict[str, Any] = self._run(read(), timeout + 1)
        return check_event(result)

    def mark(self, group: str) -> dict[str, Any]:
        """Send a marker event to `group`; return it to compare with what arrives next."""
        marker = {"type": "test.marker", "id": uuid.uuid4().hex}
        self._run(self.layer.group_send(group, marker))
        return marker

    def close(self) -> None:
        async def shutdown() -> None:
            await self.layer.flush()

        self._run(shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    """Return a fresh channel-layer listener on the real Redis layer."""
    listening = Listener()
    yield listening
    listening.close()


def queries_waiting_on_locks() -> int:
    """Return how many queries of the test database wait on a lock now."""
    from django.db import connections

    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        row = cursor.fetchone()
    return int(row[0]) if row else 0
