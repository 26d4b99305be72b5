"""Run `tests/embedded/` on the embedded default (what `make run` serves), in its own process."""

import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_embedded_default_passes_its_own_suite(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.pop("CELERY_BROKER_URL", None)
    env.update(CHAT_TESTS_EMBEDDED="1", SQLITE_PATH=str(tmp_path / "db.sqlite3"))
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/embedded", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
    assert run.returncode == 0, f"{run.stdout[-6000:]}\n{run.stderr[-3000:]}"
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 7, summary


def test_make_run_s_server_answers_http_and_websocket(tmp_path: Path) -> None:
    """Tried: what `make run` starts, `manage.py runserver` on the embedded default, asked
    for `/healthz` and for a WebSocket at `/ws/v1/` without a login. The page answers 200
    and the socket is accepted, then closed 4401 (unauthenticated): the chat's own
    handshake, so runserver serves ASGI (Daphne's), not Django's plain WSGI server, which
    cannot upgrade. Only runserver loads Daphne's app; no other process pays for it."""
    import asyncio
    import time
    import urllib.request

    import websockets
    from websockets.typing import Origin

    from bench.harness import free_port

    env = dict(os.environ)
    for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "PRESENCE_STORE"):
        env.pop(name, None)
    env.update(SQLITE_PATH=str(tmp_path / "db.sqlite3"), PYTHONUNBUFFERED="1")
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    port = free_port()
    with (tmp_path / "runserver.log").open("w") as log:
        server = subprocess.Popen(
            [*manage, "runserver", "--noreload", f"127.0.0.1:{port}"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert server.poll() is None, (tmp_path / "runserver.log").read_text()
                assert time.monotonic() < deadline, "runserver did not answer within 60 s"
                time.sleep(0.2)

        async def knock() -> int | None:
            origin = Origin(f"http://127.0.0.1:{port}")
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws/v1/", origin=origin) as ws:
                with contextlib.suppress(websockets.ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 10)
                await ws.wait_closed()
                return ws.close_code

        assert asyncio.run(knock()) == 4401
    finally:
        server.terminate()
        server.wait(10)
    uvicorn_side = subprocess.run(
        [sys.executable, "-c", "import sys, chatsite.asgi; print('twisted' in sys.modules)"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert uvicorn_side.stdout.strip() == "False"  # the gateways' application, no Twisted
