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
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import authenticate

from accounts.models import User
from chatsite import metrics, ratelimit
from chatsite.clientaddr import address_group
from chatsite.errors import DomainError, RetryInMinutes


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


def authenticate_login(*, username: str, password: str, address: str, staff: bool = False) -> User:
    """Return the user these credentials name, or raise LoginLocked or Unauthenticated.

    `address` is the client's (`chatsite.clientaddr.client_address`); `staff=True` is the
    admin's door: only staff members get in, with the stricter staff budget.
    """
    window = float(settings.LOGIN_LOCKOUT_SECONDS)
    buckets = _buckets(username, address, staff=staff)
    peeks = [ratelimit.take(k, rate=limit / window, burst=limit, cost=0) for k, limit in buckets]
    waits = [peek.retry_after for peek in peeks if not peek.allowed]
    if waits:
        metrics.count_rate_limited("login")
        raise LoginLocked(max(waits))
    # The same work and answer whether or not the username exists: Django's backend
    # hashes the password for unknown usernames too.
    user = authenticate(None, username=username, password=password)
    if not isinstance(user, User) or (staff and not user.is_staff):
        for key, limit in buckets:
            ratelimit.charge(key, rate=limit / window, burst=limit)
        raise Unauthenticated("Invalid username or password.")
    return user
