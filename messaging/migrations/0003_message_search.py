"""Full-text and trigram search over message bodies (PostgreSQL only; SQLite searches with LIKE).

`search_vector` is a generated column the model does not declare, so ordinary message
reads never carry it; `messaging/search.py` reads it. On a large live table, build the
two indexes by hand first with `CREATE INDEX CONCURRENTLY` (same names; this migration
then skips them), because a plain CREATE INDEX blocks writes to messages while it runs.
Adding the generated column rewrites the table either way.
"""

from django.contrib.postgres.operations import TrigramExtension
from django.db import migrations

FORWARD = [
    "ALTER TABLE messaging_message ADD COLUMN IF NOT EXISTS search_vector tsvector "
    "GENERATED ALWAYS AS (to_tsvector('simple'::regconfig, body)) STORED",
    "CREATE INDEX IF NOT EXISTS message_search_vector_idx "
    "ON messaging_message USING gin (search_vector)",
    "CREATE INDEX IF NOT EXISTS message_body_trgm_idx "
    "ON messaging_message USING gin (body gin_trgm_ops)",
]
BACKWARD = [
    "DROP INDEX IF EXISTS message_body_trgm_idx",
    "DROP INDEX IF EXISTS message_search_vector_idx",
    "ALTER TABLE messaging_message DROP COLUMN IF EXISTS search_vector",
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
        ("messaging", "0002_conversation_member_seq"),
    ]

    operations = [
        TrigramExtension(),
        migrations.RunPython(_run(FORWARD), _run(BACKWARD)),
    ]
