"""PostgreSQL connections stay within each process's pool under a burst of logins and sends.

The defect this guards against: under ASGI every thread kept a persistent connection of
its own, so two gateways serving REST logins only four at a time took PostgreSQL to its
100-connection limit within a minute, and logins then failed with 503 ("too many
clients"). Now each process holds at most `DB_POOL_SIZE` connections and a request waits
for a free one.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest

from bench.harness import PostgresCluster, migrate
from tests.e2e.conftest import MakeDeployment, MakeWorkers
from tests.e2e.faults_util import manage_shell

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

GATEWAY_POOL = 8
WORKER_POOL = 2
PASSWORD = "correct-horse-77"
USERS = 60

_SEED = """
import json, sys
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from accounts.models import User
from accounts.tokens import issue_pair
from messaging import services
hasher = PBKDF2PasswordHasher()
# Few iterations: the gateways check 60 passwords at once on two cores.
users = [
    User.objects.create(
        username=f"burst{{n}}", display_name=f"Burst {{n}}",
        password=hasher.encode({password!r}, hasher.salt(), iterations=1000),
    )
    for n in range({count})
]
# Senders of their own: a login with few iterations upgrades the hash, a password change
# that ends the tokens issued before it.
senders = [User.objects.create_user(username=f"sender{{n}}", password=None) for n in range(10)]
group = services.create_group(creator=senders[0], title="burst", member_ids=[u.pk for u in senders])
seed = {{"group": group.pk, "tokens": [issue_pair(u)["access"] for u in senders]}}
sys.stdout.write("SEED " + json.dumps(seed) + "\\n")
"""


def post(port: int, path: str, body: dict[str, Any], token: str | None = None) -> int:
    """POST JSON to a gateway; return the status (0 when the connection failed)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", path, json.dumps(body), headers)
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return 0
    finally:
        conn.close()


def test_a_burst_of_300_logins_and_sends_stays_within_the_connection_bound(
    make_deployment: MakeDeployment, make_workers: MakeWorkers
) -> None:
    with PostgresCluster(dbname="bound", settings={"max_connections": "40"}) as cluster:
        migrate(cluster.url)
        seed = manage_shell(cluster.url, _SEED.format(password=PASSWORD, count=USERS), "SEED")
        env = {
            "DB_POOL_SIZE": str(GATEWAY_POOL),
            "DB_POOL_TIMEOUT": "30",
            "CHAT_SEND_BURST": "1000",
            "API_THROTTLE_BURST": "1000",
            "LOGIN_ADDRESS_FAILURE_LIMIT": "1000",
        }
        deployment = make_deployment(gateways=2, env=env, database_url=cluster.url)
        make_workers(deployment, workers=1, beat=True, env={"DB_POOL_SIZE": str(WORKER_POOL)})
        ports = [int(url.rsplit(":", 1)[1].split("/")[0]) for url in deployment.http_urls]

        peak = 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak
            with psycopg.connect(cluster.admin_dsn("postgres"), autocommit=True) as conn:
                while not done.is_set():
                    (count,) = conn.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = 'bound'"
                    ).fetchone() or (0,)
                    peak = max(peak, int(count))
                    time.sleep(0.05)

        def login(n: int) -> int:
            body = {"username": f"burst{n % USERS}", "password": PASSWORD}
            return post(ports[n % 2], "/api/v1/auth/token", body)

        def send(n: int) -> int:
            path = f"/api/v1/conversations/{seed['group']}/messages"
            body = {"client_msg_id": str(uuid.uuid4()), "body": f"burst {n}"}
            return post(ports[n % 2], path, body, seed["tokens"][n % len(seed["tokens"])])

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=60) as pool:
            logins = list(pool.map(login, range(USERS)))
            sends = list(pool.map(send, range(300 - USERS)))
        took = time.monotonic() - started
        done.set()
        sampler.join(5)

    assert sorted(set(logins)) == [200], f"logins answered {sorted(set(logins))}"
    assert sorted(set(sends)) == [201], f"sends answered {sorted(set(sends))}"
    # Two gateways and the worker's two pool processes, each within its pool, and
    # nothing near PostgreSQL's limit of 40.
    bound = 2 * GATEWAY_POOL + 2 * WORKER_POOL
    assert peak <= bound, f"{peak} connections at the peak, bound {bound} ({took:.1f} s)"
