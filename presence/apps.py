"""The presence app: who is online, away, busy or offline."""

from django.apps import AppConfig


class PresenceConfig(AppConfig):
    """Configure the presence app."""

    name = "presence"
