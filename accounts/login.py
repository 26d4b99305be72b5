"""Logins: the one check of a username and password, behind the lockout, for every door.

`POST /api/v1/auth/token`, the login page and the admin's login page all call
`authenticate_login`, so a lockout earned at one door holds at the others.

Failed logins are counted in token buckets (Redis, shared by all gateways), each a
budget refilled over `LOGIN_LOCKOUT_SECONDS`:

- per username and client address: `LOGIN_FAILURE_LIMIT`. Someone guessing from one
  address locks the username out there only; its owner still logs in from elsewhere.
- per username and client address at the admin (`staff=True`), on top of the above:
  `LOGIN_STAFF_FAILURE_LIMIT`.
- per client address, across usernames: `LOGIN_ADDRESS_FAILURE_LIMIT`. An address
  that tries many names is refused for every name.

Unknown usernames are counted and answered exactly like known ones (no enumeration).
An attempt is refused while any of its buckets is empty; failures are charged even past
empty, so attempts sent in parallel are all paid for.

A password change checks the current password through the same buckets
(`change_password`): a stolen session cannot be used to guess the password.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import authenticate, password_validation
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F

from accounts import credentials
from accounts.models import User
from chatsite import metrics, ratelimit
from chatsite.clientaddr import address_group
from chatsite.errors import BadRequest, DomainError, RetryInMinutes


class Unauthenticated(DomainError):
    """Credentials are missing, wrong, expired or revoked."""

    code = "unauthenticated"
    http_status = 401
    default_message = "Invalid credentials."


class LoginLocked(RetryInMinutes):
    """Too many failed logins for this username from this address, or from this address."""

    template = "Too many failed logins; try again in {wait}."


def _buckets(username: str, address: str, *, staff: bool) -> list[tuple[str, int]]:
    """Return the failure buckets of this attempt: (key, failures allowed per window)."""
    name = username.strip().lower()
    group = address_group(address)
    buckets = [
        (f"login:fail:{group}|{name}", int(settings.LOGIN_FAILURE_LIMIT)),
        (f"login:fail:{group}", int(settings.LOGIN_ADDRESS_FAILURE_LIMIT)),
    ]
    if staff:
        buckets.append(
            (f"login:fail-staff:{group}|{name}", int(settings.LOGIN_STAFF_FAILURE_LIMIT))
        )
    return buckets


class WrongPassword(BadRequest):
    """The current password given to change it is not the user's."""

    default_message = "Your current password is not right."

    def __init__(self) -> None:
        super().__init__(details={"field": "current_password"})


def _peek(buckets: list[tuple[str, int]]) -> None:
    """Raise LoginLocked while any of `buckets` is empty (taking nothing)."""
    window = float(settings.LOGIN_LOCKOUT_SECONDS)
    peeks = [ratelimit.take(k, rate=limit / window, burst=limit, cost=0) for k, limit in buckets]
    waits = [peek.retry_after for peek in peeks if not peek.allowed]
    if waits:
        metrics.count_rate_limited("login")
        raise LoginLocked(max(waits))


def _charge(buckets: list[tuple[str, int]]) -> None:
    """Count one failed attempt in every bucket."""
    window = float(settings.LOGIN_LOCKOUT_SECONDS)
    for key, limit in buckets:
        ratelimit.charge(key, rate=limit / window, burst=limit)


def authenticate_login(*, username: str, password: str, address: str, staff: bool = False) -> User:
    """Return the user these credentials name, or raise LoginLocked or Unauthenticated.

    `address` is the client's (`chatsite.clientaddr.client_address`); `staff=True` is the
    admin's door: only staff members get in, with the stricter staff budget.
    """
    buckets = _buckets(username, address, staff=staff)
    _peek(buckets)
    # The same work and answer whether or not the username exists: Django's backend
    # hashes the password for unknown usernames too.
    user = authenticate(None, username=username, password=password)
    if not isinstance(user, User) or (staff and not user.is_staff):
        _charge(buckets)
        raise Unauthenticated("Invalid username or password.")
    return user


def change_password(*, user: User, current_password: str, new_password: str, address: str) -> User:
    """Set a new password if `current_password` is right; return the user with it.

    A wrong current password is a failed login of this user from `address` (same
    buckets, same lockout: LoginLocked while locked). The new password must pass
    AUTH_PASSWORD_VALIDATORS (a 400 listing the problems in `details.errors`). The new
    hash revokes every token, ticket and session of the user and closes their sockets
    within `WS_AUTH_CHECK_INTERVAL`; the caller hands the changing device a new login.
    """
    buckets = _buckets(user.username, address, staff=False)
    _peek(buckets)
    if not user.check_password(current_password):
        _charge(buckets)
        raise WrongPassword()
    if not new_password:
        raise BadRequest("new_password is required.", details={"field": "new_password"})
    if new_password == current_password:
        raise BadRequest(
            "The new password is the same as the current one.",
            details={"field": "new_password"},
        )
    try:
        password_validation.validate_password(new_password, user=user)
    except ValidationError as exc:
        raise BadRequest(
            "This password is too weak.",
            details={"field": "new_password", "errors": list(exc.messages)},
        ) from exc
    user.set_password(new_password)
    with transaction.atomic():
        User.objects.filter(pk=user.pk).update(password=user.password)
        credentials.record(user_id=user.pk)
    return user


def sign_out_everywhere(user: User) -> User:
    """End every login of `user`: all token families, sessions, tickets and their sockets.

    One write: `login_epoch` goes up. Tokens carry the epoch they were issued in
    (`accounts.tokens`), the session hash includes it (`User._get_session_auth_hash`) and
    gateways compare it on every credential re-check, so everything issued before the
    bump is refused from now on, the caller's own login too.
    """
    with transaction.atomic():
        User.objects.filter(pk=user.pk).update(login_epoch=F("login_epoch") + 1)
        credentials.record(user_id=user.pk)
    user.refresh_from_db(fields=["login_epoch"])
    return user
