"""Send throughput of one gateway process by size of its database thread pool (WS_DB_THREADS).

N clients, each a plain WebSocket (`Authorization: Bearer <jwt>`) in its own direct
conversation, send `message.send` frames as fast as `message.sent` replies come back (one
outstanding send per client) through ONE real gateway process (uvicorn, as
bench/harness.py starts it), on PostgreSQL and a private redis-server. The rate limit
is lifted (CHAT_SEND_RATE / CHAT_SEND_BURST) so only the send path is measured.
WS_DB_THREADS=1 behaves like Channels' `database_sync_to_async` (one thread per process).

    python -m bench.send_threads                        # 1, 4, 8 threads, 3 runs each
    python -m bench.send_threads --threads 1,8 --runs 2 --duration 5
    python -m bench.send_threads --ws-ping-interval 0   # the harness's gateway command as is
    python -m bench.send_threads --idle 5               # CPU of 50 idle sockets, pings on/off

The database (default postgres://postgres@127.0.0.1:5432/bench_threads) is created and
migrated when missing (`--fresh` drops it first); users, conversations and tokens are made
by a Django subprocess (`--provision N`, used internally). Configurations are interleaved
(1, 4, 8, 1, 4, 8, ...) so that load from other processes on the machine spreads over all
of them, and each run first waits (`--wait-quiet`, up to 20 s) for a quiet second. Writes a
table to stdout and everything to bench/results/send_threads.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import websockets
from psycopg import sql

from bench.deploy import machine_busy_seconds
from bench.harness import REPO_ROOT, Gateway, RedisServer, gateway_env, migrate
from bench.layers import code_version, cpu_seconds, machine, percentile

logger = logging.getLogger("bench.send_threads")

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/bench_threads"
APPLICATION_NAME = "bench_send_threads"
REPLY_TIMEOUT = 30.0


# --- database and fixtures -------------------------------------------------------------


def ensure_database(database_url: str, *, fresh: bool) -> None:
    """Create the database if it is missing (drop it first when `fresh`); migrate it."""
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    if not name.startswith("bench"):
        raise SystemExit(f"refusing to use database {name!r}: its name must start with 'bench'")
    admin = psycopg.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password,
        dbname="postgres",
        connect_timeout=5,
        autocommit=True,
    )
    with admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if exists and fresh:
            logger.info("dropping database %s", name)
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
            exists = None
        if not exists:
            logger.info("creating database %s", name)
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    logger.info("migrating %s", name)
    migrate(database_url)


def django_env(database_url: str, secret_key: str) -> dict[str, str]:
    """Return the settings of the gateway and the provisioning script (production-like)."""
    return {
        "DATABASE_URL": database_url,
        "DJANGO_DEBUG": "0",  # DEBUG=1 would record every SQL query in memory
        "DJANGO_SECRET_KEY": secret_key,
        "DJANGO_HTTPS": "0",  # plain HTTP on loopback
        "JWT_ACCESS_SECONDS": "3600",  # the tokens outlive every run
        "LOG_LEVEL": "WARNING",
    }


def provision(clients: int) -> None:
    """Make `clients` users, each in a direct conversation with a peer; print JSON fixtures.

    Runs inside a Django process (`--provision N`); idempotent.
    """
    import django

    django.setup()
    from accounts.models import User
    from accounts.tokens import issue_pair
    from messaging.services import create_direct_conversation

    fixtures = []
    for index in range(clients):
        user, _ = User.objects.get_or_create(username=f"bench_sender_{index}")
        peer, _ = User.objects.get_or_create(username=f"bench_peer_{index}")
        conversation, _ = create_direct_conversation(user=user, other_user_id=peer.pk)
        fixtures.append({"conversation": conversation.pk, "token": issue_pair(user)["access"]})
    sys.stdout.write(json.dumps(fixtures) + "\n")


def make_fixtures(clients: int, env: dict[str, str]) -> list[dict[str, Any]]:
    """Run `--provision` in a Django subprocess and return its fixtures."""
    result = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "bench.send_threads", "--provision", str(clients)],
        cwd=REPO_ROOT,
        env=gateway_env(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"provisioning failed:\n{result.stdout}\n{result.stderr}")
    fixtures: list[dict[str, Any]] = json.loads(result.stdout.strip().splitlines()[-1])
    return fixtures


def with_application_name(database_url: str) -> str:
    """Tag the gateway's PostgreSQL sessions so their backends can be found and timed."""
    parts = urlsplit(database_url)
    query = f"{parts.query}&" if parts.query else ""
    return urlunsplit(parts._replace(query=f"{query}application_name={APPLICATION_NAME}"))


def postgres_backend_pids(database_url: str) -> list[int]:
    """Return the pids of the PostgreSQL backends serving the gateway."""
    parts = urlsplit(database_url)
    with psycopg.connect(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password,
        dbname="postgres",
        connect_timeout=5,
    ) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", [APPLICATION_NAME]
        ).fetchall()
    return [int(row[0]) for row in rows]


class BenchGateway(Gateway):
    """The harness's gateway process with a chosen `--ws-ping-interval`.

    The harness (like the Makefile) passes `--ws-ping-interval 0`, meaning "no server
    pings". websockets' legacy server protocol, which uvicorn's `--ws websockets` uses,
    disables pings only for None: with 0 it pings every socket again as soon as the last
    pong arrives, a ping-pong loop per socket that costs CPU even when every socket is
    idle. `--ws-ping-interval` here measures either (0 = as the harness runs today).
    """

    def __init__(self, *args: Any, ping_interval: float, **kwargs: Any) -> None:
        """Prepare the gateway; `ping_interval` replaces the harness's value."""
        super().__init__(*args, **kwargs)
        self.ping_interval = ping_interval

    def command(self) -> list[str]:
        """Return the harness's command line with this gateway's ping interval."""
        command = super().command()
        command[command.index("--ws-ping-interval") + 1] = f"{self.ping_interval:g}"
        return command


def wait_quiet(max_wait: float, threshold: float = 25.0) -> float:
    """Wait up to `max_wait` s for a second in which the machine is under `threshold`% busy.

    Other users' test runs share these cores; starting a run in a quiet moment makes the
    runs less noisy (it cannot stop a burst that starts during the run). Returns the last
    busy percentage seen.
    """
    deadline = time.monotonic() + max_wait
    busy_pct = math.nan
    while True:
        busy0, total0 = machine_busy_seconds()
        time.sleep(1.0)
        busy1, total1 = machine_busy_seconds()
        busy_pct = (busy1 - busy0) / max(total1 - total0, 1e-9) * 100
        if busy_pct < threshold or time.monotonic() >= deadline:
            return busy_pct


# --- one run ---------------------------------------------------------------------------


@dataclass
class ClientStats:
    """What one client saw in the measured window."""

    latencies_ms: list[float] = field(default_factory=list)
    completed: int = 0
    errors: dict[str, int] = field(default_factory=dict)


@dataclass
class RunResult:
    """The figures of one gateway run."""

    threads: int
    run: int
    clients: int
    duration_s: float
    sends: int = 0
    sends_per_s: float = 0.0
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    errors: dict[str, int] = field(default_factory=dict)
    gateway_cpu_pct: float = math.nan
    postgres_cpu_pct: float = math.nan
    redis_cpu_pct: float = math.nan
    client_cpu_pct: float = math.nan
    machine_busy_pct: float = math.nan
    others_cpu_pct: float = math.nan  # every other process on the machine (other users' too)
    machine_busy_before_pct: float = math.nan
    gateway_cpu_ms_per_send: float = math.nan
    postgres_backends: int = 0


async def client_loop(
    url: str,
    fixture: dict[str, Any],
    ready: asyncio.Queue[None],
    start: asyncio.Event,
    window: dict[str, float],
    stats: ClientStats,
) -> None:
    """Connect, read `session.ready`, then send one message at a time until the window ends."""
    headers = {"Authorization": f"Bearer {fixture['token']}"}
    async with websockets.connect(
        url, additional_headers=headers, open_timeout=30, ping_interval=None, max_size=2**20
    ) as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), 30))
        if first.get("type") != "session.ready":
            raise RuntimeError(f"first frame is not session.ready: {first}")
        ready.put_nowait(None)
        await start.wait()
        n = 0
        while time.monotonic() < window["end"]:
            n += 1
            ref = f"s{n}"
            frame = {
                "type": "message.send",
                "conversation": fixture["conversation"],
                "client_msg_id": str(uuid.uuid4()),
                "body": "x",
                "ref": ref,
            }
            sent = time.monotonic()
            await ws.send(json.dumps(frame))
            while True:  # skip the echo (`message.created` to our own conversation group)
                reply = json.loads(await asyncio.wait_for(ws.recv(), REPLY_TIMEOUT))
                if reply.get("ref") == ref:
                    break
            done = time.monotonic()
            if sent < window["measure"] or done > window["end"]:
                continue
            if reply.get("type") == "message.sent":
                stats.completed += 1
                stats.latencies_ms.append((done - sent) * 1000)
            else:
                code = str(reply.get("code", reply.get("type")))
                stats.errors[code] = stats.errors.get(code, 0) + 1


async def drive_clients(
    url: str,
    fixtures: Sequence[dict[str, Any]],
    *,
    warmup: float,
    duration: float,
    on_window: Callable[[dict[str, float]], Awaitable[list[asyncio.Task[None]]]],
) -> list[ClientStats]:
    """Connect every client, then run warm-up and the measured window; return their stats."""
    ready: asyncio.Queue[None] = asyncio.Queue()
    start = asyncio.Event()
    window = {"measure": math.inf, "end": math.inf}
    stats = [ClientStats() for _ in fixtures]
    tasks = [
        asyncio.create_task(client_loop(url, f, ready, start, window, s))
        for f, s in zip(fixtures, stats, strict=True)
    ]
    try:
        async with asyncio.timeout(60):
            for _ in fixtures:
                waiter = asyncio.create_task(ready.get())
                done, _pending = await asyncio.wait(
                    [waiter, *tasks], return_when=asyncio.FIRST_COMPLETED
                )
                if waiter not in done:
                    waiter.cancel()
                    for task in done:
                        task.result()  # a client failed to connect: raise its error
                    raise RuntimeError("a client ended before it was ready")
        logger.info("%d clients connected and greeted", len(fixtures))
        now = time.monotonic()
        window["measure"] = now + warmup
        window["end"] = now + warmup + duration
        start.set()
        samplers = await on_window(window)
        async with asyncio.timeout(duration + warmup + REPLY_TIMEOUT + 10):
            await asyncio.gather(*tasks, *samplers)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return stats


def run_once(
    *,
    threads: int,
    run: int,
    fixtures: Sequence[dict[str, Any]],
    env: dict[str, str],
    database_url: str,
    redis: RedisServer,
    redis_pid: int,
    warmup: float,
    duration: float,
    log_dir: Path,
    ping_interval: float,
) -> RunResult:
    """Start a gateway with `threads` database threads, drive the clients, stop it."""
    gateway_settings = {
        **env,
        "DATABASE_URL": with_application_name(database_url),
        "REDIS_URL": redis.url,
        "CHANNEL_LAYER_PREFIX": f"bench-{uuid.uuid4().hex[:8]}",
        "WS_DB_THREADS": str(threads),
        "CHAT_SEND_RATE": "100000",
        "CHAT_SEND_BURST": "100000",
    }
    result = RunResult(threads=threads, run=run, clients=len(fixtures), duration_s=duration)
    with BenchGateway(
        gateway_settings, log_dir, name=f"gateway-t{threads}-r{run}", ping_interval=ping_interval
    ) as gateway:
        cpu: dict[str, dict[str, float]] = {}
        pg_pids: list[int] = []

        def sample(key: str) -> None:
            busy, total = machine_busy_seconds()
            cpu[key] = {
                "wall": time.monotonic(),
                "gateway": cpu_seconds(gateway.pid),
                "redis": cpu_seconds(redis_pid),
                "client": cpu_seconds(os.getpid()),
                "machine_busy": busy,
                "machine_total": total,
                **{f"pg{pid}": _cpu_or_nan(pid) for pid in pg_pids},
            }

        async def on_window(window: dict[str, float]) -> list[asyncio.Task[None]]:
            async def measure() -> None:
                # The gateway's database connections exist once the warm-up has sent.
                await asyncio.sleep(max(0.0, window["measure"] - time.monotonic() - 0.3))
                pg_pids.extend(await asyncio.to_thread(postgres_backend_pids, database_url))
                await asyncio.sleep(max(0.0, window["measure"] - time.monotonic()))
                sample("start")
                await asyncio.sleep(max(0.0, window["end"] - time.monotonic()))
                sample("end")

            return [asyncio.get_running_loop().create_task(measure())]

        stats = asyncio.run(
            drive_clients(
                gateway.ws_url, fixtures, warmup=warmup, duration=duration, on_window=on_window
            )
        )
        if gateway.crashed:
            raise SystemExit(f"gateway died:\n{gateway.output()[-5000:]}")
    latencies = [ms for s in stats for ms in s.latencies_ms]
    result.sends = sum(s.completed for s in stats)
    result.sends_per_s = result.sends / duration
    result.p50_ms = percentile(latencies, 50)
    result.p99_ms = percentile(latencies, 99)
    result.max_ms = max(latencies, default=math.nan)
    for s in stats:
        for code, count in s.errors.items():
            result.errors[code] = result.errors.get(code, 0) + count
    start, end = cpu.get("start"), cpu.get("end")
    if start and end:
        wall = end["wall"] - start["wall"]

        def pct(key: str) -> float:
            return (end[key] - start[key]) / wall * 100

        result.gateway_cpu_pct = pct("gateway")
        result.redis_cpu_pct = pct("redis")
        result.client_cpu_pct = pct("client")
        pg = [k for k in start if k.startswith("pg") and k in end]
        result.postgres_backends = len(pg)
        result.postgres_cpu_pct = sum(end[k] - start[k] for k in pg) / wall * 100
        result.machine_busy_pct = (
            (end["machine_busy"] - start["machine_busy"])
            / (end["machine_total"] - start["machine_total"])
            * 100
        )
        ours = (
            result.gateway_cpu_pct
            + result.postgres_cpu_pct
            + result.redis_cpu_pct
            + result.client_cpu_pct
        )
        result.others_cpu_pct = result.machine_busy_pct * (os.cpu_count() or 1) - ours
        if result.sends:
            result.gateway_cpu_ms_per_send = (
                (end["gateway"] - start["gateway"]) * 1000 / result.sends
            )
    logger.info(
        "WS_DB_THREADS=%d run %d: %.0f sends/s, p50 %.1f ms, p99 %.1f ms, gateway CPU %.0f%%, "
        "PostgreSQL %.0f%% (%d backends), other processes %.0f%%, errors %s",
        threads,
        run,
        result.sends_per_s,
        result.p50_ms,
        result.p99_ms,
        result.gateway_cpu_pct,
        result.postgres_cpu_pct,
        result.postgres_backends,
        result.others_cpu_pct,
        result.errors or "none",
    )
    return result


def _cpu_or_nan(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return math.nan


async def idle_cpu(
    url: str, fixtures: Sequence[dict[str, Any]], gateway_pid: int, seconds: float
) -> tuple[float, float]:
    """Hold every client's socket open and silent; return (gateway, clients) CPU % meanwhile."""
    sockets = []
    try:
        for fixture in fixtures:
            ws = await websockets.connect(
                url,
                additional_headers={"Authorization": f"Bearer {fixture['token']}"},
                open_timeout=30,
                ping_interval=None,
            )
            sockets.append(ws)
            await asyncio.wait_for(ws.recv(), 30)  # session.ready
        await asyncio.sleep(1.0)
        gateway0, client0, wall0 = (
            cpu_seconds(gateway_pid),
            cpu_seconds(os.getpid()),
            time.monotonic(),
        )
        await asyncio.sleep(seconds)
        wall = time.monotonic() - wall0
        return (
            (cpu_seconds(gateway_pid) - gateway0) / wall * 100,
            (cpu_seconds(os.getpid()) - client0) / wall * 100,
        )
    finally:
        for ws in sockets:
            await ws.close()


def idle_check(
    args: argparse.Namespace, fixtures: Sequence[dict[str, Any]], env: dict[str, str]
) -> list[dict[str, float]]:
    """Measure the CPU of a gateway whose sockets are all idle, per --ws-ping-interval."""
    rows = []
    with RedisServer() as redis_server:
        for interval in (0.0, args.ws_ping_interval):
            settings = {**env, "REDIS_URL": redis_server.url, "WS_DB_THREADS": "8"}
            with BenchGateway(
                settings,
                RESULTS_DIR / "logs",
                name=f"idle-ping{interval:g}",
                ping_interval=interval,
            ) as gateway:
                gateway_pct, client_pct = asyncio.run(
                    idle_cpu(gateway.ws_url, fixtures, gateway.pid, args.idle)
                )
            logger.info(
                "--ws-ping-interval %g, %d idle sockets: gateway %.0f%% CPU, clients %.0f%%",
                interval,
                len(fixtures),
                gateway_pct,
                client_pct,
            )
            rows.append(
                {
                    "ws_ping_interval": interval,
                    "gateway_cpu_pct": gateway_pct,
                    "clients_cpu_pct": client_pct,
                }
            )
    return rows


# --- output ----------------------------------------------------------------------------


COLUMNS = [
    ("sends_per_s", "sends/s", "{:.0f}"),
    ("p50_ms", "reply p50 (ms)", "{:.1f}"),
    ("p99_ms", "reply p99 (ms)", "{:.1f}"),
    ("gateway_cpu_pct", "gateway CPU %", "{:.0f}"),
    ("gateway_cpu_ms_per_send", "gateway CPU ms/send", "{:.2f}"),
    ("postgres_cpu_pct", "PostgreSQL CPU %", "{:.0f}"),
    ("redis_cpu_pct", "Redis CPU %", "{:.0f}"),
    ("client_cpu_pct", "clients CPU %", "{:.0f}"),
    ("others_cpu_pct", "other processes CPU %", "{:.0f}"),
]


def summarize(results: Sequence[RunResult]) -> tuple[dict[int, dict[str, float]], str]:
    """Return the median per configuration and a Markdown table with min-max over runs."""
    by_threads: dict[int, list[RunResult]] = {}
    for r in results:
        by_threads.setdefault(r.threads, []).append(r)
    summary: dict[int, dict[str, float]] = {}
    lines = [
        "| WS_DB_THREADS | runs | " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 2) + "|",
    ]
    for threads, runs in sorted(by_threads.items()):
        figures = {key: [float(getattr(r, key)) for r in runs] for key, _, _ in COLUMNS}
        summary[threads] = {key: statistics.median(v) for key, v in figures.items()}
        cells = []
        for key, _, fmt in COLUMNS:
            cell = fmt.format(summary[threads][key])
            if len(runs) > 1:
                cell += f" ({fmt.format(min(figures[key]))}-{fmt.format(max(figures[key]))})"
            cells.append(cell)
        lines.append(f"| {threads} | {len(runs)} | " + " | ".join(cells) + " |")
    return summary, "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.send_threads",
        description=(
            "Sends/s and reply latency of message.send through one gateway process, "
            "by WS_DB_THREADS (the size of its database thread pool)."
        ),
    )
    parser.add_argument("--threads", default="1,4,8", help="WS_DB_THREADS values (1,4,8)")
    parser.add_argument("--clients", type=int, default=50, help="WebSocket clients (50)")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first (2)")
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration (3)")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="a bench* database")
    parser.add_argument("--fresh", action="store_true", help="drop and recreate the database")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=20.0,
        help="before each run, wait up to this many s for a quiet second (20; 0 = never)",
    )
    parser.add_argument(
        "--ws-ping-interval",
        type=float,
        default=3600.0,
        help=(
            "the gateway's uvicorn --ws-ping-interval (default 3600: no server pings during "
            "the run; 0 = the harness's and Makefile's value, a ping-pong loop per socket)"
        ),
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS_DIR / "send_threads.json", help="JSON results file"
    )
    parser.add_argument(
        "--idle",
        type=float,
        metavar="SECONDS",
        help=(
            "instead of sending: hold the clients' sockets idle this long and report the "
            "gateway's CPU with --ws-ping-interval 0 and with the value given"
        ),
    )
    parser.add_argument("--provision", type=int, metavar="N", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.provision is None and (args.clients < 1 or args.runs < 1 or args.duration <= 0):
        parser.error("--clients and --runs must be at least 1, --duration positive")
    return args


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark; print the table; write the JSON."""
    args = parse_args(argv)
    # A SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the context managers stop
    # the redis-server and gateway this command started instead of orphaning them.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if args.provision is not None:
        provision(args.provision)
        return
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    started = time.monotonic()
    code_before = code_version()
    load_before = os.getloadavg()
    ensure_database(args.database_url, fresh=args.fresh)
    env = django_env(args.database_url, secrets.token_urlsafe(50))
    fixtures = make_fixtures(args.clients, env)
    logger.info("%d users with a direct conversation and a token each", len(fixtures))
    if args.idle:
        rows = idle_check(args, fixtures, env)
        print(f"\n{len(fixtures)} idle sockets for {args.idle:g} s, one gateway")
        print("| --ws-ping-interval | gateway CPU % | clients CPU % |\n|---|---|---|")
        for row in rows:
            print(
                f"| {row['ws_ping_interval']:g} | {row['gateway_cpu_pct']:.0f} "
                f"| {row['clients_cpu_pct']:.0f} |"
            )
        return
    log_dir = RESULTS_DIR / "logs"
    results: list[RunResult] = []
    with RedisServer() as redis_server:
        with redis_server.client() as client:
            redis_pid = int(client.info("server")["process_id"])
        for run in range(1, args.runs + 1):
            for count in threads:
                busy = wait_quiet(args.wait_quiet) if args.wait_quiet > 0 else math.nan
                logger.info(
                    "run %d/%d: WS_DB_THREADS=%d (machine %.0f%% busy just before)",
                    run,
                    args.runs,
                    count,
                    busy,
                )
                result = run_once(
                    threads=count,
                    run=run,
                    fixtures=fixtures,
                    env=env,
                    database_url=args.database_url,
                    redis=redis_server,
                    redis_pid=redis_pid,
                    warmup=args.warmup,
                    duration=args.duration,
                    log_dir=log_dir,
                    ping_interval=args.ws_ping_interval,
                )
                result.machine_busy_before_pct = busy
                results.append(result)
                with contextlib.suppress(Exception):
                    redis_server.flushall()
    summary, rendered = summarize(results)
    report = {
        "command": " ".join([Path(sys.executable).name, "-m", "bench.send_threads", *sys.argv[1:]]),
        "machine": {**machine(), "loadavg_before": load_before},
        "code": {"at_start": code_before, "at_end": code_version()},
        "config": {k: str(v) for k, v in vars(args).items() if k not in ("output", "provision")},
        "elapsed_s": round(time.monotonic() - started, 1),
        "runs": [asdict(r) for r in results],
        "summary_median_of_runs": summary,
        "table": rendered,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"\n{args.clients} clients, one message.send outstanding each, {args.duration:g} s "
        f"measured after {args.warmup:g} s warm-up, gateway --ws-ping-interval "
        f"{args.ws_ping_interval:g}; median of {args.runs} runs (min-max)"
    )
    print(rendered)
    print(f"\nelapsed {report['elapsed_s']} s; JSON: {args.output}")


if __name__ == "__main__":
    main()
