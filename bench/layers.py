"""Fan-out cost of one message to a 1,000-member group, per channel layer and group scheme.

Uses the channel layers directly (no Django): two receiver processes stand in for two
gateway processes, each holding half of the members' channels and receiving on all of
them at once; this process is the sender. Variants:

  a  core-conv    RedisChannelLayer, one group `conv.<id>` of all 1,000 channels
  b  core-user    RedisChannelLayer, 1,000 groups `user.<n>` of one channel each
  c  pubsub-conv  RedisPubSubChannelLayer, one group of all 1,000 channels
  d  pubsub-user  RedisPubSubChannelLayer, 1,000 groups of one channel each

Per variant: the join cost (new_channel and group_add for each process's channels), then
a few warm-up messages and `--messages` measured ones, one at a time: the sender calls
group_send (once, or once per member in the per-user schemes, one after another like
messaging/events.py does), and each receiver reports when its last channel has the message.
CPU seconds of Redis, the receivers and the sender come from /proc (schedstat, with
/proc/<pid>/stat as a cross-check) over the measured messages. Everything runs against a
private redis-server on a free 127.0.0.1 port. Bounded: 10 s per message at most and a
time budget for the whole command (`--max-seconds`, 170 s) shared out over the variants.

    python -m bench.layers                      # all four variants, one run
    python -m bench.layers --runs 3             # three runs, summary = median per figure
    python -m bench.layers --variants a,c --messages 50

Writes a table to stdout and everything to bench/results/layers.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import math
import multiprocessing as mp
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import redis

from bench.harness import RedisServer

logger = logging.getLogger("bench.layers")

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Variant:
    """One channel layer and group scheme."""

    key: str
    name: str
    backend: str
    scheme: str  # "conv": one group of every channel; "user": one group per channel


VARIANTS: dict[str, Variant] = {
    v.key: v
    for v in (
        Variant("a", "core-conv", "channels_redis.core.RedisChannelLayer", "conv"),
        Variant("b", "core-user", "channels_redis.core.RedisChannelLayer", "user"),
        Variant("c", "pubsub-conv", "channels_redis.pubsub.RedisPubSubChannelLayer", "conv"),
        Variant("d", "pubsub-user", "channels_redis.pubsub.RedisPubSubChannelLayer", "user"),
    )
}

CONV_GROUP = "conv.1"
# Seconds kept back for each variant still to run when a variant's time budget is set.
RESERVE_S = 15.0


def user_group(member: int) -> str:
    """Return the per-user group of member number `member`."""
    return f"user.{member}"


@dataclass(frozen=True)
class LayerConfig:
    """What a process needs to build the same layer as the others."""

    backend: str
    redis_url: str
    prefix: str
    capacity: int


def make_layer(config: LayerConfig) -> Any:
    """Build a channel layer with the project's settings (chatsite/settings.py)."""
    module_name, _, class_name = config.backend.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    if class_name == "RedisPubSubChannelLayer":
        return cls(hosts=[config.redis_url], prefix=config.prefix)
    return cls(
        hosts=[config.redis_url],
        prefix=config.prefix,
        capacity=config.capacity,
        expiry=60,
        group_expiry=86400,
    )


def sample_event(n: int, sent_at: float) -> dict[str, Any]:
    """Return a `message.created` event of realistic size, tagged with its number and time."""
    return {
        "type": "message.created",
        "message": {
            "id": 100_000 + n,
            "conversation": 1,
            "seq": n + 2,
            "version": n + 2,
            "kind": "text",
            "sender": 1,
            "body": "Hello everyone, this is a message of a typical length for a group chat.",
            "client_msg_id": "4f9e2a52-27c1-4a5c-8d1e-0d6b2f4d7c11",
            "created_at": "2026-11-22T10:00:00.000000Z",
            "edited_at": None,
            "deleted": False,
            "attachments": [],
        },
        "member_seq": 1,
        "bench_n": n,
        "bench_t": sent_at,
    }


def cpu_seconds(pid: int) -> float:
    """Return the CPU time of process `pid`, all threads (/proc/<pid>/task/*/schedstat).

    schedstat counts nanoseconds; /proc/<pid>/stat (`stat_cpu_seconds`) counts 10 ms
    ticks, too coarse for a fraction of a millisecond per message. Both are recorded.
    """
    total_ns = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):  # a thread that just ended
                total_ns += int((task / "schedstat").read_text().split()[0])
    except FileNotFoundError:
        return stat_cpu_seconds(pid)
    return total_ns / 1e9 if total_ns else stat_cpu_seconds(pid)


def stat_cpu_seconds(pid: int) -> float:
    """Return the user + system CPU time of process `pid` from /proc/<pid>/stat (ticks)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], pct: float) -> float:
    """Return the nearest-rank percentile (with 20-50 samples, p99 is the maximum)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


# --- receiver processes ----------------------------------------------------------------


@dataclass(frozen=True)
class ReceiverConfig:
    """One receiver process: its layer, its share of the members, how they are grouped."""

    layer: LayerConfig
    scheme: str
    first_member: int
    members: int


def receiver_main(config: ReceiverConfig, conn: Connection) -> None:
    """Entry point of a receiver process."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(_receiver(config, conn))


async def _receiver(config: ReceiverConfig, conn: Connection) -> None:
    layer = make_layer(config.layer)
    started = time.perf_counter()
    channels = [await layer.new_channel() for _ in range(config.members)]
    new_channel_s = time.perf_counter() - started
    started = time.perf_counter()
    for index, channel in enumerate(channels):
        group = CONV_GROUP if config.scheme == "conv" else user_group(config.first_member + index)
        await layer.group_add(group, channel)
    join_s = time.perf_counter() - started

    arrivals: dict[int, list[float]] = defaultdict(list)
    reported: set[int] = set()

    def report(n: int) -> None:
        times = arrivals.pop(n, [])
        reported.add(n)
        if times:
            conn.send(("arrived", n, min(times), statistics.median(times), max(times), len(times)))
        else:
            conn.send(("arrived", n, math.nan, math.nan, math.nan, 0))

    async def receive_loop(channel: str) -> None:
        while True:
            event = await layer.receive(channel)
            now = time.time()
            n = int(event["bench_n"])
            if n in reported:
                continue  # a late copy of a message already reported as incomplete
            times = arrivals[n]
            times.append(now)
            if len(times) == config.members:
                report(n)

    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
    loop.add_reader(conn.fileno(), lambda: commands.put_nowait(conn.recv()))
    tasks = [loop.create_task(receive_loop(channel)) for channel in channels]
    await asyncio.sleep(0.2)  # every task is now waiting in receive()
    conn.send(("ready", new_channel_s, join_s))
    try:
        while True:
            command = await commands.get()
            if command[0] == "stop":
                break
            if command[0] == "report" and command[1] not in reported:
                report(command[1])
    finally:
        loop.remove_reader(conn.fileno())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await layer.flush()
        conn.send(("stopped",))


# --- the sender (this process) ---------------------------------------------------------


@dataclass
class VariantResult:
    """The figures of one variant in one run (times in ms, CPU in ms per message)."""

    variant: str
    name: str
    messages: int
    new_channel_ms_per_process: list[float] = field(default_factory=list)
    join_ms_per_process: list[float] = field(default_factory=list)
    send_ms: list[float] = field(default_factory=list)
    first_ms: list[float] = field(default_factory=list)
    median_ms: list[float] = field(default_factory=list)
    last_ms: list[float] = field(default_factory=list)
    lost: int = 0
    redis_cpu_ms_per_msg: float = math.nan
    receivers_cpu_ms_per_msg: float = math.nan
    sender_cpu_ms_per_msg: float = math.nan
    # The same from /proc/<pid>/stat (10 ms ticks), as a cross-check.
    stat_cpu_ms_per_msg: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """Return the headline figures."""
        return {
            "join_ms": max(self.join_ms_per_process, default=math.nan),
            "new_channel_ms": max(self.new_channel_ms_per_process, default=math.nan),
            "send_p50": percentile(self.send_ms, 50),
            "send_p99": percentile(self.send_ms, 99),
            "median_p50": percentile(self.median_ms, 50),
            "last_p50": percentile(self.last_ms, 50),
            "last_p99": percentile(self.last_ms, 99),
            "redis_cpu": self.redis_cpu_ms_per_msg,
            "receivers_cpu": self.receivers_cpu_ms_per_msg,
            "sender_cpu": self.sender_cpu_ms_per_msg,
            "lost": float(self.lost),
            "messages": float(self.messages),
        }


class Receivers:
    """The receiver processes of one variant and their pipes."""

    def __init__(self, configs: Sequence[ReceiverConfig]) -> None:
        """Start one process per config."""
        context = mp.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[BaseProcess] = []
        for config in configs:
            parent, child = context.Pipe()
            proc = context.Process(target=receiver_main, args=(config, child), daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    @property
    def pids(self) -> list[int]:
        """Return the pids of the receiver processes."""
        return [p.pid for p in self.procs if p.pid is not None]

    def recv(self, conn: Connection, timeout: float) -> tuple[Any, ...]:
        """Return the next message from one receiver or raise TimeoutError."""
        if not conn.poll(timeout):
            raise TimeoutError("a receiver did not answer in time")
        message: tuple[Any, ...] = conn.recv()
        return message

    def stop(self) -> None:
        """Ask every receiver to stop; kill (by pid) any that does not within 10 s."""
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.send(("stop",))
        deadline = time.monotonic() + 10
        for proc in self.procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(5)
        for conn in self.conns:
            conn.close()


async def run_variant(
    variant: Variant,
    *,
    redis_url: str,
    redis_pid: int,
    run: int,
    members: int,
    processes: int,
    warmup: int,
    messages: int,
    capacity: int,
    timeout: float,
    gap: float,
    stop_at: float,
) -> VariantResult:
    """Measure one variant; return its figures.

    Stops early (after at least one measured message) once `time.monotonic()` passes
    `stop_at`, so that a slow variant on a loaded machine cannot overrun the run's budget;
    `messages` in the result is the number actually measured.
    """
    layer_config = LayerConfig(
        backend=variant.backend,
        redis_url=redis_url,
        prefix=f"bench{run}{variant.key}",
        capacity=capacity,
    )
    share = members // processes
    configs = [
        ReceiverConfig(layer_config, variant.scheme, first_member=i * share, members=share)
        for i in range(processes)
    ]
    result = VariantResult(variant.key, variant.name, messages)
    receivers = Receivers(configs)
    try:
        for conn in receivers.conns:
            message = receivers.recv(conn, 120)
            assert message[0] == "ready", message
            result.new_channel_ms_per_process.append(message[1] * 1000)
            result.join_ms_per_process.append(message[2] * 1000)
        logger.info(
            "%s: %d channels in %d processes joined (%s ms per process)",
            variant.name,
            share * processes,
            processes,
            ", ".join(f"{ms:.0f}" for ms in result.join_ms_per_process),
        )
        layer = make_layer(layer_config)
        groups = (
            [CONV_GROUP]
            if variant.scheme == "conv"
            else [user_group(m) for m in range(share * processes)]
        )
        cpu_start: dict[str, float] = {}
        for n in range(warmup + messages):
            if n == warmup:
                cpu_start = _cpu_snapshot(redis_pid, receivers.pids)
            sent_at = time.time()
            event = sample_event(n, sent_at)
            started = time.perf_counter()
            for group in groups:
                await layer.group_send(group, event)
            send_s = time.perf_counter() - started
            arrived = await asyncio.to_thread(_collect, receivers, n, timeout)
            count = sum(a[5] for a in arrived)
            if n >= warmup:
                result.send_ms.append(send_s * 1000)
                result.lost += share * processes - count
                if count:
                    result.first_ms.append((min(a[2] for a in arrived if a[5]) - sent_at) * 1000)
                    result.median_ms.append(
                        (statistics.median(a[3] for a in arrived if a[5]) - sent_at) * 1000
                    )
                    result.last_ms.append((max(a[4] for a in arrived if a[5]) - sent_at) * 1000)
                if (n - warmup + 1) % 10 == 0 or n == warmup + messages - 1:
                    logger.info(
                        "%s: %d/%d messages, last send %.1f ms, last arrival %.1f ms",
                        variant.name,
                        n - warmup + 1,
                        messages,
                        send_s * 1000,
                        result.last_ms[-1] if result.last_ms else math.nan,
                    )
            if n >= warmup and time.monotonic() >= stop_at and n + 1 < warmup + messages:
                logger.warning(
                    "%s: time budget used up after %d of %d messages",
                    variant.name,
                    n - warmup + 1,
                    messages,
                )
                break
            await asyncio.sleep(gap)
        cpu_end = _cpu_snapshot(redis_pid, receivers.pids)
        with contextlib.suppress(Exception):
            await layer.flush()
    finally:
        receivers.stop()
    messages = result.messages = len(result.send_ms)
    result.redis_cpu_ms_per_msg = (cpu_end["redis"] - cpu_start["redis"]) * 1000 / messages
    result.receivers_cpu_ms_per_msg = (
        (cpu_end["receivers"] - cpu_start["receivers"]) * 1000 / messages
    )
    result.sender_cpu_ms_per_msg = (cpu_end["sender"] - cpu_start["sender"]) * 1000 / messages
    result.stat_cpu_ms_per_msg = {
        name: (cpu_end[f"{name}_stat"] - cpu_start[f"{name}_stat"]) * 1000 / messages
        for name in ("redis", "receivers", "sender")
    }
    return result


def _cpu_snapshot(redis_pid: int, receiver_pids: Sequence[int]) -> dict[str, float]:
    return {
        "redis": cpu_seconds(redis_pid),
        "receivers": sum(cpu_seconds(pid) for pid in receiver_pids),
        "sender": cpu_seconds(os.getpid()),
        "redis_stat": stat_cpu_seconds(redis_pid),
        "receivers_stat": sum(stat_cpu_seconds(pid) for pid in receiver_pids),
        "sender_stat": stat_cpu_seconds(os.getpid()),
    }


def _collect(receivers: Receivers, n: int, timeout: float) -> list[tuple[Any, ...]]:
    """Wait for every receiver's report of message `n`; ask for a partial one at the timeout."""
    deadline = time.monotonic() + timeout
    reports: list[tuple[Any, ...]] = []
    for conn in receivers.conns:
        if not conn.poll(max(0.0, deadline - time.monotonic())):
            conn.send(("report", n))  # answered at once with what has arrived so far
        while True:
            message = receivers.recv(conn, 10.0)
            if message[0] == "arrived" and message[1] == n:
                reports.append(message)
                break
    return reports


# --- runs and output -------------------------------------------------------------------


COLUMNS: list[tuple[str, str, Callable[[float], str]]] = [
    ("new_channel_ms", "new_channel (ms)", lambda v: f"{v:.0f}"),
    ("join_ms", "group_add (ms)", lambda v: f"{v:.0f}"),
    ("send_p50", "send p50", lambda v: f"{v:.2f}"),
    ("send_p99", "send p99", lambda v: f"{v:.2f}"),
    ("median_p50", "median ch p50", lambda v: f"{v:.1f}"),
    ("last_p50", "last ch p50", lambda v: f"{v:.1f}"),
    ("last_p99", "last ch p99", lambda v: f"{v:.1f}"),
    ("redis_cpu", "Redis CPU ms/msg", lambda v: f"{v:.1f}"),
    ("receivers_cpu", "receivers CPU ms/msg", lambda v: f"{v:.1f}"),
    ("sender_cpu", "sender CPU ms/msg", lambda v: f"{v:.1f}"),
    ("lost", "lost", lambda v: f"{v:.0f}"),
    ("messages", "msgs", lambda v: f"{v:.0f}"),
]


def table(rows: dict[str, dict[str, float]], spread: dict[str, dict[str, list[float]]]) -> str:
    """Render the summary as a Markdown table (with min-max over runs when there are several)."""
    header = "| variant | " + " | ".join(title for _, title, _ in COLUMNS) + " |"
    lines = [header, "|---" * (len(COLUMNS) + 1) + "|"]
    for name, figures in rows.items():
        cells = []
        for key, _, fmt in COLUMNS:
            cell = fmt(figures[key])
            values = spread.get(name, {}).get(key, [])
            if len(values) > 1 and key not in ("lost", "messages"):
                cell += f" ({fmt(min(values))}-{fmt(max(values))})"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def code_version() -> dict[str, Any]:
    """Return the commit the work tree is at and how many files differ from it."""
    git = shutil.which("git")
    if git is None:
        return {}
    root = Path(__file__).resolve().parent.parent

    def run(*args: str) -> str:
        result = subprocess.run(  # noqa: S603 - git, our own arguments
            [git, *args], cwd=root, capture_output=True, text=True, timeout=10, check=False
        )
        return result.stdout.strip()

    return {
        "commit": run("rev-parse", "--short", "HEAD"),
        "changed_files": len([line for line in run("status", "--porcelain").splitlines() if line]),
    }


def machine() -> dict[str, Any]:
    """Return what the machine is and how loaded it was."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    """Run every requested variant `args.runs` times against a private redis-server."""
    keys = [k.strip() for k in args.variants.split(",") if k.strip()]
    unknown = [k for k in keys if k not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {sorted(VARIANTS)}")
    started = time.monotonic()
    code_before = code_version()
    load_before = os.getloadavg()
    runs: list[list[VariantResult]] = []
    with RedisServer() as server:
        with redis.Redis.from_url(server.url) as client:
            redis_pid = int(client.info("server")["process_id"])
            redis_version = str(client.info("server")["redis_version"])
        logger.info("redis-server %s pid %d on %s", redis_version, redis_pid, server.url)
        deadline = started + args.max_seconds - 10  # time left to stop and write
        slots = args.runs * len(keys)
        for run in range(1, args.runs + 1):
            results = []
            for key in keys:
                logger.info("run %d/%d: variant %s (%s)", run, args.runs, key, VARIANTS[key].name)
                # An equal share of the time left, or all of it but a reserve for the
                # variants still to come, whichever is more: the slow variant (b) can use
                # what the fast ones left over.
                left = deadline - time.monotonic()
                stop_at = time.monotonic() + max(left / slots, left - RESERVE_S * (slots - 1))
                slots -= 1
                results.append(
                    await run_variant(
                        VARIANTS[key],
                        redis_url=server.url,
                        redis_pid=redis_pid,
                        run=run,
                        members=args.members,
                        processes=args.processes,
                        warmup=args.warmup,
                        messages=args.messages,
                        capacity=args.capacity,
                        timeout=args.timeout,
                        gap=args.gap,
                        stop_at=stop_at,
                    )
                )
                server.flushall()
            runs.append(results)
    names = [f"{VARIANTS[k].key} {VARIANTS[k].name}" for k in keys]
    per_run = [{n: r.summary() for n, r in zip(names, results, strict=True)} for results in runs]
    spread = {n: {c: [run[n][c] for run in per_run] for c, _, _ in COLUMNS} for n in names}
    summary = {
        n: {c: statistics.median(v) for c, v in figures.items()} for n, figures in spread.items()
    }
    return {
        "command": " ".join([Path(sys.executable).name, "-m", "bench.layers", *sys.argv[1:]]),
        "machine": {**machine(), "loadavg_before": load_before, "redis": redis_version},
        "code": {"at_start": code_before, "at_end": code_version()},
        "config": {k: v for k, v in vars(args).items() if k != "output"},
        "elapsed_s": round(time.monotonic() - started, 1),
        "runs": [[asdict(r) for r in results] for results in runs],
        "per_run_summary": per_run,
        "summary_median_of_runs": summary,
        "table": table(summary, spread),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.layers",
        description=(
            "Fan-out of one message to a group of --members channels spread over "
            "--processes receiver processes, per channel layer and group scheme "
            "(a core-conv, b core-user, c pubsub-conv, d pubsub-user)."
        ),
    )
    parser.add_argument("--variants", default="a,b,c,d", help="comma-separated (default a,b,c,d)")
    parser.add_argument("--members", type=int, default=1000, help="channels in all (1000)")
    parser.add_argument("--processes", type=int, default=2, help="receiver processes (2)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured messages first (3)")
    parser.add_argument("--messages", type=int, default=30, help="measured messages (30)")
    parser.add_argument("--runs", type=int, default=1, help="repeat all variants (1)")
    parser.add_argument(
        "--capacity", type=int, default=1000, help="RedisChannelLayer capacity (settings: 1000)"
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for one message (10)"
    )
    parser.add_argument("--gap", type=float, default=0.02, help="pause between messages (0.02 s)")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=170.0,
        help=(
            "time budget of the whole command (170), shared out over the variants and runs; "
            "a variant that uses up its share measures fewer messages (column msgs)"
        ),
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS_DIR / "layers.json", help="JSON results file"
    )
    args = parser.parse_args(argv)
    if args.messages < 1 or args.runs < 1 or args.processes < 1:
        parser.error("--messages, --runs and --processes must be at least 1")
    if args.members % args.processes:
        parser.error("--members must be a multiple of --processes")
    return args


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark; print the table; write the JSON."""
    args = parse_args(argv)
    # A SIGTERM (e.g. from `timeout`) unwinds like Ctrl-C, so the context managers stop
    # the redis-server and gateway this command started instead of orphaning them.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    # One line per dropped group_send ("over capacity") would flood the output; the
    # table counts the deliveries that never arrived instead.
    logging.getLogger("channels_redis").setLevel(logging.WARNING)
    report = asyncio.run(main_async(args))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    runs = f"median of {args.runs} runs (min-max)" if args.runs > 1 else "one run"
    print(
        f"\n{args.members} channels over {args.processes} receiver processes "
        f"(new_channel and group_add: all {args.members // args.processes} of one process, "
        f"the slower process), {args.messages} measured messages per variant; {runs}; "
        "times in ms"
    )
    print(report["table"])
    print(f"\nelapsed {report['elapsed_s']} s; JSON: {args.output}")


if __name__ == "__main__":
    main()
