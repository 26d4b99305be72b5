"""The `baselines` scenario: the same load as ours on servers that store nothing.

Three servers, each its own process on a free loopback port, started and stopped in
turn: the Channels tutorial chat with the in-memory layer, the same with the Redis layer
(database `REDIS_DB` of the deployment's Redis), both served by uvicorn with our
gateways' options, and a raw `websockets` relay. Each gets, as our scenarios give ours:

1. **Idle sockets** (`connections`' method): `baseline_idle_sockets` sockets (in rooms
   of 2) on the fresh process; its RSS growth per socket, read a pause after the last
   handshake.
2. **Direct chats** (`throughput`'s method): `direct_clients` clients in rooms of 2, both
   members sending round robin, open loop, ramped through `ramp_direct` in steps of
   `ramp_seconds` after a warm-up at 20 msg/s; the ramp stops at the first step whose
   p99 passes `RAMP_P99_LIMIT_MS` or that loses or fails anything. The figure is the
   highest passing step's deliveries per second.
3. **Groups**: the same clients in rooms of `group_size`, ramped through `ramp_group`;
   deliveries per second (each message to `group_size - 1` others).
4. **Fan-out** (`fanout`'s method): one room of `fanout_members`; one member sends
   `fanout_repeats` messages 0.3 s apart after a warm-up one; time to the last member.

Every message is `{"message": "<sender> <seq> <send time>"}`, so every receiver counts
what it got against what was sent (a layer that drops messages when overloaded shows
as loss, and a step waits at most 15 s for stragglers) and the latency from send to
receipt on one clock. The tutorial echoes a message to its sender too; that copy is
not a delivery. The clients run on this process's event loop with the `websockets`
library, with the options our reference client uses (no compression, no size cap),
and, as it does, orjson for the JSON of every frame.
Pauses and warm-ups last `baseline_pause_seconds`: 1 s, as ours, but in a smoke run.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.deploy import CpuMeter, process_cpu, rss_bytes
from bench.fleet import CONNECT_TIMEOUT, open_loop, settle, summary_ms
from bench.harness import (
    _LIVE,
    LOCALHOST,
    REPO_ROOT,
    HarnessError,
    Managed,
    _end,
    _read_log,
    _spawn,
    free_port,
    port_accepts,
    redis_db_url,
)
from bench.scenarios import RAMP_P99_LIMIT_MS, Context, Result, ramp

# The Redis layer's database on the deployment's Redis (0 is our layer's, 1 the broker's).
REDIS_DB = 7
# Environment a baseline server inherits from this process; nothing of our settings.
_INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "VIRTUAL_ENV")


@dataclass(frozen=True)
class Baseline:
    """One baseline server: its key in the results, its label, what runs it."""

    name: str
    label: str
    layer: str | None  # the tutorial's channel layer (memory, redis); None for the relay


BASELINES = (
    Baseline("tutorial_memory", "Channels tutorial, in-memory layer", "memory"),
    Baseline("tutorial_redis", "Channels tutorial, Redis layer", "redis"),
    Baseline("relay", "websockets relay", None),
)


class BaselineServer(Managed):
    """One baseline server process on a free port of 127.0.0.1."""

    def __init__(self, baseline: Baseline, log_dir: Path, redis_url: str) -> None:
        """Prepare `baseline`; the Redis layer uses database REDIS_DB of `redis_url`."""
        self.baseline = baseline
        self.port = free_port()
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"baseline-{baseline.name}.log"
        self.env = {name: os.environ[name] for name in _INHERITED_ENV if name in os.environ}
        self.env["PYTHONUNBUFFERED"] = "1"
        if baseline.layer is not None:
            self.env["BASELINE_LAYER"] = baseline.layer
            self.env["BASELINE_REDIS_URL"] = redis_db_url(redis_url, REDIS_DB)
        self._proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """Return the server's command line.

        The tutorial runs on uvicorn's default WebSocket implementation (`websockets`,
        the legacy server), as the tutorial has it, with our gateways' other options.
        """
        if self.baseline.layer is None:
            return [sys.executable, "-m", "bench.baselines.relay", "--port", str(self.port)]
        return [
            sys.executable, "-m", "uvicorn", "bench.baselines.tutorial:application",
            "--host", LOCALHOST, "--port", str(self.port), "--http", "h11", "--no-proxy-headers",
            "--ws", "websockets", "--ws-max-size", "1310720", "--ws-ping-interval", "86400",
            "--no-access-log", "--lifespan", "off", "--log-level", "warning",
        ]  # fmt: skip

    def url(self, room: str) -> str:
        """Return the WebSocket URL of `room` (letters, digits and underscores)."""
        if self.baseline.layer is None:
            return f"ws://{LOCALHOST}:{self.port}/{room}"
        return f"ws://{LOCALHOST}:{self.port}/ws/chat/{room}/"

    @property
    def pid(self) -> int:
        """Return the pid of the running process."""
        if self._proc is None or self._proc.poll() is not None:
            raise HarnessError(f"{self.baseline.name} is not running")
        return self._proc.pid

    def start(self, timeout: float = 30.0) -> None:
        """Start the process and wait until it accepts connections (uvicorn loads first)."""
        self._proc = _spawn(self.command(), log=self.log_path, cwd=REPO_ROOT, env=self.env)
        _LIVE[id(self)] = self
        deadline = time.monotonic() + timeout
        while not port_accepts(self.port, timeout=0.2):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise HarnessError(
                    f"{self.baseline.name} did not serve on port {self.port} (exit status "
                    f"{self._proc.poll()}):\n{_read_log(self.log_path)[-3000:]}"
                )
            time.sleep(0.05)

    def rss(self) -> int:
        """Return the process's resident memory (VmRSS)."""
        return rss_bytes(self.pid)

    def cpu_seconds(self) -> float:
        """Return the CPU the process has used (0.0 once it is gone)."""
        return process_cpu(self._proc.pid) if self._proc is not None else 0.0

    def close(self) -> None:
        """SIGTERM the process (SIGKILL after 10 s) and reap it."""
        if self._proc is not None:
            _end(self._proc, signal.SIGTERM, timeout=10)
        _LIVE.pop(id(self), None)


# --- the load side -------------------------------------------------------------------------


@dataclass
class Tally:
    """The sends of the current step and their first receipt by each other member."""

    # (sender, seq) -> the other members of the sender's room
    sends: dict[tuple[int, int], Sequence[int]] = field(default_factory=dict)
    # (sender, seq, receiver) -> send-to-receipt seconds
    receipts: dict[tuple[int, int, int], float] = field(default_factory=dict)
    last_receipt: float = math.nan

    def clear(self) -> None:
        """Forget the last step (late receipts of its messages are ignored from now)."""
        self.sends.clear()
        self.receipts.clear()
        self.last_receipt = math.nan

    @property
    def expected(self) -> int:
        """Return how many deliveries the step's sends call for."""
        return sum(len(others) for others in self.sends.values())

    def take(self, receiver: int, text: str, at: float) -> None:
        """Count one frame `receiver` got at `at` (its own echo and strangers aside)."""
        sender, seq, sent_at = orjson.loads(text)["message"].split(" ")
        key = (int(sender), int(seq))
        if key[0] != receiver and key in self.sends:
            self.receipts.setdefault((*key, receiver), at - float(sent_at))
            self.last_receipt = at

    async def drained(self, quiet: float = 0.5, limit: float = 15.0) -> None:
        """Wait until every delivery arrived, or none did for `quiet` s (at most `limit`)."""
        deadline = time.monotonic() + limit
        count, changed = -1, time.monotonic()
        expected = self.expected
        while len(self.receipts) < expected and time.monotonic() < deadline:
            if len(self.receipts) != count:
                count, changed = len(self.receipts), time.monotonic()
            elif time.monotonic() - changed > quiet:
                return
            await asyncio.sleep(0.01)


class Member:
    """One client socket: its id, its room and the other members of the room."""

    def __init__(self, ident: int, room: str, ws: ClientConnection) -> None:
        """Wrap a connected socket."""
        self.ident = ident
        self.room = room
        self.ws = ws
        self.others: Sequence[int] = ()
        self.seqs = itertools.count()
        self.reader: asyncio.Task[None] | None = None

    async def send(self, tally: Tally) -> None:
        """Send the next message of this member; a failed send expects nothing."""
        key = (self.ident, next(self.seqs))
        tally.sends[key] = self.others
        text = orjson.dumps({"message": f"{key[0]} {key[1]} {time.monotonic()!r}"})
        try:
            await self.ws.send(text, text=True)
        except ConnectionClosed:
            tally.sends.pop(key, None)
            raise

    async def read(self, tally: Tally) -> None:
        """Hand every frame to `tally` until the socket closes."""
        with contextlib.suppress(ConnectionClosed):
            async for frame in self.ws:
                tally.take(self.ident, str(frame), time.monotonic())


async def _open(server: BaselineServer, rooms: Sequence[str], concurrency: int) -> list[Member]:
    """Connect one member per entry of `rooms` (`concurrency` handshakes at once)."""
    slots = asyncio.Semaphore(concurrency)

    async def one(ident: int, room: str) -> Member:
        async with slots:
            ws = await connect(
                server.url(room),
                compression=None,
                max_size=None,
                proxy=None,
                open_timeout=CONNECT_TIMEOUT,
            )
            return Member(ident, room, ws)

    opened = await asyncio.gather(
        *(one(n, room) for n, room in enumerate(rooms)), return_exceptions=True
    )
    members = [m for m in opened if isinstance(m, Member)]
    failed = [repr(m) for m in opened if not isinstance(m, Member)]
    if failed:
        await _close(members)
        raise RuntimeError(f"{len(failed)} sockets failed to connect: {failed[:3]}")
    return members


async def _close(members: Sequence[Member], concurrency: int = 500) -> None:
    """Close every socket (15 s each at most) and wait for its reader."""
    slots = asyncio.Semaphore(concurrency)

    async def one(member: Member) -> None:
        async with slots:
            with contextlib.suppress(TimeoutError, OSError):
                async with asyncio.timeout(15):
                    await member.ws.close()
        if member.reader is not None:
            member.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await member.reader

    await asyncio.gather(*(one(m) for m in members))


def _rooms(count: int, size: int, tag: str) -> list[str]:
    """Return the room of each of `count` members, `size` to a room."""
    return [f"{tag}{n // size}" for n in range(count)]


async def _fleet(
    server: BaselineServer, rooms: Sequence[str], tally: Tally, concurrency: int
) -> list[Member]:
    """Connect members to `rooms`, tell each its room's others, start their readers."""
    members = await _open(server, rooms, concurrency)
    by_room: dict[str, list[int]] = {}
    for member in members:
        by_room.setdefault(member.room, []).append(member.ident)
    for member in members:
        member.others = [n for n in by_room[member.room] if n != member.ident]
        member.reader = asyncio.create_task(member.read(tally))
    return members


async def _offer(
    members: Sequence[Member], tally: Tally, rate: float, duration: float
) -> list[asyncio.Task[Any]]:
    """Start sends at `rate` per second for `duration` s, round robin, open loop."""
    return await open_loop(rate, duration, lambda n: members[n % len(members)].send(tally))


async def _step(
    meter: CpuMeter, members: Sequence[Member], tally: Tally, rate: float, duration: float
) -> Result:
    """Offer `rate` msg/s for `duration` s, drain, and return what arrived and how fast."""
    tally.clear()
    before = meter.sample()
    started = time.monotonic()
    tasks = await _offer(members, tally, rate, duration)
    after = meter.sample()
    failed = await settle(tasks, timeout=35.0)
    await tally.drained()
    expected, delivered = tally.expected, len(tally.receipts)
    span = tally.last_receipt - started
    return {
        "offered_msgs_per_s": rate,
        "seconds": duration,
        "sends": len(tasks),
        "sends_ok": len(tasks) - failed,
        "sends_failed": failed,
        "deliveries_expected": expected,
        "delivered": delivered,
        "lost": expected - delivered,
        "deliveries_per_s": round(delivered / span, 1) if span > 0 else math.nan,
        "offered_deliveries_per_s": round(expected / duration, 1),
        "latency_ms": summary_ms(list(tally.receipts.values())),
        "cpu": CpuMeter.split(before, after),
    }


async def _ramp(
    ctx: Context,
    meter: CpuMeter,
    members: Sequence[Member],
    tally: Tally,
    rates: Sequence[int],
    label: str,
) -> list[Result]:
    """Ramp through `rates` until a step's p99 passes the limit or it loses anything."""
    pause = ctx.sizes.baseline_pause_seconds
    await _step(meter, members, tally, 20, pause)  # warm-up

    def run(rate: int) -> Awaitable[Result]:
        return _step(meter, members, tally, rate, ctx.sizes.ramp_seconds)

    return await ramp(ctx, rates, label, run, pause)


def _best(steps: Sequence[Result]) -> Result | None:
    passing = [s for s in steps if s.get("passed")]
    return max(passing, key=lambda s: s["deliveries_per_s"]) if passing else None


async def _idle(ctx: Context, server: BaselineServer, label: str) -> Result:
    """Hold `baseline_idle_sockets` sockets on the fresh process: its RSS per socket."""
    count, pause = ctx.sizes.baseline_idle_sockets, ctx.sizes.baseline_pause_seconds
    await asyncio.sleep(pause)
    before = server.rss()
    started = time.monotonic()
    members = await _open(server, _rooms(count, 2, "idle"), ctx.sizes.connect_concurrency)
    try:
        seconds = time.monotonic() - started
        await asyncio.sleep(pause)
        after = server.rss()
    finally:
        await _close(members)
    result = {
        "sockets": count,
        "connected": len(members),
        "connect_per_s": round(len(members) / seconds, 1),
        "rss_before_mb": round(before / 2**20, 1),
        "rss_after_mb": round(after / 2**20, 1),
        "rss_per_socket_kb": round((after - before) / count / 1024, 1),
    }
    ctx.progress(f"  {label}: {count} idle sockets -> {result['rss_per_socket_kb']} KB each")
    return result


async def _fanout(ctx: Context, server: BaselineServer, meter: CpuMeter) -> Result:
    """One room of `fanout_members`: time until the last member has each message."""
    sizes = ctx.sizes
    tally = Tally()
    members = await _fleet(
        server,
        _rooms(sizes.fanout_members, sizes.fanout_members, "fanout"),
        tally,
        sizes.connect_concurrency,
    )
    sender, others = members[0], sizes.fanout_members - 1
    repeats = []
    before = meter.sample()
    try:
        for n in range(sizes.fanout_repeats + 1):
            tally.clear()
            await sender.send(tally)
            deadline = time.monotonic() + 30
            while len(tally.receipts) < others and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            times = sorted(tally.receipts.values())
            if n > 0:  # the first is a warm-up
                repeats.append(
                    {
                        "received": len(times),
                        "last_ms": round(1000 * times[-1], 2) if times else math.nan,
                        "median_member_ms": round(1000 * times[len(times) // 2], 2)
                        if times
                        else math.nan,
                    }
                )
            await asyncio.sleep(0.3)
        after = meter.sample()
    finally:
        await _close(members)
    return {
        "members": sizes.fanout_members,
        "last_member_ms": summary_ms([r["last_ms"] / 1000 for r in repeats]),
        "incomplete_repeats": sum(1 for r in repeats if r["received"] < others),
        "repeats": repeats,
        "cpu": CpuMeter.split(before, after),
    }


async def _measure(ctx: Context, server: BaselineServer, meter: CpuMeter) -> Result:
    """Idle sockets, the direct and group ramps, fan-out: everything of one server."""
    sizes = ctx.sizes
    label = server.baseline.name
    idle = await _idle(ctx, server, label)
    await asyncio.sleep(sizes.baseline_pause_seconds)
    ramps: dict[str, list[Result]] = {}
    for kind, size, rates in (
        ("direct", 2, sizes.ramp_direct),
        ("groups", sizes.group_size, sizes.ramp_group),
    ):
        tally = Tally()
        rooms = _rooms(sizes.direct_clients, size, kind)
        members = await _fleet(server, rooms, tally, sizes.connect_concurrency)
        try:
            ramps[kind] = await _ramp(ctx, meter, members, tally, rates, f"{label} {kind}")
        finally:
            await _close(members)
    fanout = await _fanout(ctx, server, meter)
    ctx.progress(
        f"  {label}: fan-out to {fanout['members']}, last member p50 "
        f"{fanout['last_member_ms'].get('p50')} ms, p99 {fanout['last_member_ms'].get('p99')} ms"
    )
    best_direct, best_group = _best(ramps["direct"]), _best(ramps["groups"])
    return {
        "label": server.baseline.label,
        "direct_max_msgs_per_s": best_direct["deliveries_per_s"] if best_direct else 0.0,
        # False when the ramp's top step passed too: the server was not saturated.
        "direct_stopped": not ramps["direct"][-1]["passed"],
        "groups_max_deliveries_per_s": best_group["deliveries_per_s"] if best_group else 0.0,
        "groups_stopped": not ramps["groups"][-1]["passed"],
        "rss_per_socket_kb": idle["rss_per_socket_kb"],
        "idle": idle,
        "fanout": {k: v for k, v in fanout.items() if k != "cpu"},
        "direct_steps": ramps["direct"],
        "group_steps": ramps["groups"],
        "cpu": {
            "direct, best step": best_direct["cpu"] if best_direct else {},
            "direct, last step": ramps["direct"][-1]["cpu"],
            "groups, best step": best_group["cpu"] if best_group else {},
            "fan-out": fanout["cpu"],
        },
    }


def baselines(ctx: Context) -> Result:
    """Measure each baseline server in turn, each on a process of its own."""
    figures: dict[str, Result] = {}
    cpu: dict[str, dict[str, float]] = {}
    for baseline in BASELINES:
        ctx.progress(f"  starting {baseline.label}")
        with BaselineServer(
            baseline, ctx.deployment.workdir / "baselines", ctx.deployment.redis.url
        ) as server:
            # The deployment's parts (all idle but Redis under the Redis layer), and the
            # baseline server as a part of its own.
            meter = CpuMeter({**ctx.meter.parts, "baseline": server.cpu_seconds})
            result = asyncio.run(_measure(ctx, server, meter))
        cpu |= {f"{baseline.name}, {phase}": split for phase, split in result.pop("cpu").items()}
        figures[baseline.name] = result
    sizes = ctx.sizes
    return {
        "figures": figures,
        "targets": [],
        "cpu": cpu,
        "params": {
            "clients": sizes.direct_clients,
            "group_size": sizes.group_size,
            "step_seconds": sizes.ramp_seconds,
            "idle_sockets": sizes.baseline_idle_sockets,
            "fanout_members": sizes.fanout_members,
            "stop_rule": f"p99 > {RAMP_P99_LIMIT_MS:g} ms, or any loss or failed send",
            "redis_layer_db": REDIS_DB,
        },
    }
