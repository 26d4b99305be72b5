"""The `notifications` scenario: offline pushes from commit to the push endpoint, and their cost.

Recipients never connect; each has one Web Push device whose endpoint is the bench's own
push service (`bench.pushsink`: it decrypts every push and answers 201 after 50 ms).
Senders are reference clients; every message goes into its own direct conversation, so
no two share a push window and each must be pushed exactly once. The deployment runs
NOTIFY_PUSH_DELAY=1 s (the product's default is 10) and NOTIFY_POLL_INTERVAL=1 s.

1. **One worker's throughput** (`notify_pools`): with beat stopped, `backlog` messages
   are sent and decided (in the harness process), so that many push windows are due;
   then beat starts and the worker's first tick releases them at once. Pushes per
   second from the first arrival to the last, per pool; the worker is restarted with
   each pool (the first as deployed: prefork, concurrency 2).
2. **Commit-to-push latency** (`notify_latency_runs`): open-loop `rate` msg/s for
   `seconds` s to as many offline recipients (100 different ones per second at 100
   msg/s); latency is the push's arrival at the endpoint minus the message's
   `created_at` (stamped just before the send's one statement commits), on one clock,
   as measured and minus NOTIFY_PUSH_DELAY. Every message must arrive exactly once.
3. **CPU per notification**: the worker's process group (all pool children) and beat
   over each latency run: deciding, claiming, encrypting, signing, sending, recording.
4. **Send-path cost**: direct chats with both members online at a fixed rate, the
   gateways' NOTIFY_ENABLED=1 and =0 interleaved (A/B/A/B, gateways restarted for each
   run, same everything else). Sending is measured with beat stopped (the send alone:
   gateways, PostgreSQL, Redis), then beat starts and the worker's deciding of what the
   sends left due is measured on its own (worker and PostgreSQL).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from bench import provision
from bench.deploy import BenchDeployment, CpuMeter, CpuSample
from bench.fleet import (
    Account,
    close_all,
    connect_all,
    deliveries,
    make_client,
    offer_load,
    settle,
    summary_ms,
)
from bench.pushsink import Arrival, Subscription, new_subscription
from bench.scenarios import Context, Result, target
from chatclient import ChatClient, History

SERVER_PARTS = ("gateways", "postgres", "redis", "celery", "beat")
# The goal of the send-path comparison: notifications on may cost at most this much.
SEND_PATH_GOAL_PCT = 5.0
# "other" CPU (processes that are not the deployment's) above which an A/B run is noisy.
NOISY_OTHER_PCT = 20.0


# --- provisioning (synchronous ORM: call through asyncio.to_thread) ---------------------


def _plan(count: int, senders: int, recipients: int) -> list[tuple[int, int]]:
    """Return (sender, recipient) index pairs, all distinct, each recipient once per round.

    Message k goes to recipient k % recipients from sender (k // recipients + k) %
    senders: `recipients` consecutive messages reach `recipients` different people, and
    no pair repeats while k < senders * recipients.
    """
    if count > senders * recipients:
        raise ValueError(f"{count} distinct pairs need more than {senders} x {recipients}")
    return [((k // recipients + k % recipients) % senders, k % recipients) for k in range(count)]


def _register_devices(recipients: Sequence[Account], origin: str) -> list[Subscription]:
    from django.db import connection

    from accounts.models import User
    from messaging.devices import register_device

    users = User.objects.in_bulk([a.user_id for a in recipients])
    subscriptions = []
    try:
        for account in recipients:
            sub = new_subscription(origin, f"u{account.user_id}")
            register_device(
                user=users[account.user_id],
                platform="webpush",
                subscription=sub.info,
                name="bench",
            )
            subscriptions.append(sub)
    finally:
        connection.close()
    return subscriptions


def _messages(conversations: Sequence[int], tag: str) -> dict[int, float]:
    """Return id -> created_at (epoch seconds) of the text messages tagged `tag`."""
    from django.db import connection

    from messaging.models import Message

    try:
        return {
            pk: created.timestamp()
            for pk, created in Message.objects.filter(
                conversation_id__in=conversations,
                kind=Message.Kind.TEXT,
                body__startswith=f"{tag} ",
            ).values_list("pk", "created_at")
        }
    finally:
        connection.close()


def _outstanding() -> dict[str, int]:
    """Return how much notification work is left: due rows, due push windows, pending pushes."""
    from django.db import connection

    from messaging.models import Notification, NotificationDue, PushWindow

    try:
        return {
            "due_messages": NotificationDue.objects.count(),
            "due_windows": PushWindow.objects.filter(due_at__isnull=False).count(),
            "pending_pushes": Notification.objects.filter(
                decision=Notification.Decision.PENDING,
                channel__in=("webpush", "fcm", "apns"),
            ).count(),
        }
    finally:
        connection.close()


def _decisions(message_ids: Sequence[int]) -> dict[str, Any]:
    """Return the trace of these messages' push decisions: counts and the worker's latency."""
    from django.db import connection

    from messaging.models import Notification

    try:
        rows = list(
            Notification.objects.filter(message_id__in=message_ids, kind="message").values_list(
                "decision", "reason", "latency_ms"
            )
        )
    finally:
        connection.close()
    counts = Counter(f"{d}{'/' + r if r else ''}" for d, r, _ in rows)
    sent = [ms / 1000 for d, _r, ms in rows if d == "sent" and ms is not None]
    return {"decisions": dict(counts), "worker_recorded_latency_ms": summary_ms(sent)}


def _decide_all(expected: int, timeout: float) -> dict[str, Any]:
    """Decide every due message in this process (as the tick would); return the timing."""
    from django.db import connection
    from django.utils import timezone

    from messaging.models import NotificationDue
    from messaging.notifications import decide

    decided = 0
    started = time.monotonic()
    deadline = started + timeout
    first = None
    try:
        while time.monotonic() < deadline:
            n = decide.decide_due_messages(now=timezone.now())
            if n:
                first = first or time.monotonic()
                decided += n
                continue
            if not NotificationDue.objects.exists():
                break
            time.sleep(0.05)
    finally:
        connection.close()
    spent = time.monotonic() - (first or started)
    return {
        "decided": decided,
        "expected": expected,
        "seconds": round(spent, 2),
        "per_second": round(decided / spent, 1) if spent > 0 else math.nan,
    }


async def _drained(timeout: float) -> dict[str, int]:
    """Wait until no notification work is left (or `timeout`); return what was left."""
    deadline = time.monotonic() + timeout
    left = await asyncio.to_thread(_outstanding)
    while any(left.values()) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        left = await asyncio.to_thread(_outstanding)
    return left


# --- measuring pushes -------------------------------------------------------------------


class Collector:
    """Everything the push endpoint saw, taken from it as it arrives."""

    def __init__(self, deployment: BenchDeployment) -> None:
        """Collect from the deployment's push endpoint."""
        self.sink = deployment.push_sink
        self.arrivals: list[Arrival] = []

    def clear(self) -> None:
        """Forget what arrived so far (and what the sink still holds)."""
        self.sink.take()
        self.arrivals = []

    async def poll(self) -> int:
        """Take what arrived since the last poll; return how many message pushes so far."""
        self.arrivals += await asyncio.to_thread(self.sink.take)
        return sum(1 for a in self.arrivals if a.kind == "message")

    async def wait_for(self, count: int, timeout: float) -> bool:
        """Wait until `count` message pushes arrived; return whether they did in time."""
        deadline = time.monotonic() + timeout
        while await self.poll() < count:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.2)
        return True


def _check(expected: dict[int, float], arrivals: Sequence[Arrival]) -> dict[str, Any]:
    """Match pushes to messages: latency of each, and what was lost, doubled or refused."""
    times: dict[int, list[float]] = defaultdict(list)
    for a in arrivals:
        if a.kind == "message" and a.message_id is not None:
            times[a.message_id].append(a.at)
    latencies = [min(times[m]) - created for m, created in expected.items() if m in times]
    return {
        "messages": len(expected),
        "pushed": sum(1 for m in expected if m in times),
        "lost": sum(1 for m in expected if m not in times),
        "doubled": sum(1 for m in expected if len(times.get(m, ())) > 1),
        "unexpected": sum(len(v) for m, v in times.items() if m not in expected),
        "refused": sum(1 for a in arrivals if a.status != 201),
        "refusals": sorted({a.error for a in arrivals if a.status != 201})[:5],
        "other_kinds": dict(Counter(a.kind for a in arrivals if a.kind not in ("message", ""))),
        "_latencies": latencies,
    }


def _cpu_seconds(before: CpuSample, after: CpuSample) -> dict[str, float]:
    return {name: after.parts[name] - before.parts[name] for name in after.parts}


def _minus(summary: dict[str, float], seconds: float) -> dict[str, float]:
    return {
        k: (round(v - 1000 * seconds, 2) if k not in ("count",) else v) for k, v in summary.items()
    }


# --- the scenario -----------------------------------------------------------------------

WorkerConfig = tuple[str, int, str]  # pool, concurrency, Celery app


def notifications(ctx: Context) -> Result:
    """Offline Web Push: commit-to-push latency, worker CPU and throughput, send-path cost."""
    sizes = ctx.sizes
    deployment = ctx.deployment
    worker, beat = deployment.celery, deployment.beat
    assert worker is not None and beat is not None and deployment.gateways is not None
    deployed: WorkerConfig = (worker.pool, worker.concurrency, worker.app)
    runs = list(sizes.notify_latency_runs)
    pools = list(sizes.notify_pools)
    biggest = max([0] + [round(r[0] * r[1]) for r in runs] + [p[3] for p in pools])
    warm = min(20, sizes.notify_recipients)
    count = biggest + warm
    ctx.progress(
        f"  notifications: {sizes.notify_senders} senders, {sizes.notify_recipients} offline "
        f"recipients with a Web Push device each, {count} direct conversations"
    )
    senders = provision.make_accounts(ctx.prefix("nts"), sizes.notify_senders)
    recipients = provision.make_accounts(ctx.prefix("ntr"), sizes.notify_recipients)
    plan = _plan(count, len(senders), len(recipients))
    conversations = provision.direct_pairs_bulk([(senders[s], recipients[r]) for s, r in plan])
    subscriptions = _register_devices(recipients, deployment.push_sink.origin)
    deployment.push_sink.register(subscriptions)
    ab_accounts = provision.make_accounts(ctx.prefix("ntab"), sizes.direct_clients)
    ab_conversations = provision.direct_pairs_bulk(
        list(zip(ab_accounts[0::2], ab_accounts[1::2], strict=True))
    )
    collector = Collector(deployment)

    async def drive() -> Result:
        history = History()
        clients = [_client(ctx, a, i, "nts", history) for i, a in enumerate(senders)]
        connected = await connect_all(clients, concurrency=sizes.connect_concurrency)
        if connected["failed"]:
            raise RuntimeError(f"senders failed to connect: {connected['failures']}")
        route = [(clients[s], conversations[k]) for k, (s, _r) in enumerate(plan)]
        result: Result = {"latency": [], "backlog": []}
        try:
            result["left_by_earlier_scenarios"] = await _drained(120.0)
            # 3 first: one worker against a backlog released at once, per pool (the first
            # as deployed, so the worker is restarted as few times as possible).
            for n, (pool, concurrency, app, backlog, timeout) in enumerate(pools):
                result["backlog"].append(
                    await _backlog_run(
                        ctx,
                        route[:backlog],
                        conversations[:backlog],
                        collector,
                        (pool, concurrency, app),
                        f"nt-bl{n}",
                        timeout,
                    )
                )
            # 1 and 2: commit-to-push latency and CPU per push, per rate and worker.
            for n, (rate, seconds, pool, concurrency, app) in enumerate(runs):
                await _use_worker(ctx, (pool, concurrency, app))
                await _warm_up(ctx, route[biggest:], collector, f"nt-warm{n}")
                result["latency"].append(
                    await _latency_run(
                        ctx, route, conversations, collector, rate, seconds, f"nt-lat{n}"
                    )
                )
        finally:
            await close_all(clients)
            if not beat.running:
                await asyncio.to_thread(beat.start)
            await _use_worker(ctx, deployed)
        result["left_before_send_path"] = await _drained(60.0)
        # 4: the send path with NOTIFY_ENABLED on and off, the worker as deployed.
        result["send_path"] = await _send_path(ctx, ab_accounts, ab_conversations)
        return result

    result = asyncio.run(drive())
    return _summarize(ctx, result)


def _client(ctx: Context, account: Account, index: int, tag: str, history: History) -> ChatClient:
    """Return a reference client pinned to one gateway (clients alternate gateways)."""
    return make_client(account, ctx.pinned(index), name=f"{tag}{index}", history=history)


async def _use_worker(ctx: Context, config: WorkerConfig) -> None:
    """Restart the deployment's worker with `config` unless it already runs so."""
    worker = ctx.deployment.celery
    assert worker is not None
    if (worker.pool, worker.concurrency, worker.app) != config:
        pool, concurrency, app = config
        await asyncio.to_thread(worker.restart, pool=pool, concurrency=concurrency, app=app)


async def _warm_up(
    ctx: Context, route: Sequence[tuple[ChatClient, int]], collector: Collector, tag: str
) -> None:
    """Push a few messages through a freshly started worker (imports, connections)."""
    collector.clear()
    tasks = await offer_load(route, 20, len(route) / 20, tag=tag)
    failed = await settle(tasks, 30)
    await collector.wait_for(len(route) - failed, ctx.deployment.options.notify_push_delay + 30)
    await _drained(30.0)


def _span(arrivals: Sequence[Arrival]) -> tuple[list[float], float]:
    """Return the sorted arrival times of message pushes and their rate (first to last)."""
    times = sorted(a.at for a in arrivals if a.kind == "message")
    span = times[-1] - times[0] if len(times) > 1 else math.nan
    rate = round((len(times) - 1) / span, 1) if span and span > 0 else math.nan
    return times, rate


async def _latency_run(
    ctx: Context,
    route: Sequence[tuple[ChatClient, int]],
    conversations: Sequence[int],
    collector: Collector,
    rate: int,
    seconds: float,
    tag: str,
) -> Result:
    deployment = ctx.deployment
    worker = deployment.celery
    assert worker is not None
    count = round(rate * seconds)
    delay = deployment.options.notify_push_delay
    ctx.progress(
        f"  notifications: {rate} msg/s for {seconds:g} s to offline recipients, worker "
        f"{worker.label} (NOTIFY_PUSH_DELAY {delay:g} s)"
    )
    collector.clear()
    before = ctx.meter.sample()
    tasks = await offer_load(route[:count], rate, seconds, tag=tag)
    offered = ctx.meter.sample()
    last_send = time.time()
    failed = await settle(tasks, 35)
    arrived = await collector.wait_for(count - failed, seconds + 120)
    after = ctx.meter.sample()
    left = await _drained(10.0)
    expected = await asyncio.to_thread(_messages, conversations[:count], tag)
    check = _check(expected, collector.arrivals)
    trace = await asyncio.to_thread(_decisions, list(expected))
    times, push_rate = _span(collector.arrivals)
    cpu = _cpu_seconds(before, after)
    pushed = max(1, check["pushed"])
    wall = after.at - before.at
    latency = summary_ms(check["_latencies"])
    result = {
        "rate": rate,
        "seconds": seconds,
        "worker": worker.label,
        "sends": len(tasks),
        "sends_failed": failed,
        "all_arrived": arrived,
        **check,
        "latency_ms": latency,
        "latency_minus_delay_ms": _minus(latency, delay),
        "pushes_per_s": push_rate,
        "last_push_after_last_send_s": round(times[-1] - last_send, 2) if times else math.nan,
        "notify_push_delay_s": delay,
        "notify_poll_interval_s": 1.0,
        "push_answer_delay_ms": round(1000 * deployment.push_sink.delay, 1),
        **trace,
        "left_after": left,
        "window_s": round(wall, 1),
        "worker_cpu_ms_per_push": round(1000 * cpu["celery"] / pushed, 2),
        "beat_cpu_ms_per_push": round(1000 * cpu["beat"] / pushed, 3),
        "beat_cpu_pct": round(100 * cpu["beat"] / wall, 2),
        "postgres_cpu_ms_per_message": round(1000 * cpu["postgres"] / pushed, 2),
        "gateways_cpu_ms_per_message": round(1000 * cpu["gateways"] / pushed, 2),
        "worker_rss_mb": round(worker.rss() / 2**20, 1),
        "cpu_sending": CpuMeter.split(before, offered),
        "cpu": CpuMeter.split(before, after),
    }
    ctx.progress(
        f"  notifications: {check['pushed']}/{check['messages']} pushed (lost {check['lost']}, "
        f"doubled {check['doubled']}) at {push_rate}/s; commit to push p50/p95/p99 "
        f"{latency.get('p50')}/{latency.get('p95')}/{latency.get('p99')} ms; worker "
        f"{result['worker_cpu_ms_per_push']} ms CPU per push"
    )
    return result


async def _backlog_run(
    ctx: Context,
    route: Sequence[tuple[ChatClient, int]],
    conversations: Sequence[int],
    collector: Collector,
    config: WorkerConfig,
    tag: str,
    timeout: float,
) -> Result:
    """Pile up due push windows with beat stopped, start beat: how fast does one worker go."""
    deployment = ctx.deployment
    worker, beat = deployment.celery, deployment.beat
    assert worker is not None and beat is not None
    count = len(route)
    await asyncio.to_thread(beat.close)
    await _use_worker(ctx, config)
    # What an earlier run left (a worker that stalled) goes out now, before measuring.
    left_before = await _drained(60.0)
    ctx.progress(f"  notifications: backlog of {count} push windows, one worker {worker.label}")
    rate = min(400, 10 * count)
    tasks = await offer_load(route, rate, count / rate, tag=tag)
    failed = await settle(tasks, 35)
    await asyncio.sleep(deployment.options.notify_push_delay)
    decided = await asyncio.to_thread(_decide_all, count, 60.0)
    due = (await asyncio.to_thread(_outstanding))["due_windows"]
    collector.clear()
    released = time.time()
    await asyncio.to_thread(beat.start)
    # Beat's first tick comes one interval after it starts: its own start-up is not counted.
    before = ctx.meter.sample()
    arrived = await collector.wait_for(count - failed, timeout)
    after = ctx.meter.sample()
    expected = await asyncio.to_thread(_messages, conversations, tag)
    check = _check(expected, collector.arrivals)
    times, push_rate = _span(collector.arrivals)
    cpu = _cpu_seconds(before, after)
    pushed = max(1, len(times))
    result = {
        "worker": worker.label,
        "pool": worker.pool,
        "concurrency": worker.concurrency,
        "app": worker.app,
        "backlog": count,
        "left_before": left_before,
        "due_windows_at_release": due,
        "sends_failed": failed,
        "decided_in_harness": decided,
        "all_arrived": arrived,
        "timeout_s": timeout,
        **{k: v for k, v in check.items() if not k.startswith("_")},
        "pushes_per_s": push_rate,
        "first_push_after_release_s": round(times[0] - released, 2) if times else math.nan,
        "last_push_after_release_s": round(times[-1] - released, 2) if times else math.nan,
        "worker_cpu_ms_per_push": round(1000 * cpu["celery"] / pushed, 2),
        "worker_cpu_pct": round(100 * cpu["celery"] / (after.at - before.at), 1),
        "postgres_cpu_ms_per_push": round(1000 * cpu["postgres"] / pushed, 2),
        "worker_rss_mb": round(worker.rss() / 2**20, 1),
        "cpu": CpuMeter.split(before, after),
    }
    ctx.progress(
        f"  notifications: {worker.label}: {len(times)} of {count} pushed in "
        f"{result['last_push_after_release_s']} s, {push_rate}/s (lost {check['lost']}, "
        f"doubled {check['doubled']}), worker {result['worker_cpu_ms_per_push']} ms CPU per push"
    )
    return result


async def _restart_gateways(deployment: BenchDeployment, enabled: bool) -> None:
    assert deployment.gateways is not None
    gateways = deployment.gateways.gateways

    def restart() -> None:
        for gateway in gateways:
            gateway.env["NOTIFY_ENABLED"] = "1" if enabled else "0"
            gateway.terminate()
        for gateway in gateways:
            gateway.spawn()
        for gateway in gateways:
            gateway.wait_ready(60)

    await asyncio.to_thread(restart)


async def _send_path(
    ctx: Context, accounts: Sequence[Account], conversations: Sequence[int]
) -> Result:
    """Direct chats at a fixed rate, NOTIFY_ENABLED on (A) and off (B), interleaved.

    Per run: sending with beat stopped (CPU per message of the send path), then beat
    starts and the worker decides what the sends left due (CPU per message of deciding).
    """
    sizes = ctx.sizes
    deployment = ctx.deployment
    beat = deployment.beat
    assert beat is not None
    delay = deployment.options.notify_push_delay
    rate, seconds = sizes.notify_ab_rate, sizes.notify_ab_seconds
    runs: list[Result] = []
    order = [enabled for _ in range(sizes.notify_ab_repeats) for enabled in (True, False)]
    try:
        for n, enabled in enumerate(order):
            label = "A (NOTIFY_ENABLED=1)" if enabled else "B (NOTIFY_ENABLED=0)"
            ctx.progress(f"  notifications: send path run {n + 1}/{len(order)}, {label}")
            await _restart_gateways(deployment, enabled)
            history = History()
            clients = [_client(ctx, a, i, "ntab", history) for i, a in enumerate(accounts)]
            await connect_all(clients, concurrency=sizes.connect_concurrency)
            senders = [(clients[i], conversations[i // 2]) for i in range(len(clients))]
            recipients = {
                c: [clients[2 * k].name, clients[2 * k + 1].name]
                for k, c in enumerate(conversations)
            }
            try:
                warm = await offer_load(senders, 20, 1.0, tag=f"ab-warm{n}")
                await settle(warm, 30)
                await asyncio.sleep(delay + 0.5)
                await _drained(20.0)
                history.sends.clear()
                history.recvs.clear()
                # Sending with beat stopped: what the send itself costs, nothing decided.
                await asyncio.to_thread(beat.close)
                started = time.time()
                before = ctx.meter.sample()
                tasks = await offer_load(senders, rate, seconds, tag=f"ab{n}")
                failed = await settle(tasks, 35)
                await asyncio.sleep(1.0)
                sent_at = ctx.meter.sample()
                got = deliveries(history, recipients, since=started)
                due = (await asyncio.to_thread(_outstanding))["due_messages"]
                # Then beat again: the worker decides what the sends left due (A).
                await asyncio.to_thread(beat.start)
                deciding = ctx.meter.sample()
                left = await _drained(60.0)
                decided_in = time.monotonic() - deciding.at
                await asyncio.sleep(max(0.0, delay + 1.0 - decided_in))
                decided_at = ctx.meter.sample()
            finally:
                await close_all(clients)
                if not beat.running:
                    await asyncio.to_thread(beat.start)
            sending = _cpu_seconds(before, sent_at)
            decision = _cpu_seconds(deciding, decided_at)
            sent = max(1, got.sends_ok)
            per = {p: round(1000 * sending[p] / sent, 3) for p in SERVER_PARTS}
            per_decision = {p: round(1000 * decision[p] / sent, 3) for p in SERVER_PARTS}
            latency = summary_ms(got.latencies)
            path = per["gateways"] + per["postgres"] + per["redis"]
            deciding_cost = per_decision["celery"] + per_decision["postgres"]
            run: Result = {
                "run": n + 1,
                "notify_enabled": enabled,
                "rate": rate,
                "seconds": seconds,
                "sends_ok": got.sends_ok,
                "sends_failed": failed,
                "lost": got.lost,
                "latency_ms": latency,
                "due_rows_written": due,
                # From beat's start (its first tick comes 1 s later) to no due row left.
                "decided_in_s": round(decided_in, 1),
                "sending_cpu_ms_per_message": per,
                "deciding_cpu_ms_per_message": per_decision,
                "send_path_cpu_ms_per_message": round(path, 3),
                "deciding_worker_postgres_cpu_ms_per_message": round(deciding_cost, 3),
                "server_cpu_ms_per_message": round(path + deciding_cost, 3),
                "left_after": left,
                "sending_window_s": round(sent_at.at - before.at, 1),
                "deciding_window_s": round(decided_at.at - deciding.at, 1),
                "cpu": CpuMeter.split(before, sent_at),
                "cpu_deciding": CpuMeter.split(deciding, decided_at),
            }
            runs.append(run)
            ctx.progress(
                f"  notifications: {label}: send path {run['send_path_cpu_ms_per_message']} "
                f"ms CPU/msg, deciding {run['deciding_worker_postgres_cpu_ms_per_message']} "
                f"ms/msg; p50/p99 {latency.get('p50')}/{latency.get('p99')} ms"
            )
    finally:
        await _restart_gateways(deployment, True)

    # A run during which something else on the machine took a fifth of a core or more is
    # left out of the means when at least one clean run of each kind remains.
    for run in runs:
        run["other_cpu_pct"] = max(run["cpu"]["other"], run["cpu_deciding"]["other"])
        run["clean"] = run["other_cpu_pct"] < NOISY_OTHER_PCT
    kept = runs
    if {True, False} <= {r["notify_enabled"] for r in runs if r["clean"]}:
        kept = [r for r in runs if r["clean"]]

    def mean(enabled: bool, key: str) -> float:
        values = [r[key] for r in kept if r["notify_enabled"] == enabled]
        return sum(values) / len(values) if values else math.nan

    on, off = mean(True, "server_cpu_ms_per_message"), mean(False, "server_cpu_ms_per_message")
    path_on = mean(True, "send_path_cpu_ms_per_message")
    path_off = mean(False, "send_path_cpu_ms_per_message")
    deciding_on = mean(True, "deciding_worker_postgres_cpu_ms_per_message")
    deciding_off = mean(False, "deciding_worker_postgres_cpu_ms_per_message")
    return {
        "runs": runs,
        "runs_in_means": [r["run"] for r in kept],
        "server_cpu_ms_per_message": {"on": round(on, 3), "off": round(off, 3)},
        "send_path_cpu_ms_per_message": {"on": round(path_on, 3), "off": round(path_off, 3)},
        "deciding_cpu_ms_per_message": {"on": round(deciding_on, 3), "off": round(deciding_off, 3)},
        # On a CPU-bound machine throughput goes as 1 / CPU per message.
        "throughput_drop_pct": round(100 * (1 - off / on), 1) if on > 0 else math.nan,
        "send_path_throughput_drop_pct": round(100 * (1 - path_off / path_on), 1)
        if path_on > 0
        else math.nan,
    }


def _summarize(ctx: Context, result: Result) -> Result:
    sizes = ctx.sizes
    send_path = result["send_path"]
    cpu: dict[str, Any] = {}
    for run in result["latency"]:
        cpu[f"{run['rate']} msg/s to offline recipients, {run['worker']}"] = run["cpu"]
    for run in result["backlog"]:
        cpu[f"backlog of {run['backlog']}, {run['worker']}"] = run["cpu"]
    for run in send_path["runs"]:
        flag = "on" if run["notify_enabled"] else "off"
        name = f"direct chats {run['rate']} msg/s, notify {flag} (run {run['run']})"
        cpu[f"{name}, sending"] = run["cpu"]
        cpu[f"{name}, deciding after"] = run["cpu_deciding"]
    return {
        "figures": {
            "latency": [{k: v for k, v in r.items() if k != "cpu"} for r in result["latency"]],
            "backlog": [{k: v for k, v in r.items() if k != "cpu"} for r in result["backlog"]],
            "send_path": {
                **{k: v for k, v in send_path.items() if k != "runs"},
                "runs": [
                    {k: v for k, v in r.items() if not k.startswith("cpu")}
                    for r in send_path["runs"]
                ],
            },
            "left_by_earlier_scenarios": result["left_by_earlier_scenarios"],
            "left_before_send_path": result["left_before_send_path"],
        },
        "targets": [
            target(
                "notifications on: direct-chat throughput drop (server CPU per message)",
                send_path["throughput_drop_pct"],
                SEND_PATH_GOAL_PCT,
                "%",
                at_most=True,
            ),
            target(
                "notifications on: send-path drop (gateways + PostgreSQL + Redis CPU)",
                send_path["send_path_throughput_drop_pct"],
                SEND_PATH_GOAL_PCT,
                "%",
                at_most=True,
            ),
        ],
        "cpu": cpu,
        "params": {
            "senders": sizes.notify_senders,
            "recipients": sizes.notify_recipients,
            "latency_runs": [list(r) for r in sizes.notify_latency_runs],
            "pools": [list(p) for p in sizes.notify_pools],
            "ab_rate": sizes.notify_ab_rate,
            "ab_seconds": sizes.notify_ab_seconds,
            "ab_repeats": sizes.notify_ab_repeats,
            "notify_push_delay_s": ctx.deployment.options.notify_push_delay,
            "notify_poll_interval_s": 1.0,
            "push_answer_delay_ms": round(1000 * ctx.deployment.push_sink.delay, 1),
        },
    }
