"""The messaging app: conversations, their log of messages, receipts and attachments."""

from django.apps import AppConfig


class MessagingConfig(AppConfig):
    """Configure the messaging app."""

    name = "messaging"
