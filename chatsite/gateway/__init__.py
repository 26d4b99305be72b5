"""The WebSocket gateway's machinery: everything about sockets, nothing about chat rules.

| module | holds |
|---|---|
| `http` | uvicorn's h11 protocol with a deadline for the first request |
| `websocket` | uvicorn's sans-I/O WebSocket protocol, with flow control (slow readers) |
| `inbox` | a socket's queues and its send flag, lighter than asyncio's |
| `auth` | the handshake: Origin check, then JWT, ticket or session; credential re-checks |
| `dbthreads` | the database thread pool every ORM call of async code runs on |
| `fanout` | the per-process queues that hand committed events to the channel layer |
| `supervisor` | per-process periodic work: idle and credential checks, group refresh |
| `batching` | per-socket coalescing of receipts and the typing budget |
| `drain` | SIGTERM: `reconnect` frames spread over the drain window, then exit |

The consumer (`messaging.consumers`) is a table from frame type to one service call; it
uses this package for socket lifetime. Gateways start with
`--http chatsite.gateway:H11WithHandshakeDeadline --ws chatsite.gateway:FlowControlledWebSocket`
(both re-exported here for those flags).
"""

from typing import Any


def __getattr__(name: str) -> Any:
    """Hand out the protocols lazily: only uvicorn's `--http` and `--ws` need them."""
    if name == "H11WithHandshakeDeadline":
        from chatsite.gateway.http import H11WithHandshakeDeadline

        return H11WithHandshakeDeadline
    if name == "FlowControlledWebSocket":
        from chatsite.gateway.websocket import FlowControlledWebSocket

        return FlowControlledWebSocket
    raise AttributeError(name)
