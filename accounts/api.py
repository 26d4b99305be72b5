"""Auth endpoints for native clients: JWT pairs, refresh, logout, WebSocket tickets."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.serializers import TokenRefreshSerializer
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from accounts import tickets, tokens
from accounts.models import User
from chatsite import ratelimit
from chatsite.errors import DomainError
from chatsite.wire import iso_from_epoch


class Unauthenticated(DomainError):
    """Credentials are missing, wrong, expired or revoked."""

    code = "unauthenticated"
    http_status = 401
    default_message = "Invalid credentials."


class LoginLocked(DomainError):
    """Too many failed logins for this username; wait before trying again."""

    code = "rate_limited"
    http_status = 429
    default_message = "Too many failed attempts; try again later."


class CredentialsSerializer(serializers.Serializer[Any]):
    """A username and password."""

    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, trim_whitespace=False)


class RefreshSerializer(serializers.Serializer[Any]):
    """A refresh token."""

    refresh = serializers.CharField(max_length=4096)


def _failure_bucket(username: str) -> str:
    return f"login-failures:{username.strip().lower()}"


def _lockout_rate() -> tuple[float, float]:
    limit = float(settings.LOGIN_FAILURE_LIMIT)
    return limit / settings.LOGIN_LOCKOUT_SECONDS, limit


class TokenObtainApi(APIView):
    """Exchange a username and password for a JWT pair (a new login)."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    def post(self, request: Request) -> Response:
        """Answer `{access, refresh}`, 401 on bad credentials, 429 while locked out."""
        form = CredentialsSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        username = form.validated_data["username"]
        rate, burst = _lockout_rate()
        # The same answers whether or not the username exists: no user enumeration.
        locked = ratelimit.take(_failure_bucket(username), rate=rate, burst=burst, cost=0)
        if not locked.allowed:
            raise LoginLocked(details={"retry_after": locked.retry_after})
        user = authenticate(request, username=username, password=form.validated_data["password"])
        if not isinstance(user, User):
            ratelimit.take(_failure_bucket(username), rate=rate, burst=burst)
            raise Unauthenticated("Invalid username or password.")
        return Response(tokens.issue_pair(user))


class TokenRefreshApi(APIView):
    """Rotate a refresh token: answer a new pair; the old refresh token stops working."""

    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]

    def post(self, request: Request) -> Response:
        """Answer `{access, refresh}`, or 401 if the refresh token is not good any more."""
        form = RefreshSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        raw = form.validated_data["refresh"]
        try:
            refresh = RefreshToken(raw)
            user = User.objects.filter(pk=refresh.get("user_id")).first()
            if user is None or not tokens.token_still_valid_for(refresh, user):
                raise Unauthenticated("This refresh token is no longer valid.")
            pair = TokenRefreshSerializer().validate({"refresh": raw})
        except TokenError as exc:
            raise Unauthenticated("This refresh token is no longer valid.") from exc
        return Response(pair)


class LogoutApi(APIView):
    """Log out one login: its refresh and access tokens and its sockets stop working."""

    def post(self, request: Request) -> Response:
        """Revoke the given refresh token's login; answer 204."""
        form = RefreshSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        tokens.revoke(form.validated_data["refresh"], request.user)  # type: ignore[arg-type]
        return Response(status=204)


class WsTicketApi(APIView):
    """Issue a single-use WebSocket ticket (for clients that cannot set headers)."""

    def post(self, request: Request) -> Response:
        """Answer `{ticket, expires_at}`; the ticket is valid once, for 30 s."""
        auth = request.auth
        user_id = int(request.user.pk or 0)
        if isinstance(auth, AccessToken):
            grant = tickets.Grant(
                user_id=user_id,
                family=tokens.family_of(auth),
                expires_at=float(auth["exp"]),
            )
        else:
            grant = tickets.Grant(user_id=user_id, session_key=request.session.session_key)
        ticket, expires = tickets.issue(grant)
        return Response({"ticket": ticket, "expires_at": iso_from_epoch(expires)}, status=201)
