"""The deployment `make bench` measures: PostgreSQL, Redis, Celery worker and beat, N gateways.

Everything is started by this process on free loopback ports and stopped when it ends
(`bench/harness.py` owns the process handling): a throwaway PostgreSQL cluster, a
private redis-server, one Celery worker (prefork, concurrency 2, as `make serve` runs
it), Celery beat, N uvicorn gateway processes, and a local Web Push endpoint
(`bench.pushsink`) that the worker's pushes go to. Settings are production ones
(`DJANGO_DEBUG=0`) except the per-user send rate limit, which is lifted so a few hundred
clients can offer thousands of messages a second, and NOTIFY_PUSH_DELAY, which is 1 s
instead of 10 so that the notifications scenario fits in minutes.

`CpuMeter` reads the CPU time of each part from /proc, so every scenario can report how
the machine's cores were split between gateways, PostgreSQL, Redis, the Celery worker,
beat and the harness itself.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.harness import (
    GATEWAY_WS,
    REPO_ROOT,
    Deployment,
    HarnessError,
    Managed,
    PostgresCluster,
    RedisServer,
    _spawn,
    gateway_env,
    migrate,
)
from bench.pushsink import PushSink, vapid_keypair

Progress = Callable[[str], None]

# Full durability: every acknowledged message is on disk (the product's promise), unlike
# the test harness's cluster, which turns fsync off.
DURABLE_POSTGRES = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "shared_buffers": "256MB",
    "max_connections": "300",
}
RELAXED_POSTGRES = {**DURABLE_POSTGRES, "synchronous_commit": "off"}

CLK_TCK = os.sysconf("SC_CLK_TCK")


def raise_open_file_limit() -> int:
    """Raise this process's soft open-file limit to its hard limit; return the new limit.

    Children (gateways, load workers) inherit it. The hard limit itself needs privileges
    this machine does not grant (it is 20,000 here), which is why one load worker holds
    at most `fleet.SOCKETS_PER_WORKER` sockets.
    """
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# --- CPU accounting ---------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()


def process_cpu(pid: int, *, reaped_children: bool = False) -> float:
    """Return the user + system CPU seconds of `pid` (plus its reaped children's if asked).

    PostgreSQL's postmaster reaps every backend, so `reaped_children` on it counts the
    backends that have already exited; live ones are added separately. 0.0 if gone.
    """
    try:
        fields = _stat_fields(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def children_of(ppid: int) -> list[int]:
    """Return the pids whose parent is `ppid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            if int(_stat_fields(int(entry.name))[1]) == ppid:
                found.append(int(entry.name))
    return found


def rss_bytes(pid: int) -> int:
    """Return the resident memory of `pid` (VmRSS), 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


def machine_busy_seconds() -> tuple[float, float]:
    """Return (busy, total) CPU seconds of the whole machine, all cores, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


@dataclass
class CpuSample:
    """CPU seconds used so far by each part, and the wall clock when read."""

    at: float
    parts: dict[str, float]
    machine_busy: float
    machine_total: float


class CpuMeter:
    """Reads the CPU time of the deployment's parts; `split()` turns two reads into shares."""

    def __init__(self, parts: Mapping[str, Callable[[], float]]) -> None:
        """`parts` maps a name ("gateways", "postgres", ...) to a cumulative CPU reader."""
        self.parts = dict(parts)

    def sample(self) -> CpuSample:
        """Read every part now."""
        busy, total = machine_busy_seconds()
        return CpuSample(
            at=time.monotonic(),
            parts={name: read() for name, read in self.parts.items()},
            machine_busy=busy,
            machine_total=total,
        )

    @staticmethod
    def split(before: CpuSample, after: CpuSample) -> dict[str, float]:
        """Return each part's CPU between two samples as % of one core, plus the machine's.

        `other` is whatever else ran on the machine (other users' jobs, the kernel's
        softirq work that no process is charged for). `machine` is all cores' busy
        time as % of one core (200 = both cores busy).
        """
        wall = max(after.at - before.at, 1e-9)
        shares = {
            name: round(100 * (after.parts[name] - before.parts[name]) / wall, 1)
            for name in after.parts
        }
        machine = 100 * (after.machine_busy - before.machine_busy) / wall
        shares["other"] = round(max(0.0, machine - sum(shares.values())), 1)
        shares["machine"] = round(machine, 1)
        return shares


# --- the deployment ---------------------------------------------------------------------


@dataclass(frozen=True)
class DeployOptions:
    """What to bring up."""

    gateways: int = 2
    durability: str = "full"  # full | relaxed (synchronous_commit=off)
    db_threads: int | None = None
    ws: str = GATEWAY_WS  # uvicorn's --ws implementation
    extra_env: tuple[tuple[str, str], ...] = ()
    # The Celery worker as `make serve` runs it, and what the push endpoint does.
    worker_pool: str = "prefork"
    worker_concurrency: int = 2
    push_answer_delay: float = 0.05  # seconds before the bench's push endpoint answers 201
    notify_push_delay: float = 1.0  # NOTIFY_PUSH_DELAY (the product's default is 10 s)


class CeleryProcess:
    """One Celery process (worker or beat) on the deployment's Redis, in its own session.

    Its CPU is the whole group's: the main process, its live pool children and the
    children it has reaped; what earlier runs used (before a `restart`) is kept, so a
    meter reading across a restart stays cumulative.
    """

    ready_pattern = r"$^"
    name = "celery"

    def __init__(self, env: Mapping[str, str], log_dir: Path) -> None:
        """Prepare the process with the gateways' environment."""
        self.env = gateway_env(env)
        self.log_path = log_dir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self.pid = 0
        self.retired_cpu = 0.0

    def command(self) -> list[str]:
        """Return the command line."""
        raise NotImplementedError

    def start(self, timeout: float = 60.0) -> None:
        """Start the process and wait until this run logs that it is ready."""
        with self.log_path.open("a") as log:
            log.write(f"--- bench: starting {' '.join(self.command()[3:])} ---\n")
        self._log_offset = self.log_path.stat().st_size
        proc = _spawn(self.command(), log=self.log_path, cwd=REPO_ROOT, env=self.env)
        self._proc = proc
        self.pid = proc.pid
        deadline = time.monotonic() + timeout
        while not re.search(self.ready_pattern, self.output()[self._log_offset :]):
            if proc.poll() is not None:
                raise HarnessError(f"{self.name} exited with {proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise HarnessError(f"{self.name} not ready in {timeout} s:\n{self.output()}")
            time.sleep(0.05)

    @property
    def running(self) -> bool:
        """Return whether the main process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def output(self) -> str:
        """Return the process's log (every run)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def pids(self) -> list[int]:
        """Return the main process and its live children (a prefork pool)."""
        if not self.running:
            return []
        return [self.pid, *children_of(self.pid)]

    def _live_cpu(self) -> float:
        if not self.running:
            return 0.0
        return process_cpu(self.pid, reaped_children=True) + sum(
            process_cpu(pid) for pid in children_of(self.pid)
        )

    def cpu_seconds(self) -> float:
        """Return the CPU time of every run so far (main process and pool children)."""
        return self.retired_cpu + self._live_cpu()

    def rss(self) -> int:
        """Return the summed resident memory of the main process and its children."""
        return sum(rss_bytes(pid) for pid in self.pids())

    def close(self) -> None:
        """Stop the process (warm shutdown, then SIGKILL to its session)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self.retired_cpu += self._live_cpu()
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # Pool children left behind by a killed main process.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        self._proc = None
        self.pid = 0


class CeleryWorker(CeleryProcess):
    """The Celery worker: `pool` and `concurrency` as `make serve` runs it (prefork, 2)."""

    name = "celery-worker"
    ready_pattern = r"bench-worker@\S+ ready"

    def __init__(
        self,
        env: Mapping[str, str],
        log_dir: Path,
        *,
        pool: str = "prefork",
        concurrency: int = 2,
        app: str = "chatsite",
    ) -> None:
        """Prepare the worker; `pool` is Celery's --pool (prefork, threads, solo).

        `app` is the Celery app (`-A`): the product's, or `bench.workerapp` (the
        product's plus a wake-up timer for the threads pool, see that module).
        """
        super().__init__(env, log_dir)
        self.pool = pool
        self.concurrency = concurrency
        self.app = app

    @property
    def label(self) -> str:
        """Return how the worker runs, e.g. `prefork x2`."""
        extra = "" if self.app == "chatsite" else f", -A {self.app}"
        return f"{self.pool} x{self.concurrency}{extra}"

    def command(self) -> list[str]:
        """Return the worker's command line."""
        return [
            sys.executable, "-m", "celery", "-A", self.app, "worker",
            "--pool", self.pool, "--concurrency", str(self.concurrency),
            "-n", "bench-worker@%h", "--loglevel", "INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip

    def restart(
        self, *, pool: str | None = None, concurrency: int | None = None, app: str | None = None
    ) -> None:
        """Stop the worker and start it again, with another pool, concurrency or app."""
        self.close()
        self.pool = pool or self.pool
        self.concurrency = concurrency or self.concurrency
        self.app = app or self.app
        self.start()


class CeleryBeat(CeleryProcess):
    """Celery beat: rings `notify_tick_task` every NOTIFY_POLL_INTERVAL seconds."""

    name = "celery-beat"
    ready_pattern = r"beat: Starting\.\.\."

    def __init__(self, env: Mapping[str, str], log_dir: Path) -> None:
        """Prepare beat; its schedule file lives in `log_dir`."""
        super().__init__(env, log_dir)
        self.schedule = log_dir / "celerybeat-schedule"

    def start(self, timeout: float = 60.0) -> None:
        """Start beat on a fresh schedule file (no last runs from an earlier start)."""
        for stale in self.schedule.parent.glob(self.schedule.name + "*"):
            stale.unlink(missing_ok=True)
        super().start(timeout)

    def command(self) -> list[str]:
        """Return beat's command line."""
        return [
            sys.executable, "-m", "celery", "-A", "chatsite", "beat",
            "--loglevel", "INFO", "-s", str(self.schedule), "--pidfile=",
        ]  # fmt: skip


class BenchDeployment(Managed):
    """PostgreSQL + Redis + Celery + N gateways, all private to one bench run."""

    def __init__(self, workdir: Path, options: DeployOptions, progress: Progress) -> None:
        """Prepare (nothing starts until `start()` or `with`)."""
        self.workdir = workdir
        self.options = options
        self.progress = progress
        self.secret_key = secrets.token_urlsafe(48)
        settings = DURABLE_POSTGRES if options.durability == "full" else RELAXED_POSTGRES
        self.postgres = PostgresCluster("chat", settings=settings)
        self.redis = RedisServer(workdir / "redis")
        self.celery: CeleryWorker | None = None
        self.beat: CeleryBeat | None = None
        self.push_sink = PushSink(options.push_answer_delay)
        self.vapid_public_key, self.vapid_private_key = vapid_keypair()
        self.gateways: Deployment | None = None
        self.env: dict[str, str] = {}
        self._extra_cpu: list[Callable[[], float]] = []
        self.retired_harness_cpu = 0.0

    # -- lifecycle

    def start(self) -> None:
        """Start every part and migrate the database."""
        started = time.monotonic()
        self.progress("starting PostgreSQL (initdb) and Redis")
        self.postgres.start()
        self.redis.start()
        self.push_sink.start()
        prefix = f"bench-{secrets.token_hex(4)}"
        self.env = {
            "DATABASE_URL": self.postgres.url,
            "REDIS_URL": self.redis.url,
            "CELERY_BROKER_URL": self.redis.url.rsplit("/", 1)[0] + "/1",
            "CHANNEL_LAYER_PREFIX": prefix,
            "REDIS_KEY_PREFIX": prefix,
            "DJANGO_DEBUG": "0",
            "DJANGO_HTTPS": "0",
            "DJANGO_SECRET_KEY": self.secret_key,
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LOG_LEVEL": "WARNING",
            # A run lasts longer than the default 5-minute access token.
            "JWT_ACCESS_SECONDS": "7200",
            # The per-user send limit (5/s) is a product rule, not a capacity limit: a
            # hundred clients offering 1,500 msg/s would be refused by it.
            "CHAT_SEND_RATE": "100000",
            "CHAT_SEND_BURST": "100000",
            # Offline notifications: the worker pushes to the bench's own endpoint (plain
            # http on loopback, so it must be allowed), signed with a key of this run.
            "WEBPUSH_VAPID_PUBLIC_KEY": self.vapid_public_key,
            "WEBPUSH_VAPID_PRIVATE_KEY": self.vapid_private_key,
            "WEBPUSH_VAPID_SUBJECT": "mailto:bench@localhost",
            "PUSH_ENDPOINT_ALLOW": self.push_sink.origin,
            "NOTIFY_ENABLED": "1",
            "NOTIFY_PUSH_DELAY": f"{self.options.notify_push_delay:g}",
            "NOTIFY_POLL_INTERVAL": "1",
        }
        if self.options.db_threads:
            self.env["WS_DB_THREADS"] = str(self.options.db_threads)
        self.env.update(dict(self.options.extra_env))
        self.progress("migrating the database")
        migrate(self.postgres.url, self.env)
        options = self.options
        self.progress(
            f"starting the Celery worker ({options.worker_pool} x{options.worker_concurrency})"
            " and beat"
        )
        self.celery = CeleryWorker(
            self.env, self.workdir, pool=options.worker_pool, concurrency=options.worker_concurrency
        )
        self.celery.start()
        self.beat = CeleryBeat(self.env, self.workdir)
        self.beat.start()
        self.progress(f"starting {self.options.gateways} gateway process(es)")
        self.gateways = Deployment(
            database_url=self.postgres.url,
            redis_url=self.redis.url,
            log_dir=self.workdir,
            gateways=self.options.gateways,
            env=self.env,
            channel_layer_prefix=prefix,
            ws=self.options.ws,
        )
        self.gateways.start()
        self.progress(f"deployment up in {time.monotonic() - started:.1f} s")

    def close(self) -> None:
        """Stop everything (gateways first, so nothing reconnects to a dying database)."""
        if self.gateways is not None:
            self.gateways.stop()
        if self.beat is not None:
            self.beat.close()
        if self.celery is not None:
            self.celery.close()
        self.push_sink.close()
        self.redis.close()
        self.postgres.close()

    # -- facts

    @property
    def ws_urls(self) -> list[str]:
        """Return every gateway's WebSocket URL."""
        assert self.gateways is not None
        return self.gateways.urls

    def gateway_pids(self) -> list[int]:
        """Return the pid of every gateway."""
        assert self.gateways is not None
        return [g.pid for g in self.gateways.gateways]

    def gateways_crashed(self) -> list[str]:
        """Return the names of gateways that died on their own."""
        assert self.gateways is not None
        return [g.name for g in self.gateways.gateways if g.crashed]

    def gateway_rss(self) -> int:
        """Return the summed resident memory of the gateways."""
        return sum(rss_bytes(pid) for pid in self.gateway_pids())

    def redis_client(self) -> redis.Redis:
        """Return a client of the deployment's Redis (close it after use)."""
        return self.redis.client()

    def add_harness_cpu(self, reader: Callable[[], float]) -> None:
        """Count another process's CPU (a load worker) as the harness's."""
        self._extra_cpu.append(reader)

    def remove_harness_cpu(self, *readers: Callable[[], float]) -> None:
        """Stop following load workers that are about to exit, keeping what they used."""
        for reader in readers:
            if reader in self._extra_cpu:
                self.retired_harness_cpu += reader()
                self._extra_cpu.remove(reader)

    def meter(self) -> CpuMeter:
        """Return a meter of gateways, PostgreSQL, Redis, the Celery worker, beat, the harness.

        `celery` is the worker's whole process group (its pool children too); the push
        endpoint's process counts as the harness's.
        """
        postmaster = self.postgres._postmaster_pid()
        assert postmaster is not None
        assert self.celery is not None
        redis_pid = self.redis._proc.pid if self.redis._proc else 0
        celery = self.celery
        beat = self.beat
        assert beat is not None
        sink = self.push_sink

        def gateways() -> float:
            # Cumulative across restarts: a restarted gateway's new process starts from 0.
            assert self.gateways is not None
            return sum(
                g.retired_cpu + (process_cpu(g.pid) if g.running else 0.0)
                for g in self.gateways.gateways
            )

        def postgres() -> float:
            return process_cpu(postmaster, reaped_children=True) + sum(
                process_cpu(pid) for pid in children_of(postmaster)
            )

        def harness() -> float:
            own = os.times()
            live = sum(read() for read in self._extra_cpu)
            pushes = process_cpu(sink.pid) if sink.pid else 0.0
            return own.user + own.system + self.retired_harness_cpu + live + pushes

        return CpuMeter(
            {
                "gateways": gateways,
                "postgres": postgres,
                "redis": lambda: process_cpu(redis_pid),
                "celery": celery.cpu_seconds,
                "beat": beat.cpu_seconds,
                "harness": harness,
            }
        )


def redis_command_calls(client: redis.Redis) -> dict[str, int]:
    """Return Redis's per-command call counters (INFO commandstats)."""
    stats: dict[str, Any] = client.info("commandstats")  # type: ignore[assignment]
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def redis_cpu_seconds(client: redis.Redis) -> float:
    """Return Redis's own CPU seconds (INFO cpu), precise to the microsecond."""
    info: dict[str, Any] = client.info("cpu")  # type: ignore[assignment]
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def command_delta(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """Return the calls per command between two `redis_command_calls()` reads."""
    names: Iterable[str] = set(before) | set(after)
    delta = {n: after.get(n, 0) - before.get(n, 0) for n in names}
    return {n: c for n, c in sorted(delta.items(), key=lambda kv: -kv[1]) if c > 0}
