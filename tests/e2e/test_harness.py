"""Tests of the end-to-end harness itself: each process starts, answers, stops and restarts."""

import json
import socket
import time
from pathlib import Path

import psycopg
import pytest

from accounts.models import User
from bench.harness import (
    LOCALHOST,
    Gateway,
    HarnessError,
    PostgresCluster,
    RedisServer,
    free_port,
    http_get,
    migrate,
    port_accepts,
)
from tests.e2e.conftest import MakeDeployment

pytestmark = pytest.mark.e2e


def test_free_port_is_bindable_unique_and_below_the_ephemeral_range() -> None:
    ports = [free_port() for _ in range(20)]

    for port in ports:
        with socket.socket() as sock:
            sock.bind((LOCALHOST, port))
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert all(port < low for port in ports)
    assert len(set(ports)) == len(ports)


def test_redis_server_answers_and_restart_keeps_its_port(redis_server: RedisServer) -> None:
    port = redis_server.port
    with redis_server.client() as client:
        client.set("k", "v")

    redis_server.restart()

    assert redis_server.port == port
    assert redis_server.url == f"redis://127.0.0.1:{port}/0"
    with redis_server.client() as client:
        assert client.ping()
        assert client.get("k") is None, "nothing persists across a restart"


def test_redis_kill_refuses_connections_until_started_again(redis_server: RedisServer) -> None:
    redis_server.kill()

    assert not port_accepts(redis_server.port)
    redis_server.start()
    assert port_accepts(redis_server.port)


def test_redis_pause_blocks_commands_for_about_the_pause(redis_server: RedisServer) -> None:
    with redis_server.client() as client:
        client.ping()  # connect before the pause

        redis_server.pause(0.5)
        started = time.monotonic()
        client.set("k", "v")
        blocked = time.monotonic() - started

    assert blocked >= 0.3


def test_redis_flushall_empties_it(redis_server: RedisServer) -> None:
    with redis_server.client() as client:
        client.set("k", "v")
        redis_server.flushall()
        assert client.dbsize() == 0


def test_postgres_cluster_stop_refuses_connections_and_start_restores_them(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    with PostgresCluster() as cluster:
        migrate(cluster.url)
        env = {"DATABASE_URL": cluster.url, "REDIS_URL": redis_server.url}
        with psycopg.connect(cluster.url) as conn:
            table = conn.execute("SELECT to_regclass('accounts_user')::text").fetchone()
        assert table == ("accounts_user",), "migrate() applied the migrations"

        with Gateway(env, tmp_path) as gateway:
            cluster.stop()
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(cluster.url, connect_timeout=2).close()
            assert http_get(f"{gateway.http_url}/healthz")[0] == 503

            cluster.start()
            with psycopg.connect(cluster.url) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
            assert http_get(f"{gateway.http_url}/healthz")[0] == 200
        directory = cluster.directory

    assert not directory.exists(), "the cluster's files are removed on exit"


@pytest.mark.django_db(transaction=True)
def test_db_url_reaches_the_rows_the_test_commits(db_url: str) -> None:
    User.objects.create_user(username="committed", password="pw-secret-1")

    with psycopg.connect(db_url) as conn:
        row = conn.execute(
            f"SELECT username FROM {User._meta.db_table} WHERE username = 'committed'"  # noqa: S608
        ).fetchone()

    assert row == ("committed",)
    assert "/test_" in db_url


@pytest.mark.django_db(transaction=True)
def test_gateway_serves_healthz_and_comes_back_after_kill(
    db_url: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    env = {"DATABASE_URL": db_url, "REDIS_URL": redis_server.url}
    with Gateway(env, tmp_path) as gateway:
        status, body = http_get(f"{gateway.http_url}/healthz")
        assert (status, json.loads(body)) == (
            200,
            {"status": "ok", "checks": {"database": True, "redis": True}},
        )
        assert gateway.ws_url == f"ws://127.0.0.1:{gateway.port}/ws/v1/"
        assert gateway.rss_bytes() > 10 * 1024 * 1024
        assert gateway.cpu_seconds() > 0
        port = gateway.port

        gateway.kill()
        with pytest.raises(ConnectionRefusedError):
            http_get(f"{gateway.http_url}/healthz")
        assert not gateway.crashed, "a kill() is not a crash"

        gateway.restart()
        assert gateway.port == port
        assert http_get(f"{gateway.http_url}/healthz")[0] == 200
        assert gateway.output().count("--- harness: starting gateway") == 2


def test_gateway_that_exits_early_raises_with_its_output(tmp_path: Path) -> None:
    # Production mode without a secret key: settings refuse to load.
    gateway = Gateway({"DJANGO_DEBUG": "0"}, tmp_path)

    with pytest.raises(HarnessError, match="DJANGO_SECRET_KEY must be set"):
        gateway.start()
    assert not gateway.running


@pytest.mark.django_db(transaction=True)
def test_deployment_runs_gateways_on_one_database_and_redis_with_a_clean_environment(
    make_deployment: MakeDeployment, db_url: str, redis_server: RedisServer
) -> None:
    deployment = make_deployment(env={"WS_HEARTBEAT_INTERVAL": "1"})

    assert len(deployment.gateways) == 2
    assert len(set(deployment.urls)) == 2
    for url in deployment.http_urls:
        assert http_get(f"{url}/healthz")[0] == 200
    for gateway in deployment.gateways:
        raw = Path(f"/proc/{gateway.pid}/environ").read_bytes().split(b"\0")
        environ = dict(item.decode().split("=", 1) for item in raw if item)
        assert environ["WS_HEARTBEAT_INTERVAL"] == "1"
        assert environ["DATABASE_URL"] == db_url
        assert environ["REDIS_URL"] == redis_server.url
        assert environ["CHANNEL_LAYER_PREFIX"] == deployment.channel_layer_prefix
        assert "PYTEST_CURRENT_TEST" not in environ, "gateways get a clean environment"
