"""Housekeeping of the account tables: rows that can no longer matter are deleted.

Run by the `housekeeping` beat task and `manage.py housekeeping`. Each function deletes
in batches (short transactions, no long locks on busy tables) and returns how many rows
it removed, or would remove with `dry_run`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.contrib.sessions.models import Session
from django.db.models import Model, QuerySet
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.token_blacklist.models import OutstandingToken

from accounts import credentials
from accounts.models import RevokedTokenFamily

# Rows deleted per statement.
BATCH = 1000
# Tokens are checked with a little leeway for clocks; keep rows that long past their end.
CLOCK_MARGIN = timedelta(hours=1)


def _delete_in_batches(rows: QuerySet[Model], *, dry_run: bool) -> int:
    if dry_run:
        return rows.count()
    deleted = 0
    while True:
        ids = list(rows.values_list("pk", flat=True)[:BATCH])
        if not ids:
            return deleted
        rows.model._default_manager.filter(pk__in=ids).delete()
        deleted += len(ids)


def delete_expired_tokens(*, now: datetime, dry_run: bool = False) -> int:
    """Delete the records of refresh tokens past their expiry (and their blacklist rows).

    An expired refresh token is refused by its `exp` claim alone; its row only mattered
    while it could still be presented.
    """
    rows = OutstandingToken.objects.filter(expires_at__lt=now - CLOCK_MARGIN)
    return _delete_in_batches(rows, dry_run=dry_run)


def delete_expired_sessions(*, now: datetime, dry_run: bool = False) -> int:
    """Delete browser sessions past their expiry date (Django never reads them again)."""
    return _delete_in_batches(Session.objects.filter(expire_date__lt=now), dry_run=dry_run)


def delete_stale_token_families(*, now: datetime, dry_run: bool = False) -> int:
    """Delete revoked login families whose every token has expired.

    A revoked family issues no new token, so its newest refresh token was issued before
    `revoked_at` and expires within `REFRESH_TOKEN_LIFETIME` of it; an access token of
    the family expires sooner still. Past that, the row refuses nothing the expiry does
    not already refuse.
    """
    lifetime = max(api_settings.REFRESH_TOKEN_LIFETIME, api_settings.ACCESS_TOKEN_LIFETIME)
    rows = RevokedTokenFamily.objects.filter(revoked_at__lt=now - lifetime - CLOCK_MARGIN)
    return _delete_in_batches(rows, dry_run=dry_run)


def delete_read_credential_changes(*, now: datetime, dry_run: bool = False) -> int:
    """Delete credential changes every gateway has read long since (`accounts.credentials`)."""
    return credentials.delete_old(now=now, dry_run=dry_run)
