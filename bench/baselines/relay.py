"""A raw `websockets` relay: every text frame to the other sockets of its room (the path).

    python -m bench.baselines.relay --port PORT

No protocol, no parsing, nothing stored: a lower bound of what serving a chat socket
costs in Python on this machine. Frames go out with `websockets.broadcast`, which
writes to each socket at once without waiting for a slow one.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections import defaultdict

from websockets.asyncio.server import ServerConnection, broadcast, serve

ROOMS: defaultdict[str, set[ServerConnection]] = defaultdict(set)


async def relay(socket: ServerConnection) -> None:
    """Join the room named by the path; relay each text frame to the room's others."""
    room = socket.request.path if socket.request is not None else "/"
    members = ROOMS[room]
    members.add(socket)
    try:
        async for frame in socket:
            if isinstance(frame, str):
                broadcast([m for m in members if m is not socket], frame)
    finally:
        members.discard(socket)
        if not members:
            del ROOMS[room]


async def main(port: int) -> None:
    """Serve on 127.0.0.1:`port` until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # The same limits as uvicorn gives our gateways: frames up to 1.25 MiB, no server
    # pings (clients offer no compression).
    async with serve(relay, "127.0.0.1", port, max_size=1_310_720, ping_interval=None):
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.baselines.relay")
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
