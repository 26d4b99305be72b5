"""Graceful drain: on SIGTERM a gateway hands its sockets to the others, spread out.

In order:
1. `/healthz` and `/readyz` answer 503 and new WebSocket handshakes are refused with
   HTTP 503 (a load balancer with `proxy_next_upstream http_503` sends them to another
   gateway; a client retries another address). HTTP requests in flight, and new ones,
   are still served: a client's REST send while it moves is not refused.
2. Every socket gets a `reconnect` frame with its own delay, drawn at random over the
   drain window (`WS_DRAIN_SECONDS`, longer when the sockets are many: at most
   `WS_DRAIN_RATE` reconnects a second, `drain_window`), and is closed with 1012
   (service restart) `WS_DRAIN_GRACE` seconds after that delay if it is still open (a
   client that ignores the frame).
3. When the sockets are gone, or the window and grace are over, the gateway exits
   through uvicorn's own shutdown (which closes anything left with 1012).

A second SIGTERM exits at once. The drain wraps uvicorn's SIGTERM handler from the
first request or connection the process serves (`DrainOnSigterm`, around the ASGI
application); a process that has served nothing has no sockets to drain. Under any
other server (Daphne in `make run`) SIGTERM is left alone.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import threading
from collections.abc import Callable, Collection
from types import FrameType
from typing import Any, Protocol

from django.conf import settings

from messaging import wire

logger = logging.getLogger(__name__)

CLOSE_SERVICE_RESTART = 1012

SignalHandler = Callable[[int, FrameType | None], Any]


class Drainable(Protocol):
    """What the drain needs of a socket."""

    ready: bool  # its greeting (`session.ready`) has gone out

    async def send_frame(self, frame: Any) -> None:
        """Send one frame."""

    async def close_with(self, code: int) -> None:
        """Close once with `code`."""


class DrainState:
    """Whether this process is draining (read by the health checks and the handshake)."""

    def __init__(self) -> None:
        self.draining = False
        self.installed = False
        self.task: asyncio.Task[None] | None = None


state = DrainState()


def draining() -> bool:
    """Say whether this process is draining."""
    return state.draining


class DrainOnSigterm:
    """ASGI middleware: install the drain with the first request or connection served."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        """Install once (a cheap check afterwards), then serve.

        Returns the application's awaitable: no coroutine of its own for an open socket
        to hold (`chatsite.metrics.MetricsEndpoint.__call__`).
        """
        if not state.installed and scope["type"] in ("http", "websocket"):
            install()
        return self.app(scope, receive, send)


def install() -> None:
    """Wrap uvicorn's SIGTERM handler with the drain (once; main thread; uvicorn only)."""
    if state.installed or threading.current_thread() is not threading.main_thread():
        return
    state.installed = True
    previous = signal.getsignal(signal.SIGTERM)
    owner = getattr(previous, "__self__", None)
    if owner is None or type(owner).__module__ != "uvicorn.server" or not callable(previous):
        return
    if settings.WS_DRAIN_SECONDS <= 0:
        return
    loop = asyncio.get_running_loop()
    uvicorn_exit: SignalHandler = previous

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        if state.draining:
            uvicorn_exit(signum, frame)  # a second SIGTERM: stop now
            return
        state.draining = True
        loop.call_soon_threadsafe(_start, loop, uvicorn_exit, signum)

    signal.signal(signal.SIGTERM, on_sigterm)


def _start(loop: asyncio.AbstractEventLoop, uvicorn_exit: SignalHandler, signum: int) -> None:
    state.task = loop.create_task(_drain_then_exit(uvicorn_exit, signum))


async def _drain_then_exit(uvicorn_exit: SignalHandler, signum: int) -> None:
    # Imported here: the supervisor imports the handshake (auth), which reads `draining`.
    from chatsite.gateway.supervisor import supervisor

    try:
        await drain_sockets(
            supervisor.sockets,  # type: ignore[arg-type]
            seconds=drain_window(len(supervisor.sockets)),
            grace=settings.WS_DRAIN_GRACE,
        )
    except Exception:  # the exit must happen whatever went wrong
        logger.exception("drain failed; exiting")
    finally:
        uvicorn_exit(signum, None)


def drain_window(sockets: int) -> float:
    """Return the seconds to spread `sockets` reconnects over.

    At least WS_DRAIN_SECONDS, and long enough that the reconnects arrive at no more
    than WS_DRAIN_RATE a second (what the other gateways take in along with their own
    work), at most WS_DRAIN_MAX_SECONDS.
    """
    window = settings.WS_DRAIN_SECONDS
    if settings.WS_DRAIN_RATE > 0:
        window = max(window, sockets / settings.WS_DRAIN_RATE)
    return min(window, settings.WS_DRAIN_MAX_SECONDS)


async def drain_sockets(
    live: Collection[Drainable],
    *,
    seconds: float,
    grace: float,
    rng: random.Random | None = None,
) -> None:
    """Ask each socket of `live` to reconnect at a random moment within `seconds`.

    A socket still open `grace` seconds after its moment is closed with 1012. Returns
    when `live` (the process's open sockets, which closing sockets leave) is empty or
    `seconds + grace` have passed.
    """
    sockets = list(live)
    rng = rng or random.Random()  # noqa: S311 - spreading reconnects, not a secret
    loop = asyncio.get_running_loop()
    started = loop.time()
    logger.warning("draining: %d sockets asked to reconnect within %.0f s", len(sockets), seconds)
    closers: list[asyncio.TimerHandle] = []
    closing: set[asyncio.Task[None]] = set()

    async def ask(socket: Drainable, after: float) -> None:
        # A socket still being set up gets its `reconnect` after its `session.ready`
        # (the first frame a client reads), or none if it is not ready by its moment.
        while not socket.ready and loop.time() < started + after:
            await asyncio.sleep(0.05)
        if socket.ready:
            remaining = max(0.0, started + after - loop.time())
            await socket.send_frame(wire.reconnect_frame(int(remaining * 1000)))

        def close() -> None:
            task = loop.create_task(socket.close_with(CLOSE_SERVICE_RESTART))
            closing.add(task)
            task.add_done_callback(closing.discard)

        closers.append(loop.call_at(started + after + grace, close))

    await asyncio.gather(*(ask(s, rng.uniform(0.0, seconds)) for s in sockets))
    deadline = started + seconds + grace
    while live and loop.time() < deadline:
        await asyncio.sleep(0.1)
    for closer in closers:
        closer.cancel()
    logger.warning("drained in %.1f s; %d sockets left", loop.time() - started, len(live))
