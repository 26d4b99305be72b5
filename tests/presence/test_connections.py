"""The registry of each user's live connections (`presence.connections`), for the cap of
WS_MAX_CONNECTIONS_PER_USER: in Redis, and in the process without it."""

import asyncio
import uuid
from typing import Any

import pytest

from presence import connections


@pytest.fixture(params=["redis", "in-process"])
def registry(request: pytest.FixtureRequest, settings: Any) -> str:
    """Use Redis (its own key prefix) or, with REDIS_URL unset, the in-process registry."""
    settings.REDIS_KEY_PREFIX = f"{settings.REDIS_KEY_PREFIX}-{uuid.uuid4().hex[:8]}"
    if request.param == "in-process":
        settings.REDIS_URL = ""
        settings.REDIS_SHARDS = []
    return str(request.param)


def test_a_connection_past_the_cap_evicts_the_oldest(registry: str) -> None:
    """Tried: three connections of one user under a cap of two, one at a time, then a
    closed one forgotten, then a fourth: each time the oldest past the cap is named and
    dropped from the registry, and another user's connections are not touched."""

    async def scenario() -> list[list[str]]:
        seen = [await connections.register(7, "other-user", limit=2)]
        for name in ("a", "b", "c"):
            seen.append(await connections.register(5, name, limit=2))
            await asyncio.sleep(0.002)  # connect times differ
        await connections.unregister(5, "b")
        seen.append(await connections.register(5, "d", limit=2))
        seen.append(await connections.register(5, "e", limit=2))
        return seen

    assert asyncio.run(scenario()) == [[], [], [], ["a"], [], ["c"]]
