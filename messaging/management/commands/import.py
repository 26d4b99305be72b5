"""`manage.py import FOLDER`: load an export into an empty database (and its files).

Checks the data and every file against the export's manifest first, refuses a database
that already holds users or conversations, loads everything in one transaction (a
failure leaves the database as it was), then copies the files into storage. Prints each
model's running count as it goes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from messaging import portability
from messaging.errors import ImportRefused


class Command(BaseCommand):
    help = "Load an export (manage.py export) into an empty database."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("folder", type=Path, help="The folder manage.py export wrote.")

    def handle(self, *args: Any, **options: Any) -> None:
        def progress(line: str) -> None:
            self.stdout.write(line)
            self.stdout.flush()

        try:
            counts = portability.import_folder(options["folder"], progress)
        except ImportRefused as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"imported {sum(counts.values())} rows from {options['folder']}")
