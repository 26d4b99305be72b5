"""The scenarios of `python -m bench`: each provisions, drives clients, and returns figures.

Every scenario returns a dict with `figures` (what it measured), `targets` (the issue's
goals, each with the measured value and whether it was met), `cpu` (the CPU split of the
deployment's parts while it ran, in % of one core) and `params` (its sizes). Latency is
always send to receipt: from the sender's `send()` call to the moment another member's
client has the message (live push, gap fetch or catch-up, whichever came first), on one
clock, since every client runs on this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import provision
from bench.deploy import (
    BenchDeployment,
    CpuMeter,
    command_delta,
    process_cpu,
    redis_command_calls,
    redis_cpu_seconds,
)
from bench.drain import Stalls
from bench.fleet import (
    Account,
    IdleWorkers,
    close_all,
    connect_all,
    deliveries,
    make_client,
    merge_connect_results,
    offer_load,
    settle,
    summary_ms,
)
from chatclient import ChatClient, History

Progress = Callable[[str], None]
Result = dict[str, Any]

# The ramp's stop rule (the issue's): p99 past this, or anything lost.
RAMP_P99_LIMIT_MS = 500.0


@dataclass(frozen=True)
class Sizes:
    """How big each scenario is; `SMOKE` is the test suite's, `FULL` is `make bench`'s."""

    latency_rates: tuple[int, ...] = (10, 100, 500)
    latency_seconds: float = 10.0
    latency_min_samples: int = 200
    direct_clients: int = 100
    # Up to 3,000 msg/s: the baselines that store nothing must saturate for the ratios.
    ramp_direct: tuple[int, ...] = (
        100,
        200,
        300,
        400,
        500,
        600,
        800,
        1000,
        1250,
        1500,
        2000,
        2500,
        3000,
    )
    ramp_group: tuple[int, ...] = (20, 40, 60, 80, 100, 130, 170, 220, 280, 340, 400, 500, 650)
    ramp_seconds: float = 5.0
    ramp_pause_seconds: float = 1.0  # between two steps of the ramp
    group_size: int = 10
    fanout_members: int = 1000
    fanout_repeats: int = 20
    connections: tuple[int, ...] = (10_000, 20_000)
    # baselines (bench/baselines/drive.py): idle sockets held by each baseline server, and
    # its pauses (between ramp steps, around the idle sockets) and warm-ups, as ours: 1 s
    baseline_idle_sockets: int = 5_000
    baseline_pause_seconds: float = 1.0
    connect_concurrency: int = 200
    hold_seconds: float = 30.0
    storm_clients: int = 2000
    catchup_messages: int = 10_000
    catchup_conversations: int = 50
    catchup_repeats: int = 3
    profile_rate: int = 200
    profile_seconds: float = 10.0
    # notifications (bench/notifications.py): offline recipients, one Web Push device each
    notify_senders: int = 50
    notify_recipients: int = 100
    # Latency runs: (msg/s, seconds, worker pool, concurrency, Celery app). `bench.workerapp`
    # is the product's app plus a wake-up timer for the threads pool (celery#6941).
    notify_latency_runs: tuple[tuple[int, float, str, int, str], ...] = (
        (100, 10.0, "threads", 16, "bench.workerapp"),
        (10, 12.0, "prefork", 2, "chatsite"),
    )
    # One worker against a backlog released at once: (pool, concurrency, app, due windows,
    # seconds to wait for them); these run first, the first with the worker as deployed.
    notify_pools: tuple[tuple[str, int, str, int, float], ...] = (
        ("prefork", 2, "chatsite", 300, 40.0),
        ("threads", 16, "chatsite", 150, 15.0),
        ("threads", 16, "bench.workerapp", 800, 40.0),
    )
    notify_ab_rate: int = 300
    notify_ab_seconds: float = 4.0
    notify_ab_repeats: int = 3
    # drain (bench/drain.py): a rolling restart of every gateway under these clients
    drain_clients: int = 5000
    drain_seconds: float = 20.0
    drain_rate: float = 100.0  # WS_DRAIN_RATE: reconnects per second a drain aims at
    # mobile (bench/mobile_push.py): pushes per platform and PUSH_CONCURRENCY, 50 ms answers
    mobile_pushes: int = 200
    mobile_concurrency: tuple[int, ...] = (1, 8)


FULL = Sizes()
SMOKE = Sizes(
    latency_rates=(20,),
    latency_seconds=1.0,
    latency_min_samples=10,
    direct_clients=10,
    ramp_direct=(40, 80),
    ramp_group=(8, 16),
    ramp_seconds=0.5,
    ramp_pause_seconds=0.2,
    group_size=5,
    fanout_members=20,
    fanout_repeats=3,
    connections=(60,),
    baseline_idle_sockets=50,
    baseline_pause_seconds=0.2,
    connect_concurrency=20,
    hold_seconds=2.0,
    storm_clients=20,
    catchup_messages=100,
    catchup_conversations=5,
    catchup_repeats=1,
    profile_rate=40,
    profile_seconds=1.0,
    notify_senders=5,
    notify_recipients=20,
    notify_latency_runs=((40, 1.0, "prefork", 2, "chatsite"),),
    notify_pools=(("threads", 16, "bench.workerapp", 40, 30.0),),
    notify_ab_rate=60,
    notify_ab_seconds=1.0,
    notify_ab_repeats=1,
    drain_clients=40,
    mobile_pushes=20,
    mobile_concurrency=(1, 4),
    drain_seconds=2.0,
)


def target(name: str, value: float, goal: float, unit: str, *, at_most: bool) -> dict[str, Any]:
    """Return a target record: `value` against `goal` (at most or at least)."""
    met = (value <= goal) if at_most else (value >= goal)
    if isinstance(value, float) and math.isnan(value):
        met = False
    return {
        "name": name,
        "value": value,
        "goal": f"{'<=' if at_most else '>='} {goal:g} {unit}",
        "met": met,
    }


@dataclass
class Context:
    """What every scenario gets: the deployment, the sizes, a progress printer."""

    deployment: BenchDeployment
    sizes: Sizes
    progress: Progress
    meter: CpuMeter
    out: Path
    _serial: int = field(default=0)

    def prefix(self, name: str) -> str:
        """Return a fresh username prefix for a scenario's users."""
        self._serial += 1
        return f"{name}{self._serial}u"

    @property
    def urls(self) -> list[str]:
        """Return every gateway URL."""
        return self.deployment.ws_urls

    def pinned(self, index: int) -> list[str]:
        """Return the one gateway URL client `index` uses (clients alternate gateways)."""
        return [self.urls[index % len(self.urls)]]


def _fleet(
    ctx: Context, accounts: Sequence[Account], tag: str, history: History, **kwargs: Any
) -> list[ChatClient]:
    return [
        make_client(a, ctx.pinned(i), name=f"{tag}{i}", history=history, **kwargs)
        for i, a in enumerate(accounts)
    ]


async def _drained(
    history: History,
    recipients: dict[int, list[str]],
    since: float,
    quiet: float = 0.5,
    limit: float = 15.0,
) -> None:
    """Wait until every delivery arrived, or none did for `quiet` s (at most `limit`).

    Run once the sends settled, so what they call for is known. Receipts are counted as
    they come, every 10 ms; `deliveries` matches them only once there are enough.
    """
    deadline = time.monotonic() + limit
    expected = deliveries(history, recipients, since=since).expected
    seen = received = 0
    changed = time.monotonic()
    while time.monotonic() < deadline:
        recvs = history.recvs
        if len(recvs) != seen:
            received += sum(1 for r in recvs[seen:] if r.via != "reply")
            seen, changed = len(recvs), time.monotonic()
            if received >= expected and (
                deliveries(history, recipients, since=since).delivered >= expected
            ):
                return
        elif time.monotonic() - changed > quiet:
            return
        await asyncio.sleep(0.01)


async def _step(
    ctx: Context,
    senders: Sequence[tuple[ChatClient, int]],
    recipients: dict[int, list[str]],
    history: History,
    rate: float,
    duration: float,
    tag: str,
) -> Result:
    """Offer `rate` msg/s for `duration` s, drain, and return what arrived and how fast."""
    history.sends.clear()
    history.recvs.clear()
    before = ctx.meter.sample()
    started = time.time()
    tasks = await offer_load(senders, rate, duration, tag=tag)
    after = ctx.meter.sample()
    failed = await settle(tasks, timeout=35.0)
    await _drained(history, recipients, started)
    got = deliveries(history, recipients, since=started)
    span = (got.last_receipt - started) if got.delivered else math.nan
    return {
        "offered_msgs_per_s": rate,
        "seconds": duration,
        "sends": len(tasks),
        "sends_ok": got.sends_ok,
        "sends_failed": failed,
        "deliveries_expected": got.expected,
        "delivered": got.delivered,
        "lost": got.lost,
        "deliveries_per_s": round(got.delivered / span, 1) if span and span > 0 else math.nan,
        "offered_deliveries_per_s": round(got.expected / duration, 1),
        "latency_ms": summary_ms(got.latencies),
        "cpu": CpuMeter.split(before, after),
        "_latencies": got.latencies,
    }


async def _direct_fleet(
    ctx: Context, accounts: Sequence[Account], conversations: Sequence[int], tag: str
) -> tuple[list[ChatClient], list[tuple[ChatClient, int]], dict[int, list[str]], History]:
    history = History()
    clients = _fleet(ctx, accounts, tag, history)
    connected = await connect_all(clients, concurrency=ctx.sizes.connect_concurrency)
    if connected["failed"]:
        raise RuntimeError(f"clients failed to connect: {connected['failures']}")
    senders = [(clients[i], conversations[i // 2]) for i in range(len(clients))]
    recipients = {
        c: [clients[2 * n].name, clients[2 * n + 1].name] for n, c in enumerate(conversations)
    }
    return clients, senders, recipients, history


# --- latency ------------------------------------------------------------------------------


def latency(ctx: Context) -> Result:
    """Direct chats at fixed offered rates: send to receipt by the other member's device."""
    sizes = ctx.sizes
    accounts = provision.make_accounts(ctx.prefix("lat"), sizes.direct_clients)
    conversations = provision.direct_pairs(accounts)

    async def drive() -> Result:
        clients, senders, recipients, history = await _direct_fleet(
            ctx, accounts, conversations, "lat"
        )
        steps = []
        try:
            # A short warm-up: the first sends of a process fill its caches and pools.
            await _step(ctx, senders, recipients, history, 20, 1.0, "warm-up")
            for rate in sizes.latency_rates:
                duration = max(sizes.latency_seconds, sizes.latency_min_samples / rate)
                ctx.progress(f"  latency: {rate} msg/s for {duration:.0f} s")
                step = await _step(ctx, senders, recipients, history, rate, duration, f"lat{rate}")
                ctx.progress(
                    f"  latency: {rate} msg/s -> p50 {step['latency_ms'].get('p50')} ms, "
                    f"p99 {step['latency_ms'].get('p99')} ms, lost {step['lost']}"
                )
                steps.append(step)
        finally:
            await close_all(clients)
        return {"steps": steps}

    result = asyncio.run(drive())
    targets = [
        target(
            f"direct latency at {s['offered_msgs_per_s']} msg/s, {q}",
            s["latency_ms"].get(q, math.nan),
            goal,
            "ms",
            at_most=True,
        )
        for s in result["steps"]
        if s["offered_msgs_per_s"] == 100
        for q, goal in (("p50", 5.0), ("p99", 15.0))
    ]
    return {
        "figures": {"steps": result["steps"]},
        "targets": targets,
        "cpu": {f"{s['offered_msgs_per_s']} msg/s": s["cpu"] for s in result["steps"]},
        "params": {"clients": sizes.direct_clients, "conversations": len(conversations)},
    }


# --- throughput ---------------------------------------------------------------------------


async def ramp(
    ctx: Context,
    rates: Sequence[int],
    label: str,
    run: Callable[[int], Awaitable[Result]],
    pause: float = 1.0,
) -> list[Result]:
    """Run `run(rate)` for each rate in turn, `pause` s apart, and print each step.

    The ramp stops after the first step whose p99 passes `RAMP_P99_LIMIT_MS` or that
    loses or fails anything; each step gets `passed`.
    """
    steps = []
    for n, rate in enumerate(rates):
        if n:
            await asyncio.sleep(pause)
        step = await run(rate)
        p99 = step["latency_ms"].get("p99", math.nan)
        passed = step["lost"] == 0 and step["sends_failed"] == 0 and p99 <= RAMP_P99_LIMIT_MS
        step["passed"] = passed
        steps.append(step)
        ctx.progress(
            f"  {label}: offered {rate} msg/s ({step['offered_deliveries_per_s']} deliveries/s)"
            f" -> {step['deliveries_per_s']} deliveries/s, p99 {p99} ms, lost {step['lost']}"
            f"{'' if passed else '  [stop]'}"
        )
        if not passed:
            break
    return steps


async def _ramp(
    ctx: Context,
    senders: Sequence[tuple[ChatClient, int]],
    recipients: dict[int, list[str]],
    history: History,
    rates: Sequence[int],
    label: str,
) -> list[Result]:
    await _step(ctx, senders, recipients, history, 20, 1.0, f"{label}-warm-up")

    def run(rate: int) -> Awaitable[Result]:
        return _step(ctx, senders, recipients, history, rate, ctx.sizes.ramp_seconds, label)

    return await ramp(ctx, rates, label, run, ctx.sizes.ramp_pause_seconds)


def _best(steps: Sequence[Result]) -> Result | None:
    passing = [s for s in steps if s.get("passed")]
    return max(passing, key=lambda s: s["deliveries_per_s"]) if passing else None


def throughput(ctx: Context) -> Result:
    """100 clients in direct chats, then in groups of 10: ramp until p99 > 500 ms or a loss."""
    sizes = ctx.sizes
    direct_accounts = provision.make_accounts(ctx.prefix("thd"), sizes.direct_clients)
    direct = provision.direct_pairs(direct_accounts)
    group_accounts = provision.make_accounts(ctx.prefix("thg"), sizes.direct_clients)
    group_ids = provision.groups(group_accounts, sizes.group_size, "bench")

    async def drive() -> Result:
        clients, senders, recipients, history = await _direct_fleet(
            ctx, direct_accounts, direct, "thd"
        )
        try:
            direct_steps = await _ramp(
                ctx, senders, recipients, history, sizes.ramp_direct, "direct"
            )
        finally:
            await close_all(clients)
        history = History()
        clients = _fleet(ctx, group_accounts, "thg", history)
        await connect_all(clients, concurrency=sizes.connect_concurrency)
        size = sizes.group_size
        senders = [(c, group_ids[i // size]) for i, c in enumerate(clients)]
        recipients = {
            g: [c.name for c in clients[n * size : (n + 1) * size]] for n, g in enumerate(group_ids)
        }
        try:
            group_steps = await _ramp(ctx, senders, recipients, history, sizes.ramp_group, "groups")
        finally:
            await close_all(clients)
        return {"direct": direct_steps, "groups": group_steps}

    steps = asyncio.run(drive())
    best_direct, best_group = _best(steps["direct"]), _best(steps["groups"])
    direct_rate = best_direct["deliveries_per_s"] if best_direct else 0.0
    group_rate = best_group["deliveries_per_s"] if best_group else 0.0
    return {
        "figures": {
            "direct_max_msgs_per_s": direct_rate,
            "groups_max_deliveries_per_s": group_rate,
            "direct_steps": steps["direct"],
            "group_steps": steps["groups"],
        },
        "targets": [
            target("direct chats, max sustained", direct_rate, 1500, "msg/s", at_most=False),
            target("groups of 10, max sustained", group_rate, 8000, "deliveries/s", at_most=False),
        ],
        "cpu": {
            "direct, best step": best_direct["cpu"] if best_direct else {},
            "groups, best step": best_group["cpu"] if best_group else {},
            "direct, last step": steps["direct"][-1]["cpu"],
            "groups, last step": steps["groups"][-1]["cpu"],
        },
        "params": {
            "clients": sizes.direct_clients,
            "group_size": sizes.group_size,
            "step_seconds": sizes.ramp_seconds,
            "stop_rule": f"p99 > {RAMP_P99_LIMIT_MS:g} ms, or any loss or failed send",
        },
    }


# --- fan-out ------------------------------------------------------------------------------


def fanout(ctx: Context) -> Result:
    """One message into a group of 1,000 online members over two gateways: time to the last."""
    sizes = ctx.sizes
    accounts = provision.make_accounts(ctx.prefix("fan"), sizes.fanout_members)
    (group,) = provision.groups(accounts, sizes.fanout_members, "fan-out")

    async def drive() -> Result:
        history = History()
        arrivals: dict[str, int] = {}
        everyone = asyncio.Event()  # set when every other member has the awaited message
        others = len(accounts) - 1
        awaited = {"cmid": ""}

        def on_message(message: dict[str, Any], via: str) -> None:
            cmid = message.get("client_msg_id")
            if cmid and via != "reply":
                arrivals[cmid] = arrivals.get(cmid, 0) + 1
                if cmid == awaited["cmid"] and arrivals[cmid] >= others:
                    everyone.set()

        clients = _fleet(ctx, accounts, "fan", history, on_message=on_message)
        ctx.progress(f"  fan-out: connecting {len(clients)} members")
        connected = await connect_all(
            clients, concurrency=sizes.connect_concurrency, progress=ctx.progress, label="members"
        )
        sender = clients[0]
        repeats: list[Result] = []
        # The members' state is long-lived: kept out of this process's full collections,
        # one of which (128 ms, measured) landed inside a repeat and made it the p99: the
        # load generator's pause, not the servers' (as in bench/drain.py).
        gc.collect()
        gc.freeze()
        # This process's own stalls (full collections, a late loop) delay every member's
        # arrival as the server's would: each repeat reports those that fell inside it.
        stalls, stop = Stalls(), asyncio.Event()
        watcher = asyncio.create_task(stalls.watch(stop, tick=0.01))
        before = ctx.meter.sample()
        try:
            for n in range(sizes.fanout_repeats + 1):
                gc_seen, lags_seen = len(stalls.full_gc), len(stalls.lags)
                cmid = str(uuid.uuid4())
                awaited["cmid"] = cmid
                everyone.clear()
                invoked = time.time()
                await sender.send(group, f"fan-out {n}", client_msg_id=cmid, timeout=30)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(everyone.wait(), 30)  # incomplete: counted below
                times = [
                    r.received_at - invoked
                    for r in history.recvs
                    if r.client_msg_id == cmid and r.via != "reply"
                ]
                history.recvs.clear()
                if n == 0:
                    continue  # warm-up
                repeats.append(
                    {
                        "received": len(times),
                        "last_ms": round(1000 * max(times), 2) if times else math.nan,
                        "median_member_ms": round(1000 * sorted(times)[len(times) // 2], 2)
                        if times
                        else math.nan,
                        "harness_full_gc_ms": round(1000 * sum(stalls.full_gc[gc_seen:]), 1),
                        "harness_loop_lag_max_ms": round(
                            1000 * max(stalls.lags[lags_seen:], default=0.0), 1
                        ),
                    }
                )
                await asyncio.sleep(0.3)
            after = ctx.meter.sample()
        finally:
            stop.set()
            await watcher
            gc.unfreeze()
            await close_all(clients)
        return {"repeats": repeats, "connect": connected, "cpu": CpuMeter.split(before, after)}

    result = asyncio.run(drive())
    lasts = [r["last_ms"] / 1000 for r in result["repeats"]]
    incomplete = sum(1 for r in result["repeats"] if r["received"] < sizes.fanout_members - 1)
    summary = summary_ms(lasts)
    return {
        "figures": {
            "last_member_ms": summary,
            "incomplete_repeats": incomplete,
            "repeats": result["repeats"],
            "connect": result["connect"],
        },
        "targets": [
            target(
                f"fan-out to {sizes.fanout_members}, last member p99",
                summary.get("p99", math.nan),
                150,
                "ms",
                at_most=True,
            )
        ],
        "cpu": {"repeats": result["cpu"]},
        "params": {"members": sizes.fanout_members, "repeats": sizes.fanout_repeats},
    }


# --- connections and presence cost ---------------------------------------------------------


def connections(ctx: Context) -> Result:
    """Idle authenticated sockets (10,000 and 20,000): RSS per socket, connect rate, presence."""
    sizes = ctx.sizes
    deployment = ctx.deployment
    biggest = max(sizes.connections)
    ctx.progress(f"  connections: creating {biggest} users")
    accounts = provision.make_accounts(ctx.prefix("idle"), biggest)
    steps: list[Result] = []
    presence: Result = {}
    for count in sizes.connections:
        # A fresh gateway process per step, so its RSS starts from the same baseline.
        assert deployment.gateways is not None
        for gateway in deployment.gateways.gateways:
            gateway.restart()
        time.sleep(1.0)
        rss_before = deployment.gateway_rss()
        ctx.progress(f"  connections: opening {count} sockets")
        before = ctx.meter.sample()
        started = time.monotonic()
        workers = IdleWorkers(
            ctx.urls,
            accounts[:count],
            concurrency=sizes.connect_concurrency,
            progress=ctx.progress,
        )
        readers = [lambda pid=pid: process_cpu(pid) for pid in workers.pids]
        for reader in readers:
            deployment.add_harness_cpu(reader)
        retired_before = deployment.retired_harness_cpu
        try:
            connect = merge_connect_results(
                workers.connected(timeout=600), time.monotonic() - started
            )
            connected_sample = ctx.meter.sample()
            connected_cpu = CpuMeter.split(before, connected_sample)
            connect_gateway_cpu = connected_sample.parts["gateways"] - before.parts["gateways"]
            ctx.progress(
                f"  connections: {connect['connected']}/{count} open in {connect['seconds']} s "
                f"({connect['per_second']}/s); holding {sizes.hold_seconds:.0f} s"
            )
            time.sleep(2.0)
            with deployment.redis_client() as client:
                calls_before = redis_command_calls(client)
                redis_cpu_before = redis_cpu_seconds(client)
            pongs_before = workers.stats()["pongs"]
            hold_before = ctx.meter.sample()
            time.sleep(sizes.hold_seconds)
            hold_after = ctx.meter.sample()
            stats = workers.stats()
            with deployment.redis_client() as client:
                calls = command_delta(calls_before, redis_command_calls(client))
                redis_cpu = redis_cpu_seconds(client) - redis_cpu_before
            rss_after = deployment.gateway_rss()
        finally:
            # Read the workers' CPU after they closed their sockets and before they exit.
            workers.close(before_exit=functools.partial(deployment.remove_harness_cpu, *readers))
            retired = deployment.retired_harness_cpu - retired_before
        heartbeats = stats["pongs"] - pongs_before
        gateway_cpu = hold_after.parts["gateways"] - hold_before.parts["gateways"]
        hold = hold_after.at - hold_before.at
        step = {
            "sockets": count,
            "open_after_hold": stats["open"],
            "connect": connect,
            "gateway_rss_before_mb": round(rss_before / 2**20, 1),
            "gateway_rss_after_mb": round(rss_after / 2**20, 1),
            "rss_per_socket_kb": round((rss_after - rss_before) / max(1, count) / 1024, 1),
            "hold_seconds": round(hold, 1),
            "heartbeats": heartbeats,
            "redis_commands": sum(calls.values()),
            "redis_commands_by_name": dict(list(calls.items())[:12]),
            "redis_commands_per_heartbeat": round(sum(calls.values()) / heartbeats, 2)
            if heartbeats
            else math.nan,
            "redis_cpu_us_per_heartbeat": round(1e6 * redis_cpu / heartbeats, 1)
            if heartbeats
            else math.nan,
            "gateway_cpu_us_per_heartbeat": round(1e6 * gateway_cpu / heartbeats, 1)
            if heartbeats
            else math.nan,
            "idle_gateway_cpu_pct": round(100 * gateway_cpu / hold, 1),
            "gateway_cpu_ms_per_connect": round(1000 * connect_gateway_cpu / max(1, count), 2),
            "cpu_connect": connected_cpu,
            "cpu_hold": CpuMeter.split(hold_before, hold_after),
            "harness_worker_cpu_s": round(retired, 1),
        }
        steps.append(step)
        ctx.progress(
            f"  connections: {count} sockets -> {step['rss_per_socket_kb']} KB each, "
            f"{step['heartbeats']} heartbeats in {step['hold_seconds']} s, "
            f"{step['redis_commands_per_heartbeat']} Redis commands each"
        )
        if count == min(sizes.connections, key=lambda c: abs(c - 10_000)):
            presence = {
                "users": count,
                "heartbeats": heartbeats,
                "heartbeats_per_s": round(heartbeats / hold, 1),
                "redis_commands_per_heartbeat": step["redis_commands_per_heartbeat"],
                "redis_commands_by_name": step["redis_commands_by_name"],
                "redis_cpu_us_per_heartbeat": step["redis_cpu_us_per_heartbeat"],
                "gateway_cpu_us_per_heartbeat": step["gateway_cpu_us_per_heartbeat"],
                "cpu": step["cpu_hold"],
            }
    largest = steps[-1]
    ten_thousand = min(steps, key=lambda s: abs(s["sockets"] - 10_000))
    return {
        "figures": {"steps": steps, "presence": presence},
        "targets": [
            target(
                f"{largest['sockets']} idle sockets, gateway RSS per socket",
                float(largest["rss_per_socket_kb"]),
                20,
                "KB",
                at_most=True,
            ),
            target(
                f"gateway CPU per connect ({ten_thousand['sockets']} sockets)",
                float(ten_thousand["gateway_cpu_ms_per_connect"]),
                1.5,
                "ms",
                at_most=True,
            ),
            target(
                f"idle gateway CPU at {ten_thousand['sockets']} sockets",
                float(ten_thousand["idle_gateway_cpu_pct"]),
                5,
                "% of a core",
                at_most=True,
            ),
        ],
        "cpu": {f"{s['sockets']} sockets, holding": s["cpu_hold"] for s in steps}
        | {f"{s['sockets']} sockets, connecting": s["cpu_connect"] for s in steps},
        "params": {
            "connections": list(sizes.connections),
            "hold_seconds": sizes.hold_seconds,
            "connect_concurrency": sizes.connect_concurrency,
        },
    }


# --- reconnect storm ----------------------------------------------------------------------


# Groups per announcer in the storm. A socket's frames are handled one at a time, so one
# announcer writing to all 200 groups measured its own 200 sends in a row on a saturated
# gateway (11-12 s), not the reconnect; ten write 20 each, as the groups' own members would.
STORM_GROUPS_PER_ANNOUNCER = 20


def storm(ctx: Context) -> Result:
    """2,000 clients in groups of 10 drop at once while messages arrive; reconnect and sync."""
    sizes = ctx.sizes
    accounts = provision.make_accounts(ctx.prefix("storm"), sizes.storm_clients)
    group_ids = provision.groups(accounts, sizes.group_size, "storm")
    announcers = provision.make_accounts(
        ctx.prefix("storma"), math.ceil(len(group_ids) / STORM_GROUPS_PER_ANNOUNCER)
    )
    writer_of = {g: n // STORM_GROUPS_PER_ANNOUNCER for n, g in enumerate(group_ids)}
    # One more member in every group, who stays online and writes while the others are away.
    for n, group in enumerate(group_ids):
        provision.add_to_conversations(
            announcers[writer_of[group]], [group], actor=accounts[n * sizes.group_size]
        )

    async def drive() -> Result:
        history = History()
        clients = _fleet(ctx, accounts, "storm", history)
        ctx.progress(f"  storm: connecting {len(clients)} clients")
        await connect_all(
            clients, concurrency=sizes.connect_concurrency, progress=ctx.progress, label="clients"
        )
        speakers = [
            make_client(a, ctx.pinned(n), name=f"announcer{n}", history=history)
            for n, a in enumerate(announcers)
        ]
        await asyncio.gather(*(s.connect() for s in speakers))
        conversations_of = {c.name: c.conversations for c in clients}
        # The clients' state is long-lived: kept out of this process's full collections,
        # which the reconnects' allocations otherwise set off again and again, walking
        # the whole fleet each time (the load generator's CPU, not the servers'; as in
        # `fanout`).
        gc.collect()
        gc.freeze()
        stalls, stop = Stalls(), asyncio.Event()
        watcher = asyncio.create_task(stalls.watch(stop, tick=0.01))
        try:
            before = ctx.meter.sample()
            started = time.monotonic()
            dropped = sum(1 for c in clients if c.drop())
            ctx.progress(f"  storm: dropped {dropped} connections; sending 1 message per group")
            # The sends run while the clients come back: reconnecting is timed on its own,
            # synced once the sends are done and every member holds what was stored.
            sends = asyncio.ensure_future(
                asyncio.gather(
                    *(
                        speakers[writer_of[g]].send(g, "while you were away", timeout=60)
                        for g in group_ids
                    ),
                    return_exceptions=True,
                )
            )
            failed_sends: list[str] = []
            wanted: dict[int, int] | None = None
            all_connected_at = sends_done_at = math.nan
            behind = len(clients)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if math.isnan(all_connected_at) and all(c.reconnect_durations for c in clients):
                    # Each client's own drop-to-ready time (its socket may look open for a
                    # moment after the drop; its `session.ready` after it is what counts).
                    all_connected_at = max(c.reconnect_durations[0] for c in clients)
                if wanted is None and sends.done():
                    sends_done_at = time.monotonic() - started
                    failed_sends = [repr(m) for m in sends.result() if isinstance(m, BaseException)]
                    # What every member must end with: the log as stored, whatever the
                    # replies said.
                    wanted = await asyncio.to_thread(provision.last_seqs, group_ids)
                if wanted is not None:
                    known = wanted
                    behind = sum(
                        1
                        for c in clients
                        if not c.connected
                        or any(c.cursor(g) < known.get(g, 0) for g in conversations_of[c.name])
                    )
                    if behind == 0:
                        break
                await asyncio.sleep(0.01)
            synced_at = time.monotonic() - started
            after = ctx.meter.sample()
            reconnects = [d for c in clients for d in c.reconnect_durations]
            if not sends.done():
                sends.cancel()
        finally:
            stop.set()
            await watcher
            gc.unfreeze()
            await close_all([*clients, *speakers])
        return {
            "dropped": dropped,
            "announcers": len(speakers),
            "announcer_sends_failed": len(failed_sends),
            "announcer_errors": failed_sends[:5],
            "behind_at_end": behind,
            "all_connected_s": round(all_connected_at, 3),
            "announcer_sends_s": round(sends_done_at, 3),
            "all_synced_s": round(synced_at, 3),
            "reconnect_ms": summary_ms(reconnects),
            "messages_missed_per_client": 1,
            "harness_full_gc_ms": round(1000 * sum(stalls.full_gc), 1),
            "harness_loop_lag_max_ms": round(1000 * max(stalls.lags, default=0.0), 1),
            "cpu": CpuMeter.split(before, after),
        }

    result = asyncio.run(drive())
    ctx.progress(
        f"  storm: all reconnected in {result['all_connected_s']} s, the announcers' sends "
        f"done in {result['announcer_sends_s']} s, all synced in {result['all_synced_s']} s"
    )
    return {
        "figures": {k: v for k, v in result.items() if k != "cpu"},
        "targets": [
            target(
                f"reconnect storm of {sizes.storm_clients}, fully synced",
                result["all_synced_s"] if result["behind_at_end"] == 0 else math.nan,
                4,
                "s",
                at_most=True,
            )
        ],
        "cpu": {"storm": result["cpu"]},
        "params": {"clients": sizes.storm_clients, "group_size": sizes.group_size},
    }


# --- catch-up -----------------------------------------------------------------------------


class _CursorWatch:
    """Set `done` once a client's cursors reach `wanted` in every conversation."""

    def __init__(self, wanted: dict[int, int]) -> None:
        self.wanted = wanted
        self.pending = set(wanted)
        self.done = asyncio.Event()
        self.client: ChatClient | None = None

    def seen(self, message: dict[str, Any], via: str) -> None:
        """Take one applied message (the client's `on_message`)."""
        conversation = message.get("conversation")
        if self.client is None or conversation not in self.pending:
            return
        if self.client.cursor(conversation) >= self.wanted[conversation]:
            self.pending.discard(conversation)
            if not self.pending:
                self.done.set()


def catchup(ctx: Context) -> Result:
    """Sync a device that was offline while 10,000 messages arrived in 50 conversations."""
    sizes = ctx.sizes
    (reader,) = provision.make_accounts(ctx.prefix("cur"), 1)
    senders = provision.make_accounts(ctx.prefix("cus"), sizes.catchup_conversations)
    pairs: list[Account] = []
    for sender in senders:
        pairs += [sender, reader]
    conversations = provision.direct_pairs(pairs)
    per_conversation = sizes.catchup_messages // sizes.catchup_conversations

    async def drive() -> Result:
        history = History()
        clients = _fleet(ctx, senders, "cus", history)
        await connect_all(clients, concurrency=sizes.connect_concurrency)
        ctx.progress(
            f"  catch-up: {len(clients)} senders write {per_conversation * len(clients)} "
            "messages while the device is offline"
        )
        loaded = time.monotonic()

        async def write(client: ChatClient, conversation: int) -> None:
            window = asyncio.Semaphore(8)

            async def one(n: int) -> None:
                async with window:
                    await client.send(conversation, f"catch-up {n}", timeout=60)

            await asyncio.gather(*(one(n) for n in range(per_conversation)))

        await asyncio.gather(
            *(write(c, conv) for c, conv in zip(clients, conversations, strict=True))
        )
        written_in = time.monotonic() - loaded
        await close_all(clients)
        wanted = await asyncio.to_thread(provision.last_seqs, conversations)
        runs = []
        for n in range(sizes.catchup_repeats):
            watch = _CursorWatch(wanted)
            device = make_client(
                reader, ctx.urls, name=f"reader{n}", history=History(), on_message=watch.seen
            )
            watch.client = device
            before = ctx.meter.sample()
            started = time.monotonic()
            await device.connect()
            ready = time.monotonic() - started
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(watch.done.wait(), 120)  # incomplete: `complete` says so
            elapsed = time.monotonic() - started
            after = ctx.meter.sample()
            applied = sum(len(device.view(c)) for c in conversations)
            await device.close()
            runs.append(
                {
                    "seconds": round(elapsed, 3),
                    "session_ready_s": round(ready, 3),
                    "messages_applied": applied,
                    "complete": all(device.cursor(c) >= wanted[c] for c in conversations),
                    "cpu": CpuMeter.split(before, after),
                }
            )
            ctx.progress(f"  catch-up run {n + 1}: {applied} messages in {elapsed:.2f} s")
        return {"runs": runs, "written_in_s": round(written_in, 1)}

    result = asyncio.run(drive())
    times = sorted(r["seconds"] for r in result["runs"])
    median = times[len(times) // 2]
    complete = all(r["complete"] for r in result["runs"])
    return {
        "figures": {
            "median_s": median,
            "runs": [{k: v for k, v in r.items() if k != "cpu"} for r in result["runs"]],
            "messages": per_conversation * sizes.catchup_conversations,
            "conversations": sizes.catchup_conversations,
            "load_written_in_s": result["written_in_s"],
        },
        "targets": [
            target(
                f"catch-up of {per_conversation * sizes.catchup_conversations} messages",
                median if complete else math.nan,
                2,
                "s",
                at_most=True,
            )
        ],
        "cpu": {f"run {n + 1}": r["cpu"] for n, r in enumerate(result["runs"])},
        "params": {
            "messages": per_conversation * sizes.catchup_conversations,
            "conversations": sizes.catchup_conversations,
            "repeats": sizes.catchup_repeats,
        },
    }


SCENARIOS: dict[str, Callable[[Context], Result]] = {
    "latency": latency,
    "throughput": throughput,
    "fanout": fanout,
    "connections": connections,
    "storm": storm,
    "catchup": catchup,
}


# --- profile ------------------------------------------------------------------------------

# Where a sample's innermost frame lives, by path fragment, first match wins.
AREAS = (
    ("django ORM and db backend", ("django/db/",)),
    ("psycopg", ("psycopg",)),
    ("channels / channels_redis", ("channels_redis/", "channels/")),
    ("redis-py", ("/redis/",)),
    ("websockets / uvicorn", ("websockets/", "uvicorn/", "h11/")),
    ("asyncio", ("asyncio/",)),
    ("json / msgpack", ("json/", "msgpack")),
    ("threads, queues", ("threading.py", "concurrent/", "queue.py")),
    ("logging", ("logging/",)),
    ("django (other)", ("django/",)),
    ("project code", ("messaging/", "presence/", "chatsite/", "accounts/")),
)


def summarize_profile(raw: str, top: int = 25) -> dict[str, Any]:
    """Aggregate py-spy `--format raw` output: self time by area and by function.

    Each line is `frame;frame;...;innermost count`, a frame `function (file:line)`.
    """
    total = 0
    by_area: dict[str, int] = {}
    self_time: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [f.strip() for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        leaf = frames[-1]
        area = next((name for name, parts in AREAS if any(p in leaf for p in parts)), "other")
        by_area[area] = by_area.get(area, 0) + count
        self_time[_function(leaf)] = self_time.get(_function(leaf), 0) + count
        for name in {_function(f) for f in frames}:
            inclusive[name] = inclusive.get(name, 0) + count

    def share(table: dict[str, int]) -> list[list[Any]]:
        ranked = sorted(table.items(), key=lambda kv: -kv[1])[:top]
        return [[name, round(100 * n / total, 1)] for name, n in ranked] if total else []

    return {
        "samples": total,
        "self_by_area_pct": share(by_area),
        "self_by_function_pct": share(self_time),
        "inclusive_by_function_pct": share(inclusive),
    }


def _function(frame: str) -> str:
    """Return `function (file)` of a py-spy frame, without the line number."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"


def profile(ctx: Context) -> Result:
    """Direct-chat load at a fixed rate while py-spy samples every gateway: where CPU goes."""
    import shutil
    import subprocess
    import sys

    sizes = ctx.sizes
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return {"figures": {"skipped": "py-spy is not installed"}, "targets": [], "cpu": {}}
    accounts = provision.make_accounts(ctx.prefix("prof"), sizes.direct_clients)
    conversations = provision.direct_pairs(accounts)
    rate, seconds = sizes.profile_rate, sizes.profile_seconds
    out = ctx.out

    async def drive() -> Result:
        clients, senders, recipients, history = await _direct_fleet(
            ctx, accounts, conversations, "prof"
        )
        try:
            await _step(ctx, senders, recipients, history, 20, 1.0, "warm-up")
            spies = [
                subprocess.Popen(  # noqa: S603 - py-spy on our own gateway pids
                    [
                        *(spy, "record", "--pid", str(pid), "--duration", f"{seconds:.0f}"),
                        *("--rate", "250", "--format", "raw", "--nonblocking", "--gil"),
                        *("--output", str(out / f"py-spy-{pid}.txt")),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                for pid in ctx.deployment.gateway_pids()
            ]
            gateways_before = ctx.meter.sample()
            step = await _step(ctx, senders, recipients, history, rate, seconds, "profile")
            gateways_after = ctx.meter.sample()
            errors = []
            for spy_proc in spies:
                _stdout, stderr = await asyncio.to_thread(spy_proc.communicate, timeout=60)
                if spy_proc.returncode != 0:
                    errors.append(stderr.decode(errors="replace")[-500:])
        finally:
            await close_all(clients)
        return {
            "step": step,
            "gateway_cpu_s": gateways_after.parts["gateways"] - gateways_before.parts["gateways"],
            "errors": errors,
        }

    result = asyncio.run(drive())
    raw = "".join(p.read_text() for p in sorted(out.glob("py-spy-*.txt")) if p.stat().st_size)
    step = result["step"]
    sends = max(1, step["sends_ok"])
    summary = summarize_profile(raw)
    ctx.progress(
        f"  profile: {step['sends_ok']} sends at {rate} msg/s, "
        f"{1000 * result['gateway_cpu_s'] / sends:.2f} ms gateway CPU per send; "
        f"top area {summary['self_by_area_pct'][:1]}"
    )
    return {
        "figures": {
            "rate": rate,
            "seconds": seconds,
            "gateway_cpu_ms_per_send": round(1000 * result["gateway_cpu_s"] / sends, 2),
            "latency_ms": step["latency_ms"],
            "profile": summary,
            "py_spy_errors": result["errors"],
        },
        "targets": [],
        "cpu": {f"{rate} msg/s under py-spy": step["cpu"]},
        "params": {"rate": rate, "seconds": seconds, "sampling_hz": 250},
    }


SCENARIOS["profile"] = profile


def notifications(ctx: Context) -> Result:
    """Offline Web Push: commit-to-push latency, worker CPU and throughput, send-path cost."""
    from bench.notifications import notifications as run

    return run(ctx)


SCENARIOS["notifications"] = notifications


def drain(ctx: Context) -> Result:
    """Restart every gateway in turn, each drained, under clients and traffic."""
    from bench.drain import drain as run

    return run(ctx)


SCENARIOS["drain"] = drain


def mobile(ctx: Context) -> Result:
    """FCM and APNs pushes per second of one sending process, and its CPU per push."""
    from bench.mobile_push import measure

    runs = []
    cpu = {}
    for concurrency in ctx.sizes.mobile_concurrency:
        for platform in ("fcm", "apns"):
            ctx.progress(f"  mobile: {platform}, {concurrency} in flight")
            before = ctx.meter.sample()
            runs.append(measure(platform, ctx.sizes.mobile_pushes, 0.05, concurrency))
            # The sender is this process ("harness"); the local push server is "other".
            cpu[f"mobile {platform}, {concurrency} in flight"] = CpuMeter.split(
                before, ctx.meter.sample()
            )
    widest = max(ctx.sizes.mobile_concurrency)
    return {
        "figures": {"runs": runs},
        "targets": [
            target(
                f"{r['platform']} pushes/s per process, {widest} in flight, 50 ms answers",
                float(r["per_second"]),
                100,
                "/s",
                at_most=False,
            )
            for r in runs
            if r["concurrency"] == widest
        ],
        "cpu": cpu,
        "params": {
            "pushes": ctx.sizes.mobile_pushes,
            "concurrency": list(ctx.sizes.mobile_concurrency),
            "server_delay_ms": 50,
        },
    }


SCENARIOS["mobile"] = mobile


def baselines(ctx: Context) -> Result:
    """Drive the Channels tutorial chat (both layers) and a raw relay with our load."""
    from bench.baselines.drive import baselines as run

    return run(ctx)


SCENARIOS["baselines"] = baselines
