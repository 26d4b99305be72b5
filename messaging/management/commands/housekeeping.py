"""`manage.py housekeeping [--dry-run]`: what the hourly beat task does, now.

Deletes refresh-token records past their expiry, expired browser sessions, revoked login
families whose tokens have all expired, and uploads that no message held within
`CHAT_ORPHAN_UPLOAD_HOURS` (with their files). Prints each step's count as it finishes.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from messaging import housekeeping


class Command(BaseCommand):
    help = "Delete expired tokens and sessions, spent revocations and uploads nobody sent."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would go; delete nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        dry_run = bool(options["dry_run"])
        verb = "would delete" if dry_run else "deleted"

        def report(name: str, count: int) -> None:
            self.stdout.write(f"{name.replace('_', ' ')}: {verb} {count}")
            self.stdout.flush()

        housekeeping.run(now=timezone.now(), dry_run=dry_run, report=report)
