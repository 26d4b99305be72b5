"""The presence app: who is online, away, busy or offline."""

from django.apps import AppConfig


class PresenceConfig(AppConfig):
    """Configure the presence app."""

    name = "presence"

    def ready(self) -> None:
        """Follow sticky status changes made outside a socket (REST)."""
        from accounts.services import status_changed
        from presence.services import on_status_changed

        status_changed.connect(on_status_changed, dispatch_uid="presence-status")
