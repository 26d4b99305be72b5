"""The user model: Django's user plus display name, sticky status and last seen."""

from django.contrib.auth.models import AbstractUser
from django.db import models


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
    # An add by someone this allows is a membership; any other add is a request.
    # Everyone by default, as in the messengers people know; direct chats from
    # strangers are requests whatever this says.
    group_adds = models.CharField(
        max_length=8, choices=GroupAdds.choices, default=GroupAdds.EVERYONE
    )
    last_seen = models.DateTimeField(null=True, blank=True)
    # Missed-message emails (when `email` is set); turned off by the one-click unsubscribe.
    email_notifications = models.BooleanField(default=True)
    # The display name mixes scripts that look alike (`alice` spelled with a Cyrillic `a`, U+0430):
    # allowed, but shown to staff, who check it does not pass for someone else.
    name_flagged = models.BooleanField(
        default=False, help_text="The display name mixes look-alike scripts; check it."
    )

    def __str__(self) -> str:
        return self.username

    @property
    def name(self) -> str:
        """Return the name to show: the display name, else the username."""
        return self.display_name or self.username


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
