"""The derived presence state of a user from their live connections (pure rules).

PROTOCOL.md: `offline` when no connection is live; `busy` when the user chose busy and
is connected; `away` when every live connection reports idle; else `online`. A
connection is live while its last heartbeat is within the live window (3 heartbeats).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

ONLINE, AWAY, BUSY, OFFLINE = "online", "away", "busy", "offline"
STATES = (ONLINE, AWAY, BUSY, OFFLINE)


@dataclass(frozen=True)
class Beat:
    """A connection's last heartbeat time (epoch seconds) and whether it reported idle."""

    at: float
    idle: bool


def live(connections: Mapping[str, Beat], *, now: float, window: float) -> dict[str, Beat]:
    """Return the connections whose last heartbeat is within `window` seconds of `now`."""
    return {name: beat for name, beat in connections.items() if beat.at > now - window}


def derive(connections: Mapping[str, Beat], *, busy: bool, now: float, window: float) -> str:
    """Return the user's state from their connections and sticky status."""
    alive = live(connections, now=now, window=window)
    if not alive:
        return OFFLINE
    if busy:
        return BUSY
    if all(beat.idle for beat in alive.values()):
        return AWAY
    return ONLINE
