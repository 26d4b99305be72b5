"""`manage.py export OUT [--conversation ID | --user ID]`: write an export folder.

The whole site by default, or one conversation, or one user's own data (what they can
also download from the web app). Layout and what is left out: `messaging.portability`
and docs/operations.md, "Export and import". Prints each model's running count and the
files copied as it goes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import User
from messaging import portability
from messaging.errors import ImportRefused
from messaging.models import Conversation


class Command(BaseCommand):
    help = "Export the site, a conversation or a user's data as JSON lines and files."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("out", type=Path, help="A new (or empty) folder to write.")
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--conversation", type=int, metavar="ID", help="Only this conversation.")
        which.add_argument("--user", type=int, metavar="ID", help="Only this user's own data.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["conversation"] is not None:
            if not Conversation.objects.filter(pk=options["conversation"]).exists():
                raise CommandError(f"There is no conversation {options['conversation']}.")
            scope = portability.conversation_scope(options["conversation"])
        elif options["user"] is not None:
            if not User.objects.filter(pk=options["user"]).exists():
                raise CommandError(f"There is no user {options['user']}.")
            scope = portability.user_scope(options["user"])
        else:
            scope = portability.site_scope()

        def progress(line: str) -> None:
            self.stdout.write(line)
            self.stdout.flush()

        try:
            counts = portability.export_to_folder(scope, options["out"], progress)
        except ImportRefused as exc:
            raise CommandError(exc.message) from exc
        total = sum(counts.values())
        self.stdout.write(f"exported {scope.name}: {total} rows to {options['out']}")
