"""Trigram indexes for the user directory (`GET /users?q=`), PostgreSQL only.

The directory matches `username` and `display_name` with icontains, which compiles to
`UPPER(col::text) LIKE UPPER('%q%')`; these indexes serve exactly those expressions.
"""

from django.contrib.postgres.operations import TrigramExtension
from django.db import migrations

FORWARD = [
    "CREATE INDEX IF NOT EXISTS user_username_trgm_idx "
    "ON accounts_user USING gin ((UPPER(username::text)) gin_trgm_ops)",
    "CREATE INDEX IF NOT EXISTS user_display_name_trgm_idx "
    "ON accounts_user USING gin ((UPPER(display_name::text)) gin_trgm_ops)",
]
BACKWARD = [
    "DROP INDEX IF EXISTS user_display_name_trgm_idx",
    "DROP INDEX IF EXISTS user_username_trgm_idx",
]


def _run(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for sql in statements:
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_revoked_token_family"),
    ]

    operations = [
        TrigramExtension(),
        migrations.RunPython(_run(FORWARD), _run(BACKWARD)),
    ]
