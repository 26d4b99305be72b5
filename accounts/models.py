"""The user model: Django's user plus display name, sticky status and last seen."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import AbstractUser
from django.db import models
from django.utils import timezone
from django.utils.crypto import salted_hmac


def status_at(status: str, until: datetime | None, now: datetime | None = None) -> str:
    """Return the status in force at `now`: a status whose `until` has passed is available.

    The one rule for reading a sticky status: every reader (profile, presence,
    notifications) goes through it, so an expired status is available everywhere
    even before the sweep that clears it (`accounts.services.expire_statuses`) ran.
    """
    if until is not None and until <= (now or timezone.now()):
        return User.Status.AVAILABLE
    return status


# The squares stored for each picture, in pixels: what lists and headers show (256 for
# high-density screens, 64 for small ones).
AVATAR_SIZES = (256, 64)


def avatar_path(avatar: str, size: int) -> str:
    """Return the URL of a stored picture (`User.avatar`, "<sha256>.<ext>") at `size`."""
    stem, _, ext = avatar.partition(".")
    return f"/api/v1/avatars/{stem}-{size}.{ext}"


class User(AbstractUser):
    """A person who chats; `status` is the sticky do-not-disturb choice."""

    class Status(models.TextChoices):
        AVAILABLE = "available", "Available"
        BUSY = "busy", "Busy"

    class GroupAdds(models.TextChoices):
        """Who may add this user to a group without asking first."""

        EVERYONE = "everyone", "Everyone"
        CONTACTS = "contacts", "My contacts"
        NOBODY = "nobody", "Nobody"

    display_name = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.AVAILABLE)
    # When a busy status ends by itself (null: when the user changes it).
    status_until = models.DateTimeField(null=True, blank=True)
    # Bumped by "sign out everywhere": tokens carry it (claim `ep`) and the session hash
    # includes it, so every login made before the bump stops working.
    login_epoch = models.PositiveIntegerField(default=0)
    # An add by someone this allows is a membership; any other add is a request.
    # Everyone by default, as in the messengers people know; direct chats from
    # strangers are requests whatever this says.
    group_adds = models.CharField(
        max_length=8, choices=GroupAdds.choices, default=GroupAdds.EVERYONE
    )
    last_seen = models.DateTimeField(null=True, blank=True)
    # The profile picture: the content hash and extension of its stored squares
    # (`accounts.avatars`), "" for none (clients show initials).
    avatar = models.CharField(max_length=80, blank=True, default="")
    # Missed-message emails (when `email` is set); turned off by the one-click unsubscribe.
    email_notifications = models.BooleanField(default=True)
    # The display name mixes scripts that look alike (`alice` spelled with a Cyrillic `a`, U+0430):
    # allowed, but shown to staff, who check it does not pass for someone else.
    name_flagged = models.BooleanField(
        default=False, help_text="The display name mixes look-alike scripts; check it."
    )

    class Meta(AbstractUser.Meta):  # type: ignore[name-defined,misc]
        indexes = [
            # The expiry sweep reads only the few users whose status has an end.
            models.Index(
                fields=["status_until"],
                name="user_status_until",
                condition=models.Q(status_until__isnull=False),
            )
        ]

    def __str__(self) -> str:
        return self.username

    @property
    def name(self) -> str:
        """Return the name to show: the display name, else the username."""
        return self.display_name or self.username

    @property
    def avatar_url(self) -> str | None:
        """Return where the 256 x 256 picture is served, or None without one."""
        return avatar_path(self.avatar, 256) if self.avatar else None

    @property
    def current_status(self) -> str:
        """Return the sticky status in force now (`status_at`)."""
        return status_at(self.status, self.status_until)

    def _get_session_auth_hash(self, secret: str | None = None) -> str:
        """Return Django's session hash, which also changes with `login_epoch`.

        Epoch 0 keeps Django's own hash, so sessions made before this field existed live on.
        """
        if not self.login_epoch:
            return str(super()._get_session_auth_hash(secret=secret))  # type: ignore[misc]
        key_salt = "django.contrib.auth.models.AbstractBaseUser.get_session_auth_hash"
        value = f"{self.password}|epoch:{self.login_epoch}"
        return salted_hmac(key_salt, value, secret=secret, algorithm="sha256").hexdigest()


class RevokedTokenFamily(models.Model):
    """A login's token family revoked by logout: its refresh and access tokens stop working.

    Every token pair issued at one login shares a `fam` claim that survives refresh
    rotation; gateways close sockets whose family appears here.
    """

    family = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="+")
    revoked_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"token family {self.family} of user {self.user_id}"


class CredentialChange(models.Model):
    """A change that may end logins, so gateways re-check only the sockets it names.

    Written with the change (a password, sign out everywhere, a logout, a deactivation,
    a session ended); gateways read the recent ones every `WS_AUTH_CHECK_INTERVAL`
    (`accounts.credentials`). Housekeeping deletes rows older than an hour.
    """

    # Plain values, not foreign keys: the user or the session may be gone already.
    user_id = models.BigIntegerField(null=True, blank=True)
    session_key = models.CharField(max_length=40, blank=True)
    at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"credential change of user {self.user_id} at {self.at:%Y-%m-%d %H:%M:%S}"
