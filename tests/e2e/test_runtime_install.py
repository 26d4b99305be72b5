"""A deployment from `requirements.txt` alone, on production settings.

What is tried, as a new operator would: a fresh virtualenv with only the runtime
requirements (no test or dev packages), `migrate` and `collectstatic` with
`DJANGO_DEBUG=0`, then a gateway, a Celery worker and beat from that virtualenv. The
gateway must answer its health check, serve the login page and its hashed static files,
register a user over REST and hold a WebSocket session; the worker must run the
notification tick that beat sends.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from bench.harness import (
    REPO_ROOT,
    CeleryBeat,
    CeleryWorker,
    Gateway,
    PostgresCluster,
    RedisServer,
    gateway_env,
    http_get,
    http_post_json,
    migrate,
    redis_db_url,
)

pytestmark = pytest.mark.e2e


def _run(*cmd: str | Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(c) for c in cmd],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_requirements_txt_alone_runs_a_gateway_a_worker_and_beat(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    python = str(venv / "bin" / "python")
    _run(sys.executable, "-m", "venv", venv)
    _run(
        python, "-m", "pip", "install", "--disable-pip-version-check", "-q",
        "-r", "requirements.txt", "-c", "constraints.txt",
    )  # fmt: skip
    # Only the runtime: no test runner, linter or type checker came along.
    installed = _run(python, "-m", "pip", "list", "--format=json")
    names = {p["name"].lower() for p in json.loads(installed)}
    assert not names & {"pytest", "ruff", "mypy", "playwright"}, names
    assert {"django", "channels", "uvicorn", "websockets", "celery", "psycopg"} <= names

    with PostgresCluster() as cluster, RedisServer() as redis_server:
        env = {
            "DATABASE_URL": cluster.url,
            "REDIS_URL": redis_server.url,
            "CELERY_BROKER_URL": redis_db_url(redis_server.url, 1),
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": "runtime-install-test-" + "k" * 40,
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DJANGO_HTTPS": "0",
            "STATIC_ROOT": str(tmp_path / "static"),
            "NOTIFY_POLL_INTERVAL": "0.5",
        }
        migrate(cluster.url, env, python=python)
        _run(python, "manage.py", "collectstatic", "--noinput", "-v", "0", env=gateway_env(env))
        logs = tmp_path / "logs"
        gateway = Gateway(env, logs)
        worker = CeleryWorker(env, logs, concurrency=1)
        beat = CeleryBeat(env, logs)
        for process in (gateway, worker, beat):
            process.python = python
        with gateway, worker, beat:
            status, body = http_get(f"{gateway.http_url}/healthz")
            assert (status, json.loads(body)["status"]) == (200, "ok")

            status, page = http_get(f"{gateway.http_url}/accounts/login/")
            assert status == 200, page[:500]
            assets = [
                part.split('"')[0]
                for part in page.decode().split('src="/static/')[1:]
                + page.decode().split('href="/static/')[1:]
            ]
            assert assets, "the login page names its static files"
            for asset in assets:
                # Hashed names (ManifestStaticFilesStorage) served by whitenoise.
                assert http_get(f"{gateway.http_url}/static/{asset}")[0] == 200, asset

            status, user = http_post_json(
                f"{gateway.http_url}/api/v1/auth/register",
                {"username": "operator1", "password": "correct horse 7", "display_name": "Op"},
            )
            assert status == 201, user
            status, tokens = http_post_json(
                f"{gateway.http_url}/api/v1/auth/token",
                {"username": "operator1", "password": "correct horse 7"},
            )
            assert status == 200

            async def session_ready() -> dict[str, object]:
                headers = {"Authorization": f"Bearer {tokens['access']}"}
                async with connect(gateway.ws_url, additional_headers=headers) as ws:
                    frame: dict[str, object] = json.loads(await ws.recv())
                    return frame

            ready = asyncio.run(session_ready())
            assert ready["type"] == "session.ready"

            deadline = time.monotonic() + 30
            while "notify_tick_task" not in worker.output() or "succeeded" not in worker.output():
                assert time.monotonic() < deadline, worker.output()[-3000:]
                time.sleep(0.2)
            assert gateway.running and worker.running and beat.running
