"""Print a new VAPID key pair for Web Push, as the settings take it."""

from typing import Any

from django.core.management.base import BaseCommand

from messaging.push.webpush import generate_vapid_keys


class Command(BaseCommand):
    """`manage.py vapid_keys`: print WEBPUSH_VAPID_PUBLIC_KEY and WEBPUSH_VAPID_PRIVATE_KEY."""

    help = (
        "Print a new VAPID key pair (base64url raw P-256) for WEBPUSH_VAPID_PUBLIC_KEY and "
        "WEBPUSH_VAPID_PRIVATE_KEY. Keep the private key secret; changing the pair makes "
        "every browser subscribe again."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        """Print the pair as environment assignments."""
        public, private = generate_vapid_keys()
        self.stdout.write(f"WEBPUSH_VAPID_PUBLIC_KEY={public}")
        self.stdout.write(f"WEBPUSH_VAPID_PRIVATE_KEY={private}")
