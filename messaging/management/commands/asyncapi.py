"""Print the AsyncAPI document of the WebSocket protocol (docs/asyncapi.json is its output)."""

import json
from typing import Any

from django.core.management.base import BaseCommand

from messaging import asyncapi


class Command(BaseCommand):
    """`manage.py asyncapi > docs/asyncapi.json`."""

    help = "Print the AsyncAPI 3 document of /ws/v1/, made from the wire definitions."

    def handle(self, *args: Any, **options: Any) -> None:
        """Print the document as indented JSON."""
        self.stdout.write(json.dumps(asyncapi.document(), indent=1, ensure_ascii=False))
