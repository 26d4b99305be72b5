"""The `drain` scenario: a rolling restart of every gateway under connected clients.

Clients in groups of 10 are spread over the gateways; in a tenth of the groups one
member writes once a second throughout (one writer per group: a single client's
outbox sends in order, one at a time, and could not keep up with them all). Each gateway
in turn gets SIGTERM (it drains over its window: `reconnect` frames with spread delays,
then exit), is started again
and must answer /healthz before the next one goes. Measured: the reconnect rate each
drain causes (handshakes completed per second, against what one gateway accepted in the
`connections` scenario), how long each drain took, how many sockets the server had to
close (1012: clients that did not leave by themselves), whether every client ends with
every message (none lost), and how late the messages sent during the restart were.

The reconnect rate is counted twice: by the clients (`session.ready` read per second,
which a stalled load generator bunches: it reads a backlog of frames at once) and by the
gateways themselves (their `chat_ws_frames_sent_total{type="session.ready"}` read from
`/metrics` every second), the figure the criterion is about. The load generator's own
stalls (event-loop lag, full garbage collections) are reported beside them.
"""

from __future__ import annotations

import asyncio
import gc
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bench import provision
from bench.deploy import CpuMeter
from bench.fleet import close_all, connect_all, deliveries, make_client, summary_ms
from bench.harness import Gateway, http_get
from chatclient import History

if TYPE_CHECKING:
    from bench.scenarios import Context, Result


def per_second_peak(times: list[float]) -> int:
    """Return the largest number of `times` (epoch seconds) within one whole second."""
    counts = Counter(int(t) for t in times)
    return max(counts.values(), default=0)


def window_peak(times: list[float], window: float = 2.0) -> float:
    """Return the highest rate (per second) of `times` within any `window` seconds."""
    ordered = sorted(times)
    best, j = 0, 0
    for i, t in enumerate(ordered):
        while ordered[j] < t - window:
            j += 1
        best = max(best, i - j + 1)
    return round(best / window, 1)


_READY_SENT = re.compile(rb'^chat_ws_frames_sent_total\{type="session\.ready"\} ([0-9.e+]+)$', re.M)
_SHED = re.compile(rb"^chat_ws_handshakes_shed_total ([0-9.e+]+)$", re.M)


def _cumulative(samples: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Return a counter's samples made cumulative across restarts (which start from 0)."""
    total, previous, series = 0.0, 0.0, []
    for t, count in samples:
        total += count - previous if count >= previous else count
        previous = count
        series.append((t, total))
    return series


# Rates are read over windows of this many seconds: a busy gateway answers `/metrics`
# late by a varying amount, and over a single second that jitter alone doubled a rate.
RATE_WINDOW = 2.0


class AcceptSampler:
    """Read each gateway's count of `session.ready` frames sent, twice a second.

    A thread, so that the samples keep their times however busy the clients' event loop
    is. Each sample is timed at the middle of its request. A gateway that restarts starts
    counting from 0 again.
    """

    def __init__(self, gateways: Sequence[Gateway], period: float = 0.5) -> None:
        self.gateways = list(gateways)
        self.period = period
        self.samples: dict[str, list[tuple[float, float]]] = {g.name: [] for g in self.gateways}
        self.shed: dict[str, list[tuple[float, float]]] = {g.name: [] for g in self.gateways}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="accept-sampler", daemon=True)

    def start(self) -> AcceptSampler:
        """Start sampling in a thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            for gateway in self.gateways:
                asked = time.time()
                try:
                    status, body = http_get(f"{gateway.http_url}/metrics", timeout=2.0)
                except OSError:
                    continue  # restarting
                found = _READY_SENT.search(body) if status == 200 else None
                at = (asked + time.time()) / 2
                if found:
                    self.samples[gateway.name].append((at, float(found.group(1))))
                shed = _SHED.search(body) if status == 200 else None
                if shed:
                    self.shed[gateway.name].append((at, float(shed.group(1))))

    def handshakes_shed(self) -> int:
        """Return the handshakes the gateways shed (WS_READY_DEADLINE) while sampled."""
        return int(sum(series[-1][1] for s in self.shed.values() if (series := _cumulative(s))))

    def peak(self, since: float, until: float) -> tuple[float, str]:
        """Return the highest `session.ready` rate of one gateway over RATE_WINDOW, and which."""
        best, where = 0.0, ""
        for name, samples in self.samples.items():
            series = _cumulative(samples)
            j = 0
            for t0, c0 in series:
                if t0 < since:
                    continue
                while j < len(series) and series[j][0] < t0 + RATE_WINDOW:
                    j += 1
                if j == len(series) or series[j][0] > until:
                    break
                t1, c1 = series[j]
                rate = (c1 - c0) / (t1 - t0)
                if rate > best:
                    best, where = rate, name
        return round(best, 1), where


class Stalls:
    """The load generator's own stalls: event-loop lag and full garbage collections."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.full_gc: list[float] = []
        self._gc_started = 0.0

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.full_gc.append(time.perf_counter() - self._gc_started)

    async def watch(self, stop: asyncio.Event, tick: float = 0.05) -> None:
        """Measure how late a `tick`-second sleep wakes up until `stop` is set."""
        loop = asyncio.get_running_loop()
        gc.callbacks.append(self._on_gc)
        try:
            while not stop.is_set():
                started = loop.time()
                await asyncio.sleep(tick)
                self.lags.append(loop.time() - started - tick)
        finally:
            gc.callbacks.remove(self._on_gc)

    def figures(self) -> dict[str, Any]:
        """Summarize the stalls for the report."""
        return {
            "loop_lag_max_s": round(max(self.lags, default=0.0), 3),
            "loop_lags_over_0_5_s": sum(1 for lag in self.lags if lag > 0.5),
            "full_gc_runs": len(self.full_gc),
            "full_gc_max_s": round(max(self.full_gc, default=0.0), 3),
        }


def drain(ctx: Context) -> Result:
    """Restart every gateway in turn with a drain, under clients and traffic."""
    sizes = ctx.sizes
    seconds = sizes.drain_seconds
    deployment = ctx.deployment.gateways
    assert deployment is not None
    accounts = provision.make_accounts(ctx.prefix("drain"), sizes.drain_clients)
    group_ids = provision.groups(accounts, sizes.group_size, "drain")
    talked_to = list(range(0, len(group_ids), 10))  # indexes of the groups written to
    # The gateways run without a drain for the other scenarios: restart them with one,
    # before any client connects.
    ctx.progress(f"  drain: restarting the gateways with WS_DRAIN_SECONDS={seconds:g}")
    for gateway in deployment.gateways:
        gateway.env["WS_DRAIN_SECONDS"] = f"{seconds:g}"
        gateway.env["WS_DRAIN_RATE"] = f"{sizes.drain_rate:g}"
        gateway.restart(timeout=60)

    async def run() -> Result:
        history = History()
        codes: Counter[int | None] = Counter()

        def on_event(frame: dict[str, Any]) -> None:
            if frame.get("type") == "client.disconnected":
                codes[frame.get("code")] += 1

        clients = [
            make_client(a, ctx.urls, name=f"drain{i}", history=history, on_event=on_event)
            for i, a in enumerate(accounts)
        ]
        ctx.progress(f"  drain: connecting {len(clients)} clients")
        connected = await connect_all(
            clients, concurrency=sizes.connect_concurrency, progress=ctx.progress
        )
        # The clients' state is long-lived: keep it out of the full collections, which
        # otherwise stop this one process for up to 2 s, so that every reconnect timer and
        # every frame due in those 2 s is handled at once (measured: the clients counted
        # 432 reconnects in one second while the gateways sent 223 `session.ready`s).
        # Real devices do not stall together.
        gc.collect()
        gc.freeze()
        size = sizes.group_size
        writers = [(clients[n * size], group_ids[n]) for n in talked_to]
        recipients = {
            group_ids[n]: [c.name for c in clients[n * size : (n + 1) * size]] for n in talked_to
        }
        stop = asyncio.Event()
        sends: list[asyncio.Task[Any]] = []

        async def talk() -> None:
            n = 0
            while not stop.is_set():
                for writer, group in writers:
                    body = f"during the restart {n}"
                    sends.append(asyncio.create_task(writer.send(group, body, timeout=60)))
                n += 1
                await asyncio.sleep(1.0)

        drains: list[dict[str, Any]] = []
        stalls = Stalls()
        watching = asyncio.Event()
        watcher = asyncio.create_task(stalls.watch(watching))
        sampler = AcceptSampler(deployment.gateways).start()
        talker = asyncio.create_task(talk())
        before = ctx.meter.sample()
        started = time.time()
        try:
            for gateway in deployment.gateways:
                on_it = sum(1 for c in clients if c.gateway_url == gateway.ws_url)
                ctx.progress(f"  drain: SIGTERM to {gateway.name} ({on_it} clients on it)")
                sigterm = time.time()
                window = max(seconds, on_it / sizes.drain_rate) if sizes.drain_rate else seconds
                await asyncio.to_thread(gateway.terminate, window + 60.0)
                exited = time.time()
                drained = gateway.returncode
                await asyncio.to_thread(gateway.start, 60.0)
                server_peak, peak_at = sampler.peak(sigterm, exited + 1.0)
                ready = [
                    r.ready_at
                    for r in history.reconnects
                    if sigterm <= r.dropped_at <= exited + 1.0
                ]
                drains.append(
                    {
                        "gateway": gateway.name,
                        "clients_on_it": on_it,
                        "reconnected": len(ready),
                        "exit_after_s": round(exited - sigterm, 2),
                        "exit_status": drained,
                        "reconnects_per_s_peak": per_second_peak(ready),
                        "reconnects_per_s_peak_2s": window_peak(ready, RATE_WINDOW),
                        "server_ready_per_s_peak": server_peak,
                        "server_peak_at": peak_at,
                        "window_s": round(window, 1),
                        "reconnects_per_s_mean": round(len(ready) / window, 1) if window else 0,
                    }
                )
                ctx.progress(
                    f"  drain: {gateway.name} exited after {drains[-1]['exit_after_s']} s; "
                    f"peak {drains[-1]['reconnects_per_s_peak']} reconnects/s at the clients "
                    f"({drains[-1]['reconnects_per_s_peak_2s']}/s over {RATE_WINDOW:g} s), "
                    f"{server_peak} session.ready/s over {RATE_WINDOW:g} s at {peak_at or '-'}"
                )
        finally:
            stop.set()
            await talker
            sampler.stop()
            watching.set()
            await watcher
            gc.unfreeze()
        await asyncio.gather(*sends, return_exceptions=True)
        ended = time.time()
        # Every member must end with the log as stored.
        wanted = await asyncio.to_thread(provision.last_seqs, group_ids)
        deadline = time.monotonic() + 120
        behind = len(clients)
        while time.monotonic() < deadline:
            behind = sum(
                1
                for c in clients
                if not c.connected or any(c.cursor(g) < wanted.get(g, 0) for g in c.conversations)
            )
            if behind == 0:
                break
            await asyncio.sleep(0.1)
        after = ctx.meter.sample()
        got = deliveries(history, recipients, since=started)
        await close_all(clients)
        return {
            "clients": len(clients),
            "connected_at_start": connected["connected"],
            "drain_seconds": seconds,
            "drain_rate": sizes.drain_rate,
            "drains": drains,
            "restart_s": round(ended - started, 1),
            "server_closes_1012": codes.get(1012, 0),
            "close_codes": {str(k): v for k, v in codes.items()},
            "messages_sent": got.sends_ok,
            "deliveries_expected": got.expected,
            "delivered_live_or_synced": got.delivered,
            "behind_at_end": behind,
            "delivery_ms": summary_ms(got.latencies),
            "load_generator": stalls.figures(),
            "handshakes_shed": sampler.handshakes_shed(),
            "cpu": CpuMeter.split(before, after),
        }

    result = asyncio.run(run())
    for gateway in deployment.gateways:
        gateway.env["WS_DRAIN_SECONDS"] = "0"  # takes effect at its next start
    late = result["delivery_ms"].get("max", math.nan) / 1000
    peak = max((d["reconnects_per_s_peak"] for d in result["drains"]), default=0)
    return {
        "figures": {k: v for k, v in result.items() if k != "cpu"},
        "targets": [],
        "cpu": {"drain": result["cpu"]},
        "params": {
            "clients": sizes.drain_clients,
            "drain_seconds": seconds,
            "group_size": sizes.group_size,
            "latest_delivery_s": round(late, 2),
            "peak_reconnects_per_s": peak,
            "peak_server_ready_per_s": max(
                (d["server_ready_per_s_peak"] for d in result["drains"]), default=0
            ),
        },
    }
