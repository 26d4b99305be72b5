"""Real processes for the end-to-end tests and the benchmark: Redis, PostgreSQL, gateways, Celery.

Every class here owns the processes it starts and nothing else: it finds free ports at run
time, never touches the machine's shared PostgreSQL (5432) or Redis (6379), and stops by
pid only what it started. Each one is a context manager that cleans up even when the test
fails; an `atexit` hook catches anything a crashed test run left behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import glob
import http.client
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from psycopg import sql

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCALHOST = "127.0.0.1"
# The gateways' WebSocket implementation (uvicorn's `--ws`), as `make serve` runs them.
GATEWAY_WS = "chatsite.gateway:FlowControlledWebSocket"

# Environment variables a gateway inherits from the test process; everything else
# (DATABASE_URL, REDIS_URL, CELERY_BROKER_URL ...) must come from the caller explicitly.
_INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "VIRTUAL_ENV")


class HarnessError(RuntimeError):
    """A harness process failed to start or stop; the message carries its output."""


class _Closable(Protocol):
    def close(self) -> None: ...


# Everything still running when the interpreter exits (a test run killed by a timeout,
# a fixture that never reached teardown) is closed here.
_LIVE: dict[int, _Closable] = {}


@atexit.register
def _close_leftovers() -> None:
    for resource in list(_LIVE.values()):
        with contextlib.suppress(Exception):
            resource.close()


def _ephemeral_port_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    except (OSError, ValueError):
        return 32768, 60999
    return int(low), int(high)


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOCALHOST, port))
        except OSError:
            return False
        return True


# Ports already given to a server of this process: a gateway that is down for a restart
# must not find its port handed to the next RedisServer.
_HANDED_OUT: set[int] = set()
# Its own generator: tests that seed the global `random` (hypothesis) would otherwise
# make concurrent runs draw the same ports.
_PORT_RNG = random.Random()
_PORT_FLOOR = 15000


def _port_range() -> tuple[int, int]:
    """Return the ports `free_port` draws from: [floor, end).

    `CHAT_TEST_PORTS=LOW-HIGH` narrows them to that slice: the suite's concurrent pytest
    processes (tests/shards.py) each get their own, so no two of them hand out one port.
    """
    low, _high = _ephemeral_port_range()
    given = os.environ.get("CHAT_TEST_PORTS", "")
    if given:
        first, _, last = given.partition("-")
        return int(first), int(last) + 1
    return _PORT_FLOOR, low


def port_slice(number: int, count: int) -> str:
    """Return slice `number` (1-based) of `count` of the ports `free_port` draws from.

    As `LOW-HIGH`, the form `CHAT_TEST_PORTS` takes (tests/shards.py gives one to each of
    the suite's concurrent pytest processes).
    """
    low, _high = _ephemeral_port_range()
    width = (low - _PORT_FLOOR) // count
    start = _PORT_FLOOR + (number - 1) * width
    return f"{start}-{start + width - 1}"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free now and below the ephemeral range.

    The kernel gives outgoing connections ports from the ephemeral range, so one could take
    a server's port while the server is down (killed, about to restart) and make `restart()`
    fail with EADDRINUSE. Below that range only a server binding it could; we check that
    none has. Falls back to binding port 0 when the range leaves no room below it.
    """
    floor, low = _port_range()
    if low - floor >= 1000:
        for _ in range(500):
            port = _PORT_RNG.randrange(floor, low)
            if port not in _HANDED_OUT and _bindable(port):
                _HANDED_OUT.add(port)
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        chosen: int = sock.getsockname()[1]
    _HANDED_OUT.add(chosen)
    return chosen


def port_accepts(port: int, timeout: float = 0.5) -> bool:
    """Return whether something accepts TCP connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection((LOCALHOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """Return the status and body of a GET; raise OSError if the server is unreachable."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or LOCALHOST, parts.port, timeout=timeout)
    try:
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def http_post_json(
    url: str, body: Mapping[str, Any], *, token: str | None = None, timeout: float = 10.0
) -> tuple[int, Any]:
    """POST `body` as JSON (with a Bearer `token`); return the status and the decoded answer."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or LOCALHOST, parts.port, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request("POST", parts.path or "/", json.dumps(body), headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def _executable(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise HarnessError(f"`{name}` is not on PATH")
    return path


def _run(
    cmd: Sequence[str], *, cwd: Path | None = None, env: Mapping[str, str] | None = None
) -> str:
    """Run `cmd` to completion; return its output or raise HarnessError carrying it."""
    result = subprocess.run(
        list(cmd),
        cwd=cwd,
        env=None if env is None else dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise HarnessError(f"{' '.join(cmd)} exited with {result.returncode}:\n{result.stdout}")
    return result.stdout


def _spawn(
    cmd: Sequence[str], *, log: Path, cwd: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `cmd` with stdout and stderr appended to `log` (a file, so no pipe can fill)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C meant for pytest reaches only pytest, whose
            # teardown then stops the process in order.
            start_new_session=True,
        )


def _reap(proc: subprocess.Popen[bytes], timeout: float | None) -> float:
    """Wait up to `timeout` (None: for ever) for `proc` to exit and reap it.

    Return the CPU seconds (user + system) it used in all, which /proc no longer shows
    once it is gone (0.0 if it was reaped elsewhere); TimeoutExpired if it still runs.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while proc.returncode is None:
        try:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        except ChildProcessError:
            proc.wait()  # reaped by someone else: let Popen settle its returncode
            break
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime
        if deadline is not None and time.monotonic() >= deadline:
            raise subprocess.TimeoutExpired(proc.args, timeout or 0.0)
        time.sleep(0.02)
    return 0.0


def _end(proc: subprocess.Popen[bytes], sig: signal.Signals, timeout: float) -> float:
    """Send `sig` to `proc`, wait up to `timeout`, then SIGKILL; always reap it.

    Return the CPU seconds it used (see `_reap`).
    """
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            return _reap(proc, timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return _reap(proc, None)


def _read_log(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


class Managed:
    """A context manager that starts on entry and always closes on exit."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class RedisServer(Managed):
    """A private `redis-server` on a free loopback port, without persistence."""

    def __init__(self, directory: Path | None = None) -> None:
        """Prepare a server in `directory` (a temp dir removed on close when None)."""
        self._own_dir = directory is None
        self.directory = (
            Path(tempfile.mkdtemp(prefix="redis-e2e-")) if directory is None else directory
        )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = self.directory / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Return the server's URL (database 0)."""
        return f"redis://{LOCALHOST}:{self.port}/0"

    @property
    def running(self) -> bool:
        """Return whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start the server on its port and wait until PING answers."""
        if self.running:
            raise HarnessError(f"redis on port {self.port} is already running")
        cmd = [
            _executable("redis-server"),
            "--port", str(self.port),
            "--bind", LOCALHOST,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--daemonize", "no",
            "--logfile", "",
        ]  # fmt: skip
        self._proc = _spawn(cmd, log=self.log_path, cwd=self.directory)
        _LIVE[id(self)] = self
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise HarnessError(
                    f"redis-server exited with {self._proc.returncode}:\n{self.output()}"
                )
            if self._ping():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise HarnessError(f"redis-server did not answer in {timeout} s:\n{self.output()}")
            time.sleep(0.02)

    def _ping(self) -> bool:
        try:
            with redis.Redis(
                host=LOCALHOST, port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5
            ) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        """Shut the server down gracefully (SIGTERM; it saves nothing)."""
        if self._proc is not None:
            _end(self._proc, signal.SIGTERM, timeout=10)

    def kill(self) -> None:
        """SIGKILL the server."""
        if self._proc is not None:
            _end(self._proc, signal.SIGKILL, timeout=10)

    def restart(self, *, hard: bool = False) -> None:
        """Stop (SIGKILL when `hard`) and start again on the same port; all data is lost."""
        if hard:
            self.kill()
        else:
            self.stop()
        self.start()

    def pause(self, seconds: float) -> None:
        """Make the server hold every client's commands for `seconds` (CLIENT PAUSE ALL)."""
        with self.client() as client:
            client.execute_command("CLIENT", "PAUSE", str(round(seconds * 1000)), "ALL")

    def flushall(self) -> None:
        """Delete every key in every database."""
        with self.client() as client:
            client.flushall()

    def client(self) -> redis.Redis:
        """Return a new synchronous client; close it (or use it as a context manager)."""
        return redis.Redis(host=LOCALHOST, port=self.port, socket_connect_timeout=2)

    def output(self) -> str:
        """Return what the server has logged."""
        return _read_log(self.log_path)

    def close(self) -> None:
        """Kill the server and remove its temp dir if this object created it."""
        self.kill()
        _LIVE.pop(id(self), None)
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)


def postgres_bin_dir() -> Path:
    """Return the directory of the newest installed PostgreSQL server binaries."""
    override = os.environ.get("PG_BIN")
    if override:
        return Path(override)
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if candidates:
        newest = max(candidates, key=lambda p: float(Path(p).parent.parent.name))
        return Path(newest).parent
    found = shutil.which("initdb")
    if found is None:
        raise HarnessError("no PostgreSQL binaries: install postgresql or set PG_BIN")
    return Path(found).parent


class PostgresCluster(Managed):
    """A throwaway PostgreSQL cluster (initdb + pg_ctl) on a free loopback port."""

    # Durability off: the cluster lives for one test and speed is all that matters.
    SETTINGS: Mapping[str, str] = {
        "listen_addresses": f"'{LOCALHOST}'",
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "200",
        "logging_collector": "off",
    }

    def __init__(self, dbname: str = "chat", settings: Mapping[str, str] | None = None) -> None:
        """Prepare (but do not start) a cluster that will hold database `dbname`."""
        self.dbname = dbname
        self.settings = {**self.SETTINGS, **(settings or {})}
        self.port = free_port()
        self.bin = postgres_bin_dir()
        # Under the system temp dir, not pytest's: the unix socket path must stay short
        # (108 bytes) and the postgres user must be able to reach it.
        self.directory = Path(tempfile.mkdtemp(prefix="pg-e2e-"))
        self.data_dir = self.directory / "data"
        self.socket_dir = self.directory / "sock"
        self.log_path = self.directory / "postgres.log"
        self._initialized = False

    @property
    def url(self) -> str:
        """Return the URL of the cluster's database (user postgres, trust auth)."""
        return f"postgres://postgres@{LOCALHOST}:{self.port}/{self.dbname}"

    @property
    def running(self) -> bool:
        """Return whether the postmaster is alive."""
        pid = self._postmaster_pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def _postmaster_pid(self) -> int | None:
        try:
            first_line = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        except FileNotFoundError:
            return None
        return int(first_line) if first_line.strip().isdigit() else None

    def _as_postgres(self, *args: str) -> str:
        """Run a PostgreSQL binary as the `postgres` user (it refuses to run as root)."""
        cmd = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = [_executable("runuser"), "-u", "postgres", "--", *cmd]
        return _run(cmd, cwd=self.directory)

    def _initdb(self) -> None:
        self.socket_dir.mkdir()
        if os.geteuid() == 0:
            for path in (self.directory, self.socket_dir):
                shutil.chown(path, user="postgres", group="postgres")
        self._as_postgres(
            "initdb", "-D", str(self.data_dir), "-A", "trust", "-U", "postgres",
            "--no-sync", "--no-instructions", "-E", "UTF8", "--locale=C",
        )  # fmt: skip
        settings = {
            **self.settings,
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
        }
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# bench/harness.py\n")
            conf.writelines(f"{name} = {value}\n" for name, value in settings.items())
        self._initialized = True

    def start(self) -> None:
        """Start the cluster (initializing it and its database the first time); wait for it."""
        first = not self._initialized
        _LIVE[id(self)] = self
        if first:
            self._initdb()
        try:
            self._as_postgres(
                "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path),
                "-w", "-t", "30", "start",
            )  # fmt: skip
        except HarnessError as exc:
            raise HarnessError(f"{exc}\npostgres log:\n{self.output()}") from exc
        if first:
            with psycopg.connect(self.admin_dsn("postgres"), autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.dbname)))

    def stop(self, mode: str = "fast") -> None:
        """Stop the cluster (`fast`: roll back open transactions; `immediate`: crash-stop)."""
        if self.running:
            self._as_postgres(
                "pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "30", "stop"
            )

    def restart(self) -> None:
        """Stop (fast) and start again on the same port."""
        self.stop()
        self.start()

    def admin_dsn(self, dbname: str | None = None) -> str:
        """Return a libpq connection string for `dbname` (default: the cluster's database)."""
        return (
            f"host={LOCALHOST} port={self.port} user=postgres "
            f"dbname={dbname or self.dbname} connect_timeout=3"
        )

    def output(self) -> str:
        """Return the server log."""
        return _read_log(self.log_path)

    def close(self) -> None:
        """Crash-stop the cluster if it runs and delete its files."""
        try:
            self.stop("immediate")
        except HarnessError:
            pid = self._postmaster_pid()
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        finally:
            _LIVE.pop(id(self), None)
            shutil.rmtree(self.directory, ignore_errors=True)


def gateway_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return the clean environment of a gateway or manage.py process, `env` merged over it."""
    base = {name: os.environ[name] for name in _INHERITED_ENV if name in os.environ}
    base.update(
        DJANGO_SETTINGS_MODULE="chatsite.settings",
        DJANGO_DEBUG="1",
        # Logs reach the file before a SIGKILL, not when a buffer happens to fill.
        PYTHONUNBUFFERED="1",
        # SIGTERM closes at once (terminate() and restart() expect that); the drain's own
        # tests and the rolling-restart benchmark set a window.
        WS_DRAIN_SECONDS="0",
    )
    base.update(env or {})
    return base


def migrate(
    database_url: str, env: Mapping[str, str] | None = None, *, python: str = sys.executable
) -> str:
    """Apply every migration to `database_url` (e.g. a PostgresCluster's); return the output."""
    return _run(
        [python, "manage.py", "migrate", "--noinput"],
        cwd=REPO_ROOT,
        env=gateway_env({**(env or {}), "DATABASE_URL": database_url}),
    )


class Gateway(Managed):
    """One real ASGI server process (uvicorn) serving `chatsite.asgi:application`."""

    # The interpreter that runs it (a test sets another virtualenv's).
    python: str = sys.executable

    def __init__(
        self,
        env: Mapping[str, str],
        log_dir: Path,
        *,
        name: str = "gateway",
        port: int | None = None,
        ws: str = GATEWAY_WS,
        server: str = "uvicorn",
    ) -> None:
        """Prepare a gateway; `env` (DATABASE_URL, REDIS_URL ...) is merged over a clean base.

        `server` is `uvicorn` (the default deployment) or `daphne`; `ws` is uvicorn's
        WebSocket implementation (`--ws`).
        """
        if server not in ("uvicorn", "daphne"):
            raise HarnessError(f"unknown server {server!r}")
        self.name = name
        self.ws = ws
        self.server = server
        self.env = gateway_env(env)
        self.port = free_port() if port is None else port
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._stopping = False
        # CPU seconds of its earlier runs (before a restart), which /proc no longer shows.
        self.retired_cpu = 0.0

    @property
    def ws_url(self) -> str:
        """Return the WebSocket endpoint."""
        return f"ws://{LOCALHOST}:{self.port}/ws/v1/"

    @property
    def http_url(self) -> str:
        """Return the HTTP base URL (no trailing slash)."""
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def pid(self) -> int:
        """Return the pid of the running process."""
        if self._proc is None or self._proc.poll() is not None:
            raise HarnessError(f"{self.name} is not running")
        return self._proc.pid

    @property
    def running(self) -> bool:
        """Return whether the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """Return the exit status of the last run (negative: killed by that signal), or None."""
        return None if self._proc is None else self._proc.poll()

    @property
    def crashed(self) -> bool:
        """Return whether the process exited without being told to (kill or terminate)."""
        return self._proc is not None and self._proc.poll() is not None and not self._stopping

    def command(self) -> list[str]:
        """Return the command line of the server process (as docs/operations.md gives it)."""
        if self.server == "daphne":
            return [
                self.python, "-m", "chatsite.gateway.daphne", "-b", LOCALHOST, "-p", str(self.port),
                "--websocket-max-message-size", "1310720", "--websocket-max-frame-size", "1310720",
                "--ping-interval", "86400", "-v", "0", "chatsite.asgi:application",
            ]  # fmt: skip
        return [
            self.python, "-m", "uvicorn", "chatsite.asgi:application",
            "--host", LOCALHOST, "--port", str(self.port),
            "--http", "chatsite.gateway:H11WithHandshakeDeadline", "--no-proxy-headers",
            "--ws", self.ws, "--ws-max-size", "1310720", "--ws-ping-interval", "86400",
            "--no-access-log", "--lifespan", "off", "--log-level", "warning",
        ]  # fmt: skip

    def spawn(self) -> None:
        """Start the process without waiting for it to serve (see `wait_ready`)."""
        if self.running:
            raise HarnessError(f"{self.name} is already running on port {self.port}")
        with self.log_path.open("a") as log:
            log.write(f"--- harness: starting {self.name} on port {self.port} ---\n")
        self._stopping = False
        self._proc = _spawn(self.command(), log=self.log_path, cwd=REPO_ROOT, env=self.env)
        _LIVE[id(self)] = self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until GET /healthz answers 200; raise with the output if the process dies."""
        assert self._proc is not None, "spawn() first"
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            if self._proc.poll() is not None:
                raise HarnessError(
                    f"{self.name} exited with {self._proc.returncode} before serving:\n"
                    f"{self.output()}"
                )
            try:
                status, body = http_get(f"{self.http_url}/healthz", timeout=2)
            except (OSError, http.client.HTTPException) as exc:
                last = repr(exc)
            else:
                if status == 200:
                    return
                last = f"{status} {body[:200]!r}"
            if time.monotonic() > deadline:
                self.kill()
                raise HarnessError(
                    f"{self.name} /healthz not 200 within {timeout} s (last: {last}):\n"
                    f"{self.output()}"
                )
            time.sleep(0.05)

    def start(self, timeout: float = 30.0) -> None:
        """Start the process and wait until GET /healthz answers 200."""
        self.spawn()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.close()
            raise

    def kill(self) -> None:
        """SIGKILL the process (a crash: no goodbye to clients) and reap it."""
        if self._proc is not None:
            self._stopping = True
            self.retired_cpu += _end(self._proc, signal.SIGKILL, timeout=10)

    def terminate(self, timeout: float = 10.0) -> None:
        """SIGTERM the process (graceful shutdown), SIGKILL it after `timeout`."""
        if self._proc is not None:
            self._stopping = True
            self.retired_cpu += _end(self._proc, signal.SIGTERM, timeout=timeout)

    def restart(self, timeout: float = 30.0) -> None:
        """Terminate the process if it runs and start it again on the same port."""
        self.terminate()
        self.start(timeout)

    def output(self) -> str:
        """Return everything the process (and its earlier runs) wrote to stdout/stderr."""
        return _read_log(self.log_path)

    def rss_bytes(self) -> int:
        """Return the resident memory of the process (VmRSS)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise HarnessError(f"no VmRSS for {self.name}")

    def cpu_seconds(self) -> float:
        """Return the CPU time (user + system) the process has used."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        # Fields after the command name, which is in parentheses and may contain spaces.
        fields = stat[stat.rindex(")") + 2 :].split()
        utime, stime = int(fields[11]), int(fields[12])
        return (utime + stime) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        """Kill the process."""
        self.kill()
        _LIVE.pop(id(self), None)


def redis_db_url(redis_url: str, db: int) -> str:
    """Return `redis_url` pointing at database `db` (e.g. a Celery broker beside the layer)."""
    parts = urlsplit(redis_url)
    return urlunsplit(parts._replace(path=f"/{db}"))


# prctl(2) option: orphaned descendants are re-parented to this process, not to PID 1.
_PR_SET_CHILD_SUBREAPER = 36


def _set_child_subreaper(on: bool) -> bool:
    """Make this process the reaper of its orphaned descendants; return whether it worked."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """Return (state, ppid, pgrp) of `pid` from /proc, or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2])


def group_members(pgid: int, *, zombies: bool = False) -> list[int]:
    """Return the pids in process group `pgid` (zombies only if `zombies`)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _proc_stat(int(entry))
        if stat is not None and stat[2] == pgid and (zombies or stat[0] != "Z"):
            members.append(int(entry))
    return sorted(members)


_WORKER_IDS = itertools.count(1)


class _CeleryProcess(Managed):
    """A Celery process (and its pool children) in its own process group."""

    # The interpreter that runs it (a test sets another virtualenv's).
    python: str = sys.executable

    def __init__(
        self,
        env: Mapping[str, str],
        log_dir: Path,
        *,
        name: str,
        broker_url: str | None = None,
    ) -> None:
        self.name = name
        # Log every task received and done: the tests (and whoever reads a failed test's
        # log) see what ran; production workers keep these lines off.
        self.env = gateway_env({"LOG_CELERY_TASKS": "1", **env})
        if broker_url is not None:
            self.env["CELERY_BROKER_URL"] = broker_url
        if not self.env.get("CELERY_BROKER_URL"):
            # Without one the app falls back to `memory://`: a worker that never sees a task.
            raise HarnessError(f"{name}: no CELERY_BROKER_URL in env or broker_url")
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = log_dir
        self.log_path = log_dir / f"{name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self._stopping = False

    @property
    def broker_url(self) -> str:
        """Return the broker the process consumes from or publishes to."""
        return self.env["CELERY_BROKER_URL"]

    def command(self) -> list[str]:
        """Return the command line of the process."""
        raise NotImplementedError

    def _ready(self, log: str) -> bool:
        raise NotImplementedError

    @property
    def pid(self) -> int:
        """Return the pid of the running main process."""
        if self._proc is None or self._proc.poll() is not None:
            raise HarnessError(f"{self.name} is not running")
        return self._proc.pid

    @property
    def pgid(self) -> int:
        """Return the process group of the last run (the main process's pid)."""
        if self._proc is None:
            raise HarnessError(f"{self.name} was never started")
        return self._proc.pid

    @property
    def running(self) -> bool:
        """Return whether the main process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """Return the exit status of the last run (negative: killed by that signal), or None."""
        return None if self._proc is None else self._proc.poll()

    @property
    def crashed(self) -> bool:
        """Return whether the process exited without being told to (kill or terminate)."""
        return self._proc is not None and self._proc.poll() is not None and not self._stopping

    def group_pids(self) -> list[int]:
        """Return the live (non-zombie) pids of the process group: main process and pool."""
        return [] if self._proc is None else group_members(self._proc.pid)

    def spawn(self) -> None:
        """Start the process without waiting for it to be ready (see `wait_ready`)."""
        if self.running:
            raise HarnessError(f"{self.name} is already running")
        with self.log_path.open("a") as log:
            log.write(f"--- harness: starting {self.name} ---\n")
        self._log_offset = self.log_path.stat().st_size
        self._stopping = False
        self._proc = _spawn(self.command(), log=self.log_path, cwd=REPO_ROOT, env=self.env)
        _LIVE[id(self)] = self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until this run's log says it is ready; raise with the output if it dies."""
        assert self._proc is not None, "spawn() first"
        deadline = time.monotonic() + timeout
        while True:
            if self._ready(self.output()[self._log_offset :]):
                return
            if self._proc.poll() is not None:
                raise HarnessError(
                    f"{self.name} exited with {self._proc.returncode} before it was ready:\n"
                    f"{self.output()}"
                )
            if time.monotonic() > deadline:
                self.kill_group()
                raise HarnessError(f"{self.name} not ready within {timeout} s:\n{self.output()}")
            time.sleep(0.05)

    def start(self, timeout: float = 30.0) -> None:
        """Start the process and wait until it is ready."""
        self.spawn()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.close()
            raise

    def kill_group(self) -> None:
        """SIGKILL the whole process group at once (a machine lost) and reap every member.

        PID 1 of a container may never reap orphans, which would leave the pool children
        as zombies: for the moment of the kill this process reaps its orphans itself.
        """
        if self._proc is None:
            return
        self._stopping = True
        pgid = self._proc.pid
        members = group_members(pgid, zombies=True)
        if not members:
            self._proc.wait()
            return  # all gone and reaped: the pgid could belong to someone else by now
        subreaper = _set_child_subreaper(True)
        try:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            self._proc.wait()
            if subreaper:
                self._reap(pgid, [pid for pid in members if pid != pgid])
        finally:
            if subreaper:
                _set_child_subreaper(False)

    @staticmethod
    def _reap(pgid: int, pids: list[int], timeout: float = 10.0) -> None:
        """Wait for the killed orphans that were re-parented to this process."""
        me = os.getpid()
        deadline = time.monotonic() + timeout
        pending = set(pids)
        while pending and time.monotonic() < deadline:
            for pid in list(pending):
                stat = _proc_stat(pid)
                if stat is None or stat[2] != pgid:
                    pending.discard(pid)  # gone (or the pid is reused by someone else)
                elif stat[1] == me:
                    with contextlib.suppress(ChildProcessError):
                        if os.waitpid(pid, os.WNOHANG)[0] == 0:
                            continue
                    pending.discard(pid)
            if pending:
                time.sleep(0.01)

    def terminate(self, timeout: float = 10.0) -> None:
        """SIGTERM the main process (warm shutdown), then SIGKILL the group after `timeout`."""
        if self._proc is not None:
            self._stopping = True
            _end(self._proc, signal.SIGTERM, timeout=timeout)
            self.kill_group()

    def restart(self, timeout: float = 30.0) -> None:
        """Terminate the process if it runs and start it again."""
        self.terminate()
        self.start(timeout)

    def output(self) -> str:
        """Return everything the process (and its earlier runs) wrote to stdout/stderr."""
        return _read_log(self.log_path)

    def close(self) -> None:
        """Kill the process group."""
        self.kill_group()
        _LIVE.pop(id(self), None)


class CeleryWorker(_CeleryProcess):
    """A real `celery worker` (prefork pool by default) of `chatsite` in its own group."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_dir: Path,
        *,
        name: str | None = None,
        broker_url: str | None = None,
        concurrency: int = 2,
        pool: str = "prefork",
        queues: str | None = None,
    ) -> None:
        """Prepare a worker; `env` (DATABASE_URL, REDIS_URL ...) is merged over a clean base.

        The broker is `broker_url`, else `CELERY_BROKER_URL` in `env`. `name` is its node
        name before the `@` and its log's name (default `w<n>`). `queues` is its `-Q`
        (e.g. `thumbnails`, the thumbnail worker's); by default the default queue.
        """
        super().__init__(env, log_dir, name=name or f"w{next(_WORKER_IDS)}", broker_url=broker_url)
        self.concurrency = concurrency
        self.pool = pool
        self.queues = queues

    def command(self) -> list[str]:
        """Return the command line of the worker."""
        return [
            self.python, "-m", "celery", "-A", "chatsite", "worker",
            "--loglevel=INFO", f"--concurrency={self.concurrency}", f"--pool={self.pool}",
            "-n", f"{self.name}@%h", "--without-mingle", "--without-gossip",
            *([f"--queues={self.queues}"] if self.queues else []),
        ]  # fmt: skip

    def _ready(self, log: str) -> bool:
        return re.search(rf"{re.escape(self.name)}@\S+ ready\.", log) is not None


class CeleryBeat(_CeleryProcess):
    """A real `celery beat` of `chatsite`, its schedule file in its log directory."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_dir: Path,
        *,
        name: str = "beat",
        broker_url: str | None = None,
    ) -> None:
        """Prepare beat; `env` and `broker_url` as for CeleryWorker."""
        super().__init__(env, log_dir, name=name, broker_url=broker_url)
        self.schedule_path = log_dir / f"{name}-schedule"

    def command(self) -> list[str]:
        """Return the command line of beat (no pid file: restarts never find a stale one)."""
        return [
            self.python, "-m", "celery", "-A", "chatsite", "beat",
            "--loglevel=INFO", "-s", str(self.schedule_path), "--pidfile=",
        ]  # fmt: skip

    def _ready(self, log: str) -> bool:
        return "beat: Starting..." in log


class Deployment:
    """N gateways sharing one database and one Redis, like a load-balanced deployment.

    With `workers` or `beat`, Celery workers (and beat) run beside them on the broker
    `broker_url` (default: database 1 of the deployment's Redis), which the gateways are
    given too; `worker_env` is extra settings for the workers and beat only.
    """

    def __init__(
        self,
        *,
        database_url: str,
        redis_url: str,
        log_dir: Path,
        gateways: int = 2,
        env: Mapping[str, str] | None = None,
        channel_layer_prefix: str | None = None,
        ws: str = GATEWAY_WS,
        server: str = "uvicorn",
        workers: int = 0,
        beat: bool = False,
        worker_env: Mapping[str, str] | None = None,
        worker_concurrency: int = 2,
        broker_url: str | None = None,
    ) -> None:
        """Prepare `gateways` gateways; `env` is extra settings for all of them."""
        self.channel_layer_prefix = channel_layer_prefix or f"e2e-{uuid.uuid4().hex[:8]}"
        self.database_url = database_url
        self.redis_url = redis_url
        self.log_dir = log_dir
        self.broker_url = broker_url
        if (workers or beat) and broker_url is None:
            self.broker_url = redis_db_url(redis_url, 1)
        shared = {
            "REDIS_KEY_PREFIX": self.channel_layer_prefix,
            **({"CELERY_BROKER_URL": self.broker_url} if self.broker_url else {}),
            **(env or {}),
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "CHANNEL_LAYER_PREFIX": self.channel_layer_prefix,
        }
        self.env = shared
        self.gateways = [
            Gateway(shared, log_dir, name=f"gateway-{n}", ws=ws, server=server)
            for n in range(1, gateways + 1)
        ]
        self.workers: list[CeleryWorker] = []
        self.beat: CeleryBeat | None = None
        for _ in range(workers):
            self.add_worker(worker_env, concurrency=worker_concurrency, start=False)
        if beat:
            self.add_beat(worker_env, start=False)

    def _celery_env(self, env: Mapping[str, str] | None) -> dict[str, str]:
        broker = self.broker_url or redis_db_url(self.redis_url, 1)
        return {**self.env, "CELERY_BROKER_URL": broker, **(env or {})}

    def add_worker(
        self,
        env: Mapping[str, str] | None = None,
        *,
        concurrency: int = 2,
        pool: str = "prefork",
        queues: str | None = None,
        start: bool = True,
    ) -> CeleryWorker:
        """Add a Celery worker on the deployment's database, Redis and broker (started).

        `queues` is its `-Q` (e.g. `thumbnails`); by default the default queue.
        """
        worker = CeleryWorker(
            self._celery_env(env),
            self.log_dir,
            name=f"worker-{len(self.workers) + 1}",
            concurrency=concurrency,
            pool=pool,
            queues=queues,
        )
        self.workers.append(worker)
        if start:
            worker.start()
        return worker

    def add_beat(self, env: Mapping[str, str] | None = None, *, start: bool = True) -> CeleryBeat:
        """Add Celery beat publishing to the deployment's broker (started); only one."""
        if self.beat is not None:
            raise HarnessError("this deployment already has beat")
        self.beat = CeleryBeat(self._celery_env(env), self.log_dir)
        if start:
            self.beat.start()
        return self.beat

    @property
    def processes(self) -> list[Gateway | CeleryWorker | CeleryBeat]:
        """Return every process of the deployment: gateways, workers, beat."""
        beat = [] if self.beat is None else [self.beat]
        return [*self.gateways, *self.workers, *beat]

    @property
    def urls(self) -> list[str]:
        """Return the WebSocket URL of every gateway."""
        return [g.ws_url for g in self.gateways]

    @property
    def http_urls(self) -> list[str]:
        """Return the HTTP base URL of every gateway."""
        return [g.http_url for g in self.gateways]

    def start(self, timeout: float = 30.0) -> None:
        """Start every gateway (and worker, beat) at once and wait until all are ready."""
        try:
            for process in self.processes:
                process.spawn()
            for process in self.processes:
                process.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Kill every gateway, worker and beat."""
        for process in self.processes:
            process.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
