"""`manage.py retention [--dry-run] [--conversation ID]`: apply the retention policy now.

What the beat task `retention_task` does every `RETENTION_INTERVAL`: delete messages
older than their conversation's retention (`Conversation.retention_days`, else
`DELETE_AFTER_DAYS`), leaving each conversation a notice that says why its history
ends. Prints a line per conversation that loses messages, as it goes, and a total.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from messaging import services
from messaging.models import Conversation


class Command(BaseCommand):
    help = "Delete messages older than their conversation's retention."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would go; delete nothing."
        )
        parser.add_argument(
            "--conversation", type=int, metavar="ID", help="Only this conversation."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        dry_run = bool(options["dry_run"])
        only = options["conversation"]
        if only is not None and not Conversation.objects.filter(pk=only).exists():
            raise CommandError(f"There is no conversation {only}.")
        ids = [only] if only is not None else services.conversations_with_retention(now)
        verb = "would remove" if dry_run else "removed"
        total = conversations = 0
        for conversation_id in ids:
            count = services.purge_expired(
                conversation_id=conversation_id, now=now, dry_run=dry_run
            )
            if count:
                conversations += 1
                total += count
                self.stdout.write(f"conversation {conversation_id}: {verb} {count} messages")
                self.stdout.flush()
        self.stdout.write(f"{verb} {total} messages in {conversations} conversations")
