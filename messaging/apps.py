"""The messaging app: conversations, their log of messages, receipts and attachments."""

from django.apps import AppConfig


class MessagingConfig(AppConfig):
    """Configure the messaging app."""

    name = "messaging"

    def ready(self) -> None:
        """Connect the receivers that hand work to the worker (`messaging.tasks`)."""
        from messaging import tasks  # noqa: F401 - importing connects its receivers
