"""`manage.py archive [--dry-run] [--conversation ID] [--older-than DAYS]`: archive now.

What the beat task `archive_task` does every `ARCHIVE_INTERVAL`: move the messages older
than `ARCHIVE_AFTER_DAYS` out of the table into segments in the archive storage
(`messaging.archive`). Prints, as it goes, a progress line (messages moved of those
counted at the start, and the rate) and a line per conversation, then a total. Stopped
at any point (Ctrl-C, a kill), it loses nothing, and the next run resumes.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from messaging import archive
from messaging.models import Conversation


class Command(BaseCommand):
    help = "Move messages older than ARCHIVE_AFTER_DAYS into the archive storage."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would move; move nothing."
        )
        parser.add_argument(
            "--conversation", type=int, metavar="ID", help="Only this conversation."
        )
        parser.add_argument(
            "--older-than",
            type=int,
            metavar="DAYS",
            help="Archive messages older than DAYS (default: ARCHIVE_AFTER_DAYS).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["older_than"]
        if days is None:
            days = settings.ARCHIVE_AFTER_DAYS
            if not days:
                raise CommandError(
                    "Archiving is off: set ARCHIVE_AFTER_DAYS, or give --older-than DAYS."
                )
        if days < 0:
            raise CommandError("--older-than takes a number of days, 0 or more.")
        cutoff = timezone.now() - timedelta(days=days)
        only = options["conversation"]
        if only is not None and not Conversation.objects.filter(pk=only).exists():
            raise CommandError(f"There is no conversation {only}.")
        ids = [only] if only is not None else archive.conversations_to_archive(cutoff)
        counts = {pk: archive.count_archivable(pk, cutoff) for pk in ids}
        counts = {pk: n for pk, n in counts.items() if n}
        total = sum(counts.values())
        if options["dry_run"]:
            for pk, n in counts.items():
                self.stdout.write(f"conversation {pk}: would archive {n} messages")
            self.stdout.write(
                f"would archive {total} messages in {len(counts)} conversations "
                f"(older than {days} days)"
            )
            return
        self.stdout.write(f"archiving {total} messages in {len(counts)} conversations")
        started = time.monotonic()
        moved = 0

        def progress(count: int) -> None:
            nonlocal moved
            moved += count
            rate = moved / max(time.monotonic() - started, 1e-6)
            share = 100 * moved / total if total else 100.0
            self.stdout.write(f"  {moved}/{total} messages ({share:.0f}%), {rate:.0f}/s")
            self.stdout.flush()

        conversations = 0
        for pk in counts:
            count = archive.archive_conversation(pk, cutoff=cutoff, progress=progress)
            if count:
                conversations += 1
                self.stdout.write(f"conversation {pk}: archived {count} messages")
        elapsed = time.monotonic() - started
        self.stdout.write(
            f"archived {moved} messages in {conversations} conversations in {elapsed:.1f} s"
        )
