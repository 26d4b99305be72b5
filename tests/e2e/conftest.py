"""Fixtures for end-to-end tests: a private Redis and real gateway processes on the test DB.

Gateways are separate processes, so they only see committed rows: every e2e test that
uses them runs with `@pytest.mark.django_db(transaction=True)` (`db_url` requests
`transactional_db` either way). When a test fails, each gateway's log is attached to the
failure report.
"""

import contextlib
import resource
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from channels.layers import channel_layers
from django.conf import settings

from bench.harness import (
    CeleryBeat,
    CeleryWorker,
    Deployment,
    Gateway,
    RedisServer,
    redis_db_url,
)
from chatsite.redis import forget_clients
from tests.e2e.browser import (  # noqa: F401 - fixtures of every module
    browser,
    make_web,
    playwright,
    web,
)
from tests.e2e.mailserver import SmtpServer
from tests.e2e.pushservice import PushService, vapid_keypair
from tests.e2e.scenario import Properties

# Gateways and Celery processes whose logs a failing test's report carries.
_GATEWAYS = pytest.StashKey[list[Gateway | CeleryWorker | CeleryBeat]]()
# Enough of each gateway log to read a traceback; the full log stays on disk.
_LOG_TAIL_CHARS = 20_000

MakeDeployment = Callable[..., Deployment]


@pytest.fixture(scope="session", autouse=True)
def _raise_open_file_limit() -> None:
    """Let one test process hold a thousand sockets (R2) by raising its soft fd limit."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the log of every gateway the test started to its report when it fails."""
    report = yield
    if report.failed:
        for gateway in item.stash.get(_GATEWAYS, []):
            log = gateway.output()
            if len(log) > _LOG_TAIL_CHARS:
                log = (
                    f"[... first {len(log) - _LOG_TAIL_CHARS} chars cut ...]\n"
                    + log[-_LOG_TAIL_CHARS:]
                )
            report.sections.append((f"{gateway.name} log ({gateway.log_path})", log))
    return report


def track_gateways(request: pytest.FixtureRequest, gateways: list[Gateway]) -> None:
    """Attach these gateways' logs to the test's report if it fails."""
    request.node.stash.setdefault(_GATEWAYS, []).extend(gateways)


def track_processes(
    request: pytest.FixtureRequest, processes: Sequence[Gateway | CeleryWorker | CeleryBeat]
) -> None:
    """Attach these processes' logs (gateways, Celery workers, beat) to a failing test's report."""
    request.node.stash.setdefault(_GATEWAYS, []).extend(processes)


@pytest.fixture
def properties(request: pytest.FixtureRequest) -> Properties:
    """Return the test's user properties, where each scenario's summary goes."""
    properties: Properties = request.node.user_properties
    return properties


@pytest.fixture
def db_url(transactional_db: None) -> str:
    """Return a URL of the test database that gateway processes can connect to."""
    db = settings.DATABASES["default"]
    assert db["ENGINE"] == "django.db.backends.postgresql"
    name = db["NAME"]
    # pytest-django renamed it when it created the test database; never hand the
    # gateways the real database.
    assert name.startswith("test_"), f"not a test database: {name!r}"
    user = quote(db.get("USER") or "postgres", safe="")
    password = db.get("PASSWORD")
    credentials = f"{user}:{quote(password, safe='')}" if password else user
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{credentials}@{host}:{port}/{quote(name, safe='')}"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """Return a private redis-server for this test (free to stop, pause or flush)."""
    with RedisServer(tmp_path / "redis") as server:
        yield server


def _share_redis_with(deployment: Deployment, settings: Any) -> None:
    """Point this test process's channel layer and Redis keys at the deployment's.

    Services called by the test (adding a member, say) then broadcast to the gateways,
    and rate-limit buckets are shared with them, as between two gateways.
    """
    shards = [u for u in deployment.env.get("REDIS_SHARDS", "").split(",") if u]
    settings.REDIS_URL = deployment.redis_url
    settings.REDIS_SHARDS = shards
    settings.REDIS_KEY_PREFIX = deployment.channel_layer_prefix
    layers = {
        "default": {
            "BACKEND": "chatsite.layers.BoundedPubSubChannelLayer",
            "CONFIG": {
                "hosts": shards or [deployment.redis_url],
                "prefix": deployment.channel_layer_prefix,
            },
        }
    }
    settings.CHANNEL_LAYERS = layers
    channel_layers.backends.clear()
    forget_clients()


@contextlib.contextmanager
def table_locked(table: str) -> Iterator[None]:
    """Hold an exclusive lock on `table` of the test database (every query on it waits).

    The gateways' queries on it wait until the block ends: a database that is slow for
    one kind of work, made real.
    """
    import psycopg
    from django.db import connection

    db = connection.settings_dict
    with psycopg.connect(
        dbname=db["NAME"],
        host=db["HOST"] or "127.0.0.1",
        port=db["PORT"] or 5432,
        user=db["USER"],
        password=db["PASSWORD"],
        autocommit=True,
    ) as lock:
        lock.execute("BEGIN")
        lock.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            lock.execute("COMMIT")


@contextlib.contextmanager
def fanout_lost(settings: Any) -> Iterator[None]:
    """Make this process's broadcasts go where no gateway listens: live events are lost.

    What the service writes is committed as always; only its on-commit publish reaches
    nobody, as when the channel layer drops an event (it is at-most-once by design).
    """
    saved = settings.CHANNEL_LAYERS
    lost = {**saved["default"], "CONFIG": {**saved["default"]["CONFIG"], "prefix": "nobody"}}
    settings.CHANNEL_LAYERS = {"default": lost}
    channel_layers.backends.clear()
    try:
        yield
    finally:
        settings.CHANNEL_LAYERS = saved
        channel_layers.backends.clear()


@pytest.fixture
def make_deployment(
    request: pytest.FixtureRequest,
    db_url: str,
    redis_server: RedisServer,
    tmp_path: Path,
    settings: Any,
) -> Iterator[MakeDeployment]:
    """Return a factory of started deployments on the test database and `redis_server`.

    `make_deployment(gateways=2, env={"WS_HEARTBEAT_INTERVAL": "1"})`; `database_url`
    and `redis_url` keywords point them elsewhere (e.g. a PostgresCluster). Every
    deployment is killed after the test, which fails if a gateway died on its own. The
    test process's channel layer follows the last deployment made (see
    `_share_redis_with`).
    """
    made: list[Deployment] = []

    def make(
        gateways: int = 2,
        env: Mapping[str, str] | None = None,
        *,
        database_url: str | None = None,
        redis_url: str | None = None,
        server: str = "uvicorn",
    ) -> Deployment:
        deployment = Deployment(
            database_url=database_url or db_url,
            redis_url=redis_url or redis_server.url,
            log_dir=tmp_path / f"deployment-{len(made) + 1}",
            gateways=gateways,
            env=env,
            server=server,
        )
        made.append(deployment)
        track_gateways(request, deployment.gateways)
        deployment.start()
        _share_redis_with(deployment, settings)
        return deployment

    yield make
    channel_layers.backends.clear()
    forget_clients()

    crashed = [g for d in made for g in d.gateways if g.crashed]
    for deployment in made:
        deployment.stop()
    if crashed:
        pytest.fail(
            "gateway process died during the test: "
            + ", ".join(f"{g.name} exited {g.returncode} (log {g.log_path})" for g in crashed)
        )


@pytest.fixture
def deployment(make_deployment: MakeDeployment) -> Deployment:
    """Return two started gateways on the test database and a private Redis."""
    return make_deployment()


@pytest.fixture
def push_service(tmp_path: Path) -> Iterator[PushService]:
    """Return a running local Web Push service with a fresh VAPID key pair.

    `push_service.vapid_public` / `.vapid_private` are the keys the server must sign
    with; `push_service.worker_env()` is the settings that point a worker at it.
    """
    public, private = vapid_keypair()
    with PushService(
        public, vapid_private=private, log_path=tmp_path / "push-service.log"
    ) as service:
        yield service


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """Return a running local SMTP server; `smtp_server.worker_env()` points Django at it."""
    with SmtpServer() as server:
        yield server


@dataclass
class CeleryProcesses:
    """The Celery workers and beat one `make_workers` call started."""

    workers: list[CeleryWorker]
    beat: CeleryBeat | None
    broker_url: str


MakeWorkers = Callable[..., CeleryProcesses]


@pytest.fixture
def make_workers(
    request: pytest.FixtureRequest, db_url: str, redis_server: RedisServer, tmp_path: Path
) -> Iterator[MakeWorkers]:
    """Return a factory that starts Celery workers and beat; all are killed after the test.

    `make_workers(deployment, workers=1, beat=True, env={...}, concurrency=2)` runs them
    beside `deployment` (its database, Redis, key prefix; broker: its Redis database 1);
    without a deployment they use the test database and `redis_server`. `env` is extra
    settings for these processes only (e.g. `push_service.worker_env()`). The test fails
    if a worker or beat dies without being told to. Gateways made without a broker run
    tasks eagerly; to have them enqueue instead, make the deployment with
    `env={"CELERY_BROKER_URL": redis_db_url(redis_server.url, 1)}`.
    """
    made: list[CeleryWorker | CeleryBeat] = []

    def make(
        deployment: Deployment | None = None,
        *,
        workers: int = 1,
        beat: bool = True,
        env: Mapping[str, str] | None = None,
        concurrency: int = 2,
        pool: str = "prefork",
        queues: str | None = None,
    ) -> CeleryProcesses:
        started_workers: list[CeleryWorker] = []
        started_beat: CeleryBeat | None = None
        if deployment is not None:
            for _ in range(workers):
                started_workers.append(
                    deployment.add_worker(
                        env, concurrency=concurrency, pool=pool, queues=queues, start=False
                    )
                )
            if beat:
                started_beat = deployment.add_beat(env, start=False)
            broker_url = deployment.broker_url or redis_db_url(deployment.redis_url, 1)
        else:
            prefix = f"e2e-{uuid.uuid4().hex[:8]}"
            broker_url = redis_db_url(redis_server.url, 1)
            shared = {
                "REDIS_KEY_PREFIX": prefix,
                **(env or {}),
                "DATABASE_URL": db_url,
                "REDIS_URL": redis_server.url,
                "CHANNEL_LAYER_PREFIX": prefix,
                "CELERY_BROKER_URL": broker_url,
            }
            log_dir = tmp_path / "celery"
            started_workers = [
                CeleryWorker(shared, log_dir, concurrency=concurrency, pool=pool, queues=queues)
                for _ in range(workers)
            ]
            if beat:
                started_beat = CeleryBeat(shared, log_dir, name=f"beat-{len(made) + 1}")
        processes: list[CeleryWorker | CeleryBeat] = [*started_workers]
        if started_beat is not None:
            processes.append(started_beat)
        made.extend(processes)
        track_processes(request, processes)
        for process in processes:
            process.spawn()
        for process in processes:
            process.wait_ready()
        return CeleryProcesses(started_workers, started_beat, broker_url)

    yield make

    crashed = [p for p in made if p.crashed]
    for process in made:
        process.close()
    if crashed:
        pytest.fail(
            "celery process died during the test: "
            + ", ".join(f"{p.name} exited {p.returncode} (log {p.log_path})" for p in crashed)
        )
