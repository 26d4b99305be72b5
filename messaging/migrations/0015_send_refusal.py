"""The function a send's statement calls to undo itself when it is refused (PostgreSQL).

A send outside a transaction is one statement that commits as it ends
(`services._STORE_MESSAGE_SQL`). It takes the conversation's next seq before it learns,
under that lock, that the sender may not post; it then calls `chat_refuse_send()`,
whose error ends the statement and so undoes everything it wrote, the seq included.
SQLite (the embedded default) runs sends in a transaction and needs no function.
"""

from django.db import migrations

FORWARD = [
    "CREATE OR REPLACE FUNCTION chat_refuse_send() RETURNS bigint LANGUAGE plpgsql"
    " VOLATILE AS $$ BEGIN RAISE EXCEPTION 'send refused' USING ERRCODE = 'CHS01'; END $$",
]
BACKWARD = ["DROP FUNCTION IF EXISTS chat_refuse_send()"]


def _run(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor != "postgresql":
            return
        for sql in statements:
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("messaging", "0014_archive_segments"),
    ]

    operations = [
        migrations.RunPython(_run(FORWARD), _run(BACKWARD)),
    ]
