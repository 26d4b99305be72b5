"""JWT pairs for native clients: short access, rotating refresh, revocation by login family.

Each login gets a family id (`fam` claim) that every access and refresh token of that
login carries, across rotations; logout revokes the family. Tokens also carry a hash of
the password (simplejwt's CHECK_REVOKE_TOKEN), so a password change revokes them all,
and the user's login epoch (`ep` claim), so "sign out everywhere" (a bump of
`User.login_epoch`) revokes them all too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import connection
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken
from rest_framework_simplejwt.utils import get_md5_hash_password

from accounts.models import RevokedTokenFamily, User
from chatsite.sql import RowReader, any_of, fetch_prepared

FAMILY_CLAIM = "fam"
EPOCH_CLAIM = "ep"


def issue_pair(user: User) -> dict[str, str]:
    """Return a new `{access, refresh}` pair for a fresh login (a new family)."""
    refresh = RefreshToken.for_user(user)
    refresh[FAMILY_CLAIM] = refresh[api_settings.JTI_CLAIM]
    refresh[EPOCH_CLAIM] = user.login_epoch
    return {"access": str(refresh.access_token), "refresh": str(refresh)}


def family_of(token: AccessToken | RefreshToken) -> str | None:
    """Return the login family a token belongs to, if it carries one."""
    value = token.get(FAMILY_CLAIM)
    return str(value) if value else None


def epoch_of(token: AccessToken | RefreshToken) -> int:
    """Return the login epoch a token was issued in (0 for tokens older than the claim)."""
    value = token.get(EPOCH_CLAIM, 0)
    return value if isinstance(value, int) else -1


def revoked_families(families: Iterable[str]) -> set[str]:
    """Return which of `families` were revoked by a logout."""
    wanted = {f for f in families if f}
    if not wanted:
        return set()
    condition, params = any_of("family", wanted)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT family FROM {RevokedTokenFamily._meta.db_table} WHERE {condition}",  # noqa: S608
            params,
        )
        return {family for (family,) in cursor}


def token_still_valid_for(token: AccessToken | RefreshToken, user: User) -> bool:
    """Return whether `user` still stands behind `token` (active, same password, not revoked)."""
    if not user.is_active or epoch_of(token) != user.login_epoch:
        return False
    if token.get(api_settings.REVOKE_TOKEN_CLAIM) != get_md5_hash_password(user.password):
        return False
    family = family_of(token)
    return not (family and revoked_families([family]))


# The user, and whether the token's login family was revoked (a logout), in one query.
_USERS = RowReader(User)
_USER_BEHIND_SQL = f"""
SELECT {_USERS.columns("u")}, EXISTS (
    SELECT 1 FROM {RevokedTokenFamily._meta.db_table} f WHERE f.family = %s
) AS family_revoked
FROM {User._meta.db_table} u WHERE u.id = %s
"""  # noqa: S608 - table names are ours; values are parameters


def user_behind(token: AccessToken) -> User | None:
    """Return the user who still stands behind `token` (`token_still_valid_for`), in one query.

    The handshake's check: the user and whether the token's login was logged out are read
    together, in SQL written once (two ORM queries cost a connect two compiles and two
    round trips; one ORM query still cost a compile per connect), and turned into a user
    by a `RowReader` (a raw queryset worked out its columns and converters again on every
    connect: a twentieth of the gateways' CPU in a reconnect storm).
    """
    try:
        user_id = int(token.get(api_settings.USER_ID_CLAIM))
    except (TypeError, ValueError):
        return None
    family = family_of(token) or ""
    rows = fetch_prepared(_USER_BEHIND_SQL, [family, user_id])
    if not rows:
        return None
    user, (family_revoked,) = _USERS.read(rows[0])
    if not user.is_active or epoch_of(token) != user.login_epoch:
        return None
    if token.get(api_settings.REVOKE_TOKEN_CLAIM) != get_md5_hash_password(user.password):
        return None
    if family_revoked:
        return None
    return user


def revoke(refresh_token: str, user: User) -> None:
    """Log out one login: blacklist the refresh token and revoke its whole family."""
    try:
        refresh = RefreshToken(refresh_token)  # type: ignore[arg-type]
    except TokenError:
        return
    # simplejwt 5.5 writes the user id claim as a string.
    if str(refresh.get(api_settings.USER_ID_CLAIM)) != str(user.pk):
        return
    refresh.blacklist()
    family = family_of(refresh)
    if family:
        RevokedTokenFamily.objects.get_or_create(family=family, defaults={"user": user})


def access_claims(raw: str) -> dict[str, Any]:
    """Return the claims of a valid access token, else raise TokenError."""
    return dict(AccessToken(raw).payload)  # type: ignore[arg-type]
