"""The messaging app: conversations, their log of messages, receipts and attachments."""

from django.apps import AppConfig


class MessagingConfig(AppConfig):
    """Configure the messaging app."""

    name = "messaging"

    def ready(self) -> None:
        """Connect the receivers: work for the worker (`messaging.tasks`), `user.updated`."""
        from accounts.services import profile_changed
        from messaging import tasks  # noqa: F401 - importing connects its receivers
        from messaging.services import announce_user_updated

        def on_profile_changed(sender: object, *, user_id: int, **kwargs: object) -> None:
            announce_user_updated(user_id)

        profile_changed.connect(
            on_profile_changed, dispatch_uid="messaging-user-updated", weak=False
        )
