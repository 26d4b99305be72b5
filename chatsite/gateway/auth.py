"""WebSocket handshake security: the Origin check, then who is connecting and with what.

Order (PROTOCOL.md section 3): a handshake that carries `Origin` must come from an
allowed host, whatever its credentials (HTTP 403 before accept). Then, in this order:
`Authorization: Bearer <access JWT>`, `?ticket=`, or the session cookie - the cookie
only when an `Origin` was sent (a browser), never alone from a native client. The
result goes into `scope["auth"]` (None when unauthenticated; the consumer then closes
with 4401). Nothing here logs a token.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from importlib import import_module
from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.models import Session
from django.db import DatabaseError, connection
from django.http.request import validate_host
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import AccessToken

from accounts import tickets, tokens
from accounts.models import User
from chatsite import metrics
from chatsite.gateway.dbthreads import Shed, db_by
from chatsite.gateway.drain import draining
from chatsite.sql import any_of

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Credential:
    """What a socket was authenticated with; gateways re-check it while the socket lives."""

    method: str  # "jwt", "ticket" or "session"
    user_id: int
    password_hash: str
    family: str | None = None
    expires_at: float | None = None
    session_key: str | None = None
    epoch: int = 0  # the user's login epoch at the handshake ("sign out everywhere" bumps it)


@dataclass(frozen=True)
class Authenticated:
    """A handshake's user and credential."""

    user: User
    credential: Credential


def origin_allowed(origin: str) -> bool:
    """Return whether an Origin header names one of ALLOWED_HOSTS (`null` never does)."""
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False
    host = parts.hostname
    if ":" in host:  # IPv6 literal, as ALLOWED_HOSTS spells it
        host = f"[{host}]"
    return validate_host(host, settings.ALLOWED_HOSTS)


def _headers(scope: Scope) -> dict[str, str]:
    return {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in scope.get("headers", [])
    }


def _from_access_token(raw: str) -> Authenticated | None:
    try:
        token = AccessToken(raw)  # type: ignore[arg-type]
    except TokenError:
        return None
    user = tokens.user_behind(token)
    if user is None:
        return None
    return Authenticated(
        user,
        Credential(
            method="jwt",
            user_id=user.pk,
            password_hash=user.password,
            family=tokens.family_of(token),
            expires_at=float(token["exp"]),
            epoch=user.login_epoch,
        ),
    )


def _from_session(session_key: str) -> Authenticated | None:
    engine = import_module(settings.SESSION_ENGINE)
    session = engine.SessionStore(session_key)
    user_id = session.get(SESSION_KEY)
    if user_id is None:
        return None
    user = User.objects.filter(pk=user_id, is_active=True).first()
    if user is None or not constant_time_compare(
        session.get(HASH_SESSION_KEY, ""), user.get_session_auth_hash()
    ):
        return None
    return Authenticated(
        user,
        Credential(
            method="session",
            user_id=user.pk,
            password_hash=user.password,
            session_key=session_key,
            epoch=user.login_epoch,
        ),
    )


def _from_grant(grant: tickets.Grant) -> Authenticated | None:
    """Return the ticket's user if the credential it was minted under still stands.

    Checked here, before the consumer accepts, so a void ticket is closed 4401 before
    any frame: the password is the one of the minting (the session auth hash), the
    token family was not logged out, the session still exists for this user.
    """
    user = User.objects.filter(pk=grant.user_id, is_active=True).first()
    if user is None:
        return None
    if not grant.auth_hash or not constant_time_compare(
        grant.auth_hash, user.get_session_auth_hash()
    ):
        return None  # the password changed since the minting (or an old grant)
    if grant.expires_at is not None and grant.expires_at <= time.time():
        return None
    if grant.family and tokens.revoked_families([grant.family]):
        return None  # the login it was minted from logged out
    if grant.session_key:
        session = _from_session(grant.session_key)
        if session is None or session.user.pk != user.pk:
            return None  # the session logged out (or expired, or is someone else's)
    return Authenticated(
        user,
        Credential(
            method="ticket",
            user_id=user.pk,
            password_hash=user.password,
            family=grant.family,
            expires_at=grant.expires_at,
            session_key=grant.session_key,
            epoch=user.login_epoch,
        ),
    )


async def authenticate(scope: Scope) -> Authenticated | None:
    """Return who the handshake authenticates as, or None.

    Raises `Shed` if the gateway is too far behind to start the lookup in time.
    """
    start_by = scope.get("ready_by")
    headers = _headers(scope)
    authorization = headers.get("authorization", "")
    if authorization:
        kind, _, raw = authorization.partition(" ")
        if kind.lower() != "bearer" or not raw.strip():
            return None
        return await db_by(start_by, _from_access_token, raw=raw.strip())
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    ticket = (query.get("ticket") or [""])[0]
    if ticket:
        grant = await tickets.redeem(ticket)
        return await db_by(start_by, _from_grant, grant=grant) if grant else None
    if "origin" not in headers:
        return None  # a cookie alone, without a browser's Origin, is never enough
    cookies = SimpleCookie()
    try:
        cookies.load(headers.get("cookie", ""))
    except Exception:  # noqa: BLE001 - a malformed cookie header authenticates nobody
        return None
    morsel = cookies.get(settings.SESSION_COOKIE_NAME)
    if morsel is None or not morsel.value:
        return None
    return await db_by(start_by, _from_session, session_key=morsel.value)


DRAINING_BODY = (
    b'{"error":{"code":"unavailable","message":"This server is restarting; '
    b'connect again and another server will answer."}}'
)


class WebSocketAuthMiddleware:
    """Refuse foreign origins before accept; put `auth` and `user` into the scope."""

    def __init__(self, inner: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the handshake, then hand over to the consumer."""
        if scope["type"] != "websocket":
            await self.inner(scope, receive, send)
            return
        # The scope is changed in place, not copied: the server made it for this socket
        # alone and reads nothing of ours from it, and a copy held for the socket's
        # lifetime costs about 1.2 KB.
        # The moment past which this handshake's database work is dropped (`Shed`).
        deadline = settings.WS_READY_DEADLINE
        scope["ready_by"] = time.monotonic() + deadline if deadline > 0 else None
        if draining() and "websocket.http.response" in scope.get("extensions", {}):
            # Going away: a 503 sends the client (or the load balancer) to another gateway.
            message = await receive()
            if message["type"] == "websocket.connect":
                await send(
                    {
                        "type": "websocket.http.response.start",
                        "status": 503,
                        "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1")],
                    }
                )
                await send({"type": "websocket.http.response.body", "body": DRAINING_BODY})
            return
        origin = _headers(scope).get("origin")
        if origin is not None and not origin_allowed(origin):
            # Closing before accept makes the server answer the handshake with 403.
            message = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.close", "code": 1008})
            return
        try:
            result = await authenticate(scope)
        except DatabaseError:
            # The database is down: the consumer closes with 1013 (try again later).
            scope["auth_unavailable"] = True
            result = None
        except Shed:
            # Too far behind: the client has given up on this handshake; 1013 as well.
            metrics.HANDSHAKES_SHED.inc()
            scope["auth_unavailable"] = True
            result = None
        scope["auth"] = result
        scope["user"] = result.user if result else None
        await self.inner(scope, receive, send)


def find_revoked(credentials: list[Credential], now: float) -> set[int]:
    """Return the positions of credentials that are no longer good.

    Expired, logged out, deactivated, the user changed password or signed out
    everywhere: three queries, whatever the number of sockets.
    """
    bad = {i for i, c in enumerate(credentials) if c.expires_at is not None and c.expires_at <= now}
    condition, params = any_of("id", {c.user_id for c in credentials})
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, is_active, password, login_epoch FROM {User._meta.db_table}"  # noqa: S608 - our table
            f" WHERE {condition}",
            params,
        )
        users = {pk: (bool(active), password, epoch) for pk, active, password, epoch in cursor}
    families = tokens.revoked_families(c.family for c in credentials if c.family)
    session_keys = {c.session_key for c in credentials if c.session_key}
    live_sessions: set[str] = set()
    if session_keys:
        live_sessions = set(
            Session.objects.filter(
                session_key__in=session_keys, expire_date__gt=timezone.now()
            ).values_list("session_key", flat=True)
        )
    for i, c in enumerate(credentials):
        active, password, epoch = users.get(c.user_id, (False, "", 0))
        deactivated = not active
        password_changed = password != c.password_hash
        logged_out = (
            epoch != c.epoch
            or bool(c.family and c.family in families)
            or bool(c.session_key and c.session_key not in live_sessions)
        )
        if deactivated or password_changed or logged_out:
            bad.add(i)
    return bad
