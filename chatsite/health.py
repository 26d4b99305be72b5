"""Health checks for load balancers: `/healthz` and `/readyz`.

Both answer 200 `{"status": "ok", "checks": {...}}` when PostgreSQL and Redis answer, and
503 when one does not or when the gateway is draining (after SIGTERM: its clients are
moving to the other gateways, so it must get no new ones). `/readyz` is the same check
under the name orchestrators use for readiness. Neither is redirected to HTTPS (a load
balancer probes over plain HTTP on the private network).
"""

from __future__ import annotations

import psycopg
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from redis.exceptions import RedisError

from chatsite.gateway.drain import draining
from chatsite.redis import sync_clients

# With a connection pool the check waits at most this long for a connection (not the
# pool's DB_POOL_TIMEOUT): a probe must get its 503 before its own timeout.
DATABASE_TIMEOUT = 2.0


def database_answers() -> bool:
    """Run `SELECT 1` on the default database (through the pool when there is one)."""
    pool = getattr(connection, "pool", None)
    try:
        if pool is not None:
            pool.open()  # a no-op once open; Django opens it on first use
            with pool.connection(timeout=DATABASE_TIMEOUT) as conn:
                conn.execute("SELECT 1")
        else:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
    except (DatabaseError, psycopg.Error):  # psycopg_pool.PoolTimeout is a psycopg.Error
        return False
    return True


def redis_answers() -> bool:
    """PING every Redis shard (bounded by REDIS_SOCKET_TIMEOUT); True on the embedded default."""
    try:
        return all(client.ping() for client in sync_clients())
    except (RedisError, OSError):
        return False


@never_cache
def healthz(request: HttpRequest) -> JsonResponse:
    """Answer 200 when PostgreSQL and Redis answer and the gateway is not draining."""
    checks = {"database": database_answers(), "redis": redis_answers()}
    if draining():
        status = "draining"
    elif all(checks.values()):
        status = "ok"
    else:
        status = "unavailable"
    return JsonResponse({"status": status, "checks": checks}, status=200 if status == "ok" else 503)


readyz = healthz
