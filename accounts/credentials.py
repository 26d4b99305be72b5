"""Changes that may end logins, for gateways to re-check only the sockets they concern.

Everything that can end a login writes a `CredentialChange` in its own transaction: a
password change, "sign out everywhere", a user saved deactivated (the admin too), a
token family logged out, a session deleted (a browser's logout). Every
`WS_AUTH_CHECK_INTERVAL` a gateway reads the changes of the last moments (one indexed
query, whatever its number of sockets) and re-checks the sockets of those users and
sessions; every `WS_AUTH_FULL_CHECK_INTERVAL` it re-checks all its sockets, which also
catches what no write announces (a session reaching its expiry date).

The read overlaps the previous one by `OVERLAP`, so a change whose transaction
committed a little after its timestamp is still seen; seeing one twice only re-checks
a socket twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.contrib.sessions.models import Session
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from accounts.models import CredentialChange, RevokedTokenFamily, User

# How far each read reaches back before the previous one.
OVERLAP = timedelta(seconds=10)
# The fields of a user that a socket's credential depends on.
CREDENTIAL_FIELDS = frozenset({"password", "is_active", "login_epoch"})


def record(*, user_id: int | None = None, session_key: str = "") -> None:
    """Note that the logins of `user_id` (or the session `session_key`) may have ended."""
    CredentialChange.objects.create(user_id=user_id, session_key=session_key, at=timezone.now())


@dataclass
class Changes:
    """The users and sessions changed since a gateway last read, and where it read to."""

    until: datetime
    users: set[int] = field(default_factory=set)
    sessions: set[str] = field(default_factory=set)


def changes_since(since: datetime) -> Changes:
    """Return the changes recorded from `since - OVERLAP` on."""
    until = timezone.now()
    changes = Changes(until)
    for user_id, session_key in CredentialChange.objects.filter(
        at__gte=since - OVERLAP
    ).values_list("user_id", "session_key"):
        if user_id is not None:
            changes.users.add(user_id)
        if session_key:
            changes.sessions.add(session_key)
    return changes


def _user_saved(sender: Any, instance: User, update_fields: Any = None, **kwargs: Any) -> None:
    if update_fields is not None and not CREDENTIAL_FIELDS & set(update_fields):
        return  # a login's `last_login`, a profile edit: no login ends
    if kwargs.get("created") or kwargs.get("raw"):
        return
    record(user_id=instance.pk)


def _user_deleted(sender: Any, instance: User, **kwargs: Any) -> None:
    record(user_id=instance.pk)


def _family_revoked(sender: Any, instance: RevokedTokenFamily, **kwargs: Any) -> None:
    if kwargs.get("created"):
        record(user_id=instance.user_id)


def _session_deleted(sender: Any, instance: Session, **kwargs: Any) -> None:
    record(session_key=instance.session_key)


def connect_signals() -> None:
    """Record the changes that `save()` and `delete()` make (called once, at start)."""
    post_save.connect(_user_saved, sender=User, dispatch_uid="credential-user-saved")
    post_delete.connect(_user_deleted, sender=User, dispatch_uid="credential-user-deleted")
    post_save.connect(
        _family_revoked, sender=RevokedTokenFamily, dispatch_uid="credential-family-revoked"
    )
    post_delete.connect(_session_deleted, sender=Session, dispatch_uid="credential-session")


def delete_old(*, now: datetime, dry_run: bool = False) -> int:
    """Delete changes every gateway has read long ago (older than an hour)."""
    old = CredentialChange.objects.filter(at__lt=now - timedelta(hours=1))
    if dry_run:
        return old.count()
    deleted, _ = old.delete()
    return deleted
