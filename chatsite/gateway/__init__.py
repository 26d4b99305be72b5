"""The WebSocket gateway's machinery: everything about sockets, nothing about chat rules.

| module | holds |
|---|---|
| `http` | uvicorn's h11 protocol with a deadline for the first request |
| `auth` | the handshake: Origin check, then JWT, ticket or session; credential re-checks |
| `dbthreads` | the database thread pool every ORM call of async code runs on |
| `fanout` | the per-process queues that hand committed events to the channel layer |
| `supervisor` | per-process periodic work: idle and credential checks, group refresh |
| `batching` | per-socket coalescing of receipts and the typing budget |
| `drain` | SIGTERM: `reconnect` frames spread over the drain window, then exit |

The consumer (`messaging.consumers`) is a table from frame type to one service call; it
uses this package for socket lifetime. Gateways start with
`--http chatsite.gateway:H11WithHandshakeDeadline` (re-exported here for that flag).
"""

from typing import Any


def __getattr__(name: str) -> Any:
    """Hand out `H11WithHandshakeDeadline` lazily: only uvicorn's `--http` needs it."""
    if name == "H11WithHandshakeDeadline":
        from chatsite.gateway.http import H11WithHandshakeDeadline

        return H11WithHandshakeDeadline
    raise AttributeError(name)
