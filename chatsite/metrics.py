"""Prometheus metrics of a gateway process: the definitions, the hooks hot paths call, `/metrics`.

A gateway answers `GET /metrics` itself (`MetricsEndpoint`, in front of the ASGI app);
a Celery worker serves its own metrics on `WORKER_METRICS_PORT` (`messaging.taskmetrics`).
docs/operations.md ("Metrics") has the table of every metric, its labels and a panel query.

What a hot path pays is one counter increment or one histogram observation on a label
child bound here in advance: no label lookup by keyword, no I/O, no query. The counts
made for every frame (frames by type, the send and delivery latencies) are plain
integers of the event loop's thread (`FrameCounter`, `LoopHistogram`), read when
Prometheus scrapes: prometheus_client's own take a lock per increment, which was about a
tenth of a gateway's CPU in a fan-out to 1,000 members. Figures that
cost something to read (the database pool's) are read by a collector when Prometheus
scrapes. Label values are bounded by the code: frame types to the protocol's own (anything
else is `other`), close codes to the ones the protocol and WebSocket define, rate-limit
kinds and drop reasons to the fixed lists below.

This module imports no app code (an import-linter contract holds that): gateway, services
and accounts all count through it.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import (
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    MutableMapping,
    Sequence,
)
from datetime import datetime
from typing import Any, Literal, get_args

from asgiref.sync import markcoroutinefunction
from django.db import connections
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    disable_created_metrics,
    make_asgi_app,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# No `*_created` series beside every counter and histogram: twice the series for a
# timestamp Prometheus's text format does not use (counter resets are detected anyway).
disable_created_metrics()  # type: ignore[no-untyped-call]

OTHER = "other"

# Seconds; a send is a few milliseconds when all is well, up to DB_POOL_TIMEOUT (5 s)
# when the pool is exhausted. Delivery adds the channel layer and the receiver's queue.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

OPEN_SOCKETS = Gauge(
    "chat_ws_open_sockets",
    "Authenticated WebSocket sessions open in this gateway process.",
    multiprocess_mode="livesum",
)


class FrameCounter(Collector):
    """A counter by frame type, in plain integers, read when Prometheus scrapes.

    Counting is a dict increment, on the event loop's thread only (two threads counting
    could lose an increment). Types made known (`knowing`) show up at zero before their
    first frame (a panel has its series from the start); any other type counts as `other`.
    """

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry = REGISTRY):
        self.name = name
        self.documentation = documentation
        self.counts: dict[str, int] = {OTHER: 0}
        registry.register(self)

    def knowing(self, kinds: Iterable[str]) -> FrameCounter:
        """Count `kinds` by name from now on; return self."""
        for kind in kinds:
            self.counts.setdefault(kind, 0)
        return self

    def count(self, kind: str) -> None:
        """Count one frame of type `kind` (`other` if the protocol has no such type)."""
        try:
            self.counts[kind] += 1
        except KeyError:
            self.counts[OTHER] += 1

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, labels=["type"])

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=["type"])
        for kind, total in list(self.counts.items()):
            family.add_metric([kind], total)
        yield family


class LoopHistogram(Collector):
    """A histogram in plain numbers of the event loop's thread, read when Prometheus scrapes.

    The same buckets and exposition as prometheus_client's `Histogram` (a value equal
    to a bucket's bound counts in that bucket), without its lock per observation.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry = REGISTRY,
    ):
        self.name = name
        self.documentation = documentation
        self.bounds = [float(b) for b in buckets]
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0
        registry.register(self)

    def observe(self, value: float) -> None:
        """Count one observation of `value`."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation)

    def collect(self) -> Iterator[Metric]:
        counts, total = list(self.counts), self.sum
        cumulative, buckets = 0, []
        for bound, count in zip([*self.bounds, float("inf")], counts, strict=True):
            cumulative += count
            buckets.append((floatToGoString(bound), cumulative))  # type: ignore[no-untyped-call]
        yield HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)


FRAMES_RECEIVED = FrameCounter(
    "chat_ws_frames_received",
    "WebSocket frames received, by client frame type (unknown, binary or unparsable: other).",
)
FRAMES_SENT = FrameCounter(
    "chat_ws_frames_sent",
    "WebSocket frames sent to clients, by server frame type.",
)
SEND_LATENCY = LoopHistogram(
    "chat_send_latency_seconds",
    "Time from a message.send frame arriving to its message.sent answer going out.",
    buckets=LATENCY_BUCKETS,
)
DELIVERY_LATENCY = LoopHistogram(
    "chat_delivery_latency_seconds",
    "Time from a message's created_at (stamped by the sender's gateway in the storing "
    "transaction) to its message.created frame going out to a receiver's socket.",
    buckets=LATENCY_BUCKETS,
)
SEND_BATCH = LoopHistogram(
    "chat_send_batch_size",
    "Sends stored by one statement of this gateway: those that arrived while earlier ones "
    "were being written go together (WS_SEND_WRITES, WS_SEND_BATCH).",
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
WS_CLOSES = Counter(
    "chat_ws_closes",
    "WebSocket connections ended, by close code: the gateway's own when it closed, else "
    "the code the server reported (the client's, 1006 lost, 1012 server shutting down).",
    ["code"],
)
FANOUT_DROPPED = Counter(
    "chat_fanout_events_dropped",
    "Channel-layer events lost (clients repair the gap from the log): queue_full = the "
    "gateway's fan-out queue was full; publish_failed = a publish to Redis failed or timed "
    "out; inbox_full = a socket's channel-layer inbox was full and its oldest event dropped; "
    "undecodable = a message on the gateway's Redis channels that is no event.",
    ["reason"],
)
SUBSCRIBES_UNCONFIRMED = Counter(
    "chat_layer_subscribes_unconfirmed",
    "Group subscriptions a gateway stopped waiting for: Redis had not confirmed them "
    "within a second (paused or away). The socket went on; an event published before "
    "Redis processed the subscription is missed live and repaired by the client.",
)
RATE_LIMITS_LOCAL = Counter(
    "chat_rate_limits_local",
    "Rate-limit decisions a process made with buckets of its own because Redis had "
    "failed (for RATE_LIMIT_REDIS_RETRY s after each failure): each process then "
    "allows a user the whole limit.",
)
HANDSHAKES_SHED = Counter(
    "chat_ws_handshakes_shed",
    "WebSocket handshakes closed with 1013 unserved because their database work had not "
    "started WS_READY_DEADLINE seconds after they arrived (their clients had given up).",
)
RATE_LIMITED = Counter(
    "chat_rate_limited",
    "Requests refused by a rate limit, by kind (send, react, api, upload, search, login, "
    "signup, password_reset, frame: a WebSocket frame over its socket's budget).",
    ["kind"],
)

# The close codes a label may carry: the protocol's (docs/protocol.md, "Closes") and the
# standard ones a server reports. Clients may close with any 4000-4999 code: `other`.
CLOSE_CODES = frozenset(
    {1000, 1001, 1005, 1006, 1007, 1008, 1009, 1011, 1012, 1013, 4401, 4408, 4409, 4429}
)
_closes = {code: WS_CLOSES.labels(code=str(code)) for code in sorted(CLOSE_CODES)}
_closes_other = WS_CLOSES.labels(code=OTHER)

DropReason = Literal["queue_full", "publish_failed", "inbox_full", "undecodable"]
_dropped = {
    reason: FANOUT_DROPPED.labels(reason=reason)
    for reason in ("queue_full", "publish_failed", "inbox_full", "undecodable")
}

RateLimitKind = Literal[
    "send",
    "react",
    "api",
    "upload",
    "search",
    "login",
    "signup",
    "frame",
    "password_reset",
    "export",
    "block",
    "report",
    "hide",
]
_rate_limited = {kind: RATE_LIMITED.labels(kind=kind) for kind in get_args(RateLimitKind)}


def count_close(code: int) -> None:
    """Count a connection that ended with close `code`."""
    _closes.get(code, _closes_other).inc()


def count_dropped(reason: DropReason, events: int = 1) -> None:
    """Count channel-layer events lost for `reason`."""
    _dropped[reason].inc(events)


def count_rate_limited(kind: RateLimitKind) -> None:
    """Count one request refused by the rate limit of `kind`."""
    _rate_limited[kind].inc()


# One event is forwarded to every socket of its group in this process, one after the
# other: the same `created_at` string, parsed once.
_last_created: tuple[str, float] = ("", 0.0)


def observe_delivery(created_at: object) -> None:
    """Observe the delivery latency of a message whose payload says `created_at`.

    The clock is the sender's gateway's against this one's: keep gateways on NTP. A
    negative difference (clock skew) counts as 0.
    """
    global _last_created
    if not isinstance(created_at, str):
        return
    text, epoch = _last_created
    if created_at != text:
        try:
            epoch = datetime.fromisoformat(created_at).timestamp()
        except ValueError:
            return
        _last_created = (created_at, epoch)
    DELIVERY_LATENCY.observe(max(0.0, time.time() - epoch))


# --- the database pool, read at scrape time ---------------------------------------------


def django_pools() -> dict[str, Any]:
    """Return the psycopg pool of every database alias that has one."""
    pools = {}
    for alias in connections:
        # The PostgreSQL backend's `pool` (None without pool options; SQLite has none).
        # It makes the pool object if this process has none yet, without opening it.
        pool = getattr(connections[alias], "pool", None)
        if pool is not None:
            pools[alias] = pool
    return pools


# (stats key, metric name, help); psycopg_pool's `get_stats()` leaves out counters still 0.
_POOL_GAUGES = (
    ("pool_size", "chat_db_pool_connections", "Connections the pool holds (lent and idle)."),
    ("pool_available", "chat_db_pool_connections_idle", "Idle connections in the pool."),
    ("pool_max", "chat_db_pool_connections_max", "Connections the pool may hold at most."),
    (
        "requests_waiting",
        "chat_db_pool_requests_waiting",
        "Callers waiting for a connection right now.",
    ),
)
_POOL_COUNTERS = (
    ("requests_num", "chat_db_pool_requests", "Connections asked of the pool.", 1.0),
    (
        "requests_queued",
        "chat_db_pool_requests_queued",
        "Requests that found no idle connection and had to wait.",
        1.0,
    ),
    (
        "requests_wait_ms",
        "chat_db_pool_wait_seconds",
        "Time requests spent waiting for a connection.",
        0.001,
    ),
    (
        "requests_errors",
        "chat_db_pool_request_errors",
        "Requests that got no connection (timed out after DB_POOL_TIMEOUT, or the pool closed).",
        1.0,
    ),
    (
        "connections_errors",
        "chat_db_pool_connect_errors",
        "Failed attempts to open a connection to the database.",
        1.0,
    ),
    (
        "connections_lost",
        "chat_db_pool_connections_lost",
        "Connections found broken when checked or returned.",
        1.0,
    ),
)


class DatabasePoolCollector(Collector):
    """This process's database pool figures, read from psycopg_pool's `get_stats()` per scrape.

    Nothing is counted per query: the pool keeps these figures anyway.
    """

    def __init__(self, pools: Callable[[], Mapping[str, Any]] = django_pools) -> None:
        self.pools = pools

    def describe(self) -> Iterable[Metric]:
        """Name the metrics without reading the pools (registration must not touch them)."""
        return self._families({})

    def collect(self) -> Iterable[Metric]:
        """Read every pool's figures now."""
        return self._families({alias: pool.get_stats() for alias, pool in self.pools().items()})

    @staticmethod
    def _families(stats: Mapping[str, Mapping[str, int]]) -> Iterator[Metric]:
        for key, name, doc in _POOL_GAUGES:
            gauge = GaugeMetricFamily(name, doc, labels=["database"])
            for alias, figures in stats.items():
                gauge.add_metric([alias], figures.get(key, 0))
            yield gauge
        for key, name, doc, scale in _POOL_COUNTERS:
            counter = CounterMetricFamily(name, doc, labels=["database"])
            for alias, figures in stats.items():
                counter.add_metric([alias], figures.get(key, 0) * scale)
            yield counter


REGISTRY.register(DatabasePoolCollector())


# --- /metrics ----------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]


class MetricsEndpoint:
    """ASGI middleware: answer `GET /metrics` with this process's metrics; pass the rest on.

    In front of Django on purpose: Prometheus scrapes each gateway by its own address
    (`10.0.0.5:8001`), which is not in ALLOWED_HOSTS, over plain HTTP, which the HTTPS
    redirect would bounce; and a scrape needs no session, CSRF or CSP. Keep the path
    out of the load balancer (docs/operations.md, "Metrics").
    """

    def __init__(self, app: ASGIApp, registry: CollectorRegistry = REGISTRY) -> None:
        self.app = app
        self.metrics = make_asgi_app(registry)

    @markcoroutinefunction
    def __call__(self, scope: Scope, receive: Any, send: Any) -> Awaitable[None]:
        """Serve the scrape, or hand the request to the application.

        Returns the application's awaitable instead of awaiting it in a coroutine of its
        own, which every open socket would hold for its lifetime (about 250 bytes). Marked
        as a coroutine function, so that servers see an ASGI 3 application.
        """
        if scope["type"] != "http" or scope["path"] != "/metrics":
            return self.app(scope, receive, send)
        return self.scrape(scope, receive, send)

    async def scrape(self, scope: Scope, receive: Any, send: Any) -> None:
        """Answer `GET /metrics` (and HEAD); 405 for any other method."""
        if scope["method"] not in ("GET", "HEAD"):
            await send(
                {
                    "type": "http.response.start",
                    "status": 405,
                    "headers": [(b"allow", b"GET, HEAD"), (b"content-length", b"0")],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        await self.metrics(scope, receive, send)
