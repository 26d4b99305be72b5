"""The accounts app: the custom user model."""

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Configure the accounts app."""

    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Record the writes that may end logins (`accounts.credentials`)."""
        from accounts import credentials

        credentials.connect_signals()
