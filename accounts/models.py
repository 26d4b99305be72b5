"""The user model: Django's user plus display name, sticky status and last seen."""

from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    """A person who chats; `status` is the sticky do-not-disturb choice."""

    class Status(models.TextChoices):
        AVAILABLE = "available", "Available"
        BUSY = "busy", "Busy"

    display_name = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.AVAILABLE)
    last_seen = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.username

    @property
    def name(self) -> str:
        """Return the name to show: the display name, else the username."""
        return self.display_name or self.username
