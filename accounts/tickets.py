"""Single-use WebSocket tickets, for clients that cannot set handshake headers.

A ticket is a random string valid for `WS_TICKET_TTL` seconds (30) and redeemable once,
on any gateway (stored in Redis; in-process on the embedded default). It carries what
the issuing credential was - the login (token family or session key) and the user's
session auth hash, which changes with the password - so redeeming it after a logout or a
password change is refused, and the socket lives only as long as that credential.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import asdict, dataclass

from django.conf import settings

from chatsite.redis import async_client, sync_client


@dataclass(frozen=True)
class Grant:
    """What a ticket grants: a user, and the credential it was issued under.

    `auth_hash` is the user's `get_session_auth_hash()` when the ticket was minted: an
    HMAC of the password hash, so a password change in between makes the ticket void.
    A grant without one (minted before this field existed) is void too.
    """

    user_id: int
    family: str | None = None
    expires_at: float | None = None
    session_key: str | None = None
    auth_hash: str = ""


_local_lock = threading.Lock()
_local: dict[str, tuple[float, str]] = {}


def _key(ticket: str) -> str:
    return f"{settings.REDIS_KEY_PREFIX}:ticket:{ticket}"


def issue(grant: Grant) -> tuple[str, float]:
    """Store a new ticket for `grant`; return it and its expiry (epoch seconds)."""
    ticket = secrets.token_urlsafe(32)
    ttl = settings.WS_TICKET_TTL
    expires = time.time() + ttl
    data = json.dumps(asdict(grant))
    client = sync_client(shard_by=ticket)
    if client is None:
        with _local_lock:
            _local[ticket] = (expires, data)
    else:
        client.set(_key(ticket), data, ex=ttl)
    return ticket, expires


async def redeem(ticket: str) -> Grant | None:
    """Return the ticket's grant and forget the ticket, or None if unknown, used or stale."""
    if not ticket or len(ticket) > 128:
        return None
    client = async_client(shard_by=ticket)
    if client is None:
        with _local_lock:
            expires, data = _local.pop(ticket, (0.0, ""))
        if expires < time.time():
            return None
    else:
        raw = await client.getdel(_key(ticket))
        if raw is None:
            return None
        data = raw.decode() if isinstance(raw, bytes) else str(raw)
    return Grant(**json.loads(data))
