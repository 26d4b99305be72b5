"""`manage.py partition_messages`: the plain message table becomes PARTITION BY HASH.

Each test starts from the plain layout and converts it inside the test's transaction:
PostgreSQL's DDL is transactional, so the rollback at the end of the test puts the plain
table back (the last test checks that it did). The embedded SQLite default is refused
(tests/embedded); these tests run on PostgreSQL only, as the whole suite does.
"""

import io
import math
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from accounts.models import User
from messaging import selectors, services
from messaging.errors import Conflict
from messaging.management.commands import partition_messages
from messaging.models import (
    Attachment,
    Conversation,
    Message,
    Notification,
    NotificationDue,
)

pytestmark = pytest.mark.django_db

TABLE = Message._meta.db_table
THROUGH = Message.attachments.through._meta.db_table


@pytest.fixture(autouse=True)
def _plain_layout(partitioned_messages: bool, settings: Any) -> None:
    if partitioned_messages:
        pytest.skip("this run's message table is partitioned already (CHAT_PARTITIONED_MESSAGES)")
    settings.CHAT_SEND_RATE = settings.CHAT_SEND_BURST = 1000.0


def send(user: User, conversation: Conversation, body: str, **extra: Any) -> Message:
    return services.send_message(
        sender=user,
        conversation_id=conversation.pk,
        client_msg_id=extra.pop("cmid", uuid.uuid4()),
        body=body,
        **extra,
    ).message


def dump(table: str = TABLE) -> list[tuple[Any, ...]]:
    """Return every row of a message table, every column, in id order."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table} ORDER BY id")  # noqa: S608 - our table names
        return list(cursor.fetchall())


def rows(sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


def partition(**options: Any) -> str:
    out = io.StringIO()
    call_command("partition_messages", stdout=out, **options)
    return out.getvalue()


def attachment(uploader: User, name: str) -> Attachment:
    return Attachment.objects.create(
        uploader=uploader,
        file=f"attachments/{name}",
        filename=name,
        content_type="text/plain",
        size=3,
    )


@pytest.fixture
def history(ana: User, bo: User, cy: User) -> dict[str, Any]:
    """Three conversations with texts, system lines, edits, deletes, files, notifications."""
    group = services.create_group(creator=ana, title="Plans", member_ids=[bo.pk, cy.pk])
    with_bo = services.create_direct_conversation(user=ana, other_user_id=bo.pk)[0]
    with_cy = services.create_direct_conversation(user=cy, other_user_id=ana.pk)[0]
    messages = []
    for i in range(7):
        messages.append(send(ana, group, f"group message {i}"))
        messages.append(send(bo, with_bo, f"direct message {i}"))
        messages.append(send(cy, with_cy, f"other direct {i}"))
    files = [attachment(ana, "a.txt"), attachment(ana, "b.txt")]
    with_files = send(ana, group, "two files", attachment_ids=[f.pk for f in files])
    services.edit_message(
        user=ana, conversation_id=group.pk, message_id=messages[0].pk, body="edited"
    )
    services.delete_message(user=bo, conversation_id=with_bo.pk, message_id=messages[1].pk)
    services.rename_conversation(actor=ana, conversation_id=group.pk, title="New plans")
    for message in (messages[3], with_files):
        Notification.objects.create(
            user=bo,
            conversation_id=message.conversation_id,
            message=message,
            seq=message.seq,
            channel=Notification.Channel.EMAIL,
            decision=Notification.Decision.SENT,
        )
    return {"group": group, "with_bo": with_bo, "with_cy": with_cy, "with_files": with_files}


def test_the_table_is_partitioned_with_every_row_and_the_id_sequence_kept(
    ana: User, bo: User, cy: User, history: dict[str, Any]
) -> None:
    group, with_bo = history["group"], history["with_bo"]
    before = dump()
    links = rows(f"SELECT message_id, attachment_id FROM {THROUGH} ORDER BY 1, 2")  # noqa: S608
    notifications = list(Notification.objects.values_list("message_id", "user_id"))
    dues = list(NotificationDue.objects.order_by("pk").values_list("message_id", flat=True))
    assert len(before) > 20 and links and notifications
    old_max = max(row[0] for row in before)
    batch = 7

    output = partition(partitions=5, batch=batch)

    # Every column of every row, and the old table kept beside it.
    assert dump() == before
    assert dump("messaging_message_unpartitioned") == before
    assert rows(f"SELECT message_id, attachment_id FROM {THROUGH} ORDER BY 1, 2") == links  # noqa: S608
    assert list(Notification.objects.values_list("message_id", "user_id")) == notifications
    assert list(NotificationDue.objects.order_by("pk").values_list("message_id", flat=True)) == dues
    # Hash-partitioned by conversation_id, five partitions, the keys it needs.
    assert rows(
        "SELECT p.partstrat, a.attname FROM pg_partitioned_table p "
        "JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0] "
        "WHERE p.partrelid = %s::regclass",
        TABLE,
    ) == [("h", "conversation_id")]
    assert rows("SELECT count(*) FROM pg_inherits WHERE inhparent = %s::regclass", TABLE) == [(5,)]
    keys = dict(
        rows(
            "SELECT ix.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
            "JOIN pg_class ix ON ix.oid = i.indexrelid WHERE i.indrelid = %s::regclass",
            TABLE,
        )
    )
    assert "(conversation_id, id)" in keys["messaging_message_pkey"]
    assert "UNIQUE" in keys["message_seq_unique"]
    assert "(conversation_id, sender_id, client_msg_id)" in keys["message_client_msg_id_unique"]
    assert "(sender_id, client_msg_id)" in keys["message_client_msg_id_idx"]
    assert "btree (id)" in keys["message_id_idx"]
    # No foreign key points at the partitioned table; its own two (conversation, sender) stay.
    assert rows("SELECT count(*) FROM pg_constraint WHERE confrelid = %s::regclass", TABLE) == [
        (0,)
    ]
    assert rows(
        "SELECT count(*) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'f'", TABLE
    ) == [(2,)]
    # Progress: a line per batch, then the swap.
    progress = [line for line in output.splitlines() if line.startswith("copied ") and "/" in line]
    assert len(progress) == math.ceil(len(before) / batch)
    assert progress[-1].startswith(f"copied {len(before)} / {len(before)} rows (100%)")
    assert "swapped the tables" in output

    # New messages continue the ids; replays still find their original.
    cmid = uuid.uuid4()
    new = send(ana, group, "after the move", cmid=cmid)
    assert new.pk == old_max + 1
    again = services.send_message(
        sender=ana, conversation_id=group.pk, client_msg_id=cmid, body="after the move"
    )
    assert (again.created, again.message.pk) == (False, new.pk)
    with pytest.raises(Conflict):
        services.send_message(sender=ana, conversation_id=group.pk, client_msg_id=cmid, body="no")
    # The same id in another conversation is a second message (docs/scaling.md).
    other = services.send_message(
        sender=ana, conversation_id=with_bo.pk, client_msg_id=cmid, body="after the move"
    )
    assert other.created and other.message.conversation_id == with_bo.pk
    assert Message.objects.filter(sender=ana, client_msg_id=cmid).count() == 2

    # Fetching, syncing, editing and deleting work on the partitioned table.
    page = selectors.list_messages_for_user(user=bo, conversation_id=group.pk, after=0)
    assert sorted(m.seq for m in page.messages) == [*range(1, 10), 11, 12]  # 10: an edit
    assert page.upto == new.seq == Conversation.objects.get(pk=group.pk).last_seq
    fetched = {m.pk: m for m in page.messages}
    assert fetched[new.pk].body == "after the move"
    files = fetched[history["with_files"].pk].attachments.all()
    assert sorted(a.filename for a in files) == ["a.txt", "b.txt"]
    older = selectors.list_messages_for_user(user=bo, conversation_id=group.pk, before=3, limit=2)
    assert [m.seq for m in older.messages] == [1, 2]
    unread = {v.id: v.unread for v in selectors.list_conversations_for_user(user=bo)}
    assert unread[group.pk] == 9
    edited = services.edit_message(
        user=ana, conversation_id=group.pk, message_id=new.pk, body="changed"
    )
    services.delete_message(user=ana, conversation_id=group.pk, message_id=history["with_files"].pk)
    changes = selectors.list_messages_for_user(user=bo, conversation_id=group.pk, after=new.seq)
    assert [(m.pk, m.body, m.deleted) for m in changes.messages] == [
        (new.pk, "changed", False),
        (history["with_files"].pk, "", True),
    ]
    assert edited.version < changes.messages[-1].version
    assert not rows(f"SELECT 1 FROM {THROUGH} WHERE message_id = %s", history["with_files"].pk)  # noqa: S608

    # A second run changes nothing and says so.
    assert "partitioned already" in partition(partitions=5)
    assert rows("SELECT count(*) FROM pg_inherits WHERE inhparent = %s::regclass", TABLE) == [(5,)]


def test_deleting_a_conversation_cascades_through_the_orm_without_foreign_keys(
    ana: User, history: dict[str, Any]
) -> None:
    group = history["group"]
    assert "rows not counted (--skip-count)" in partition(
        partitions=3, drop_old=True, skip_count=True
    )
    assert rows("SELECT to_regclass('messaging_message_unpartitioned')") == [(None,)]
    ids = list(Message.objects.filter(conversation=group).values_list("pk", flat=True))
    assert NotificationDue.objects.filter(message_id__in=ids).exists()
    assert Notification.objects.filter(message_id__in=ids).exists()
    assert rows(f"SELECT count(*) FROM {THROUGH} WHERE message_id = ANY(%s)", ids) == [(2,)]  # noqa: S608
    others = Message.objects.exclude(conversation=group).count()

    Conversation.objects.get(pk=group.pk).delete()

    assert not Message.objects.filter(pk__in=ids).exists()
    assert not NotificationDue.objects.filter(message_id__in=ids).exists()
    assert not Notification.objects.filter(message_id__in=ids).exists()
    assert rows(f"SELECT count(*) FROM {THROUGH} WHERE message_id = ANY(%s)", ids) == [(0,)]  # noqa: S608
    assert Message.objects.count() == others
    assert Attachment.objects.count() == 2  # files outlive the messages they were posted in


def test_writes_made_while_the_rows_are_copied_reach_the_new_table(
    ana: User, bo: User, history: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    group, with_bo = history["group"], history["with_bo"]
    first = Message.objects.filter(conversation=group, kind=Message.Kind.TEXT).order_by("pk")[0]
    late = Message.objects.filter(conversation=with_bo).order_by("pk").last()
    assert late is not None
    copy_batch = partition_messages.copy_batch
    batches = 0

    def copy_and_write(*args: Any) -> tuple[int, int, int]:
        # After the first batch: change a row already copied and one not yet copied,
        # delete a copied row outright, and store a new message.
        nonlocal batches
        copied = copy_batch(*args)
        batches += 1
        if batches == 1:
            services.edit_message(
                user=ana, conversation_id=group.pk, message_id=first.pk, body="edited mid-copy"
            )
            services.delete_message(user=bo, conversation_id=with_bo.pk, message_id=late.pk)
            Message.objects.filter(pk=Message.objects.order_by("pk")[0].pk).delete()
            send(ana, group, "sent mid-copy")
        return copied

    monkeypatch.setattr(partition_messages, "copy_batch", copy_and_write)
    output = partition(partitions=4, batch=5)

    assert dump() == dump("messaging_message_unpartitioned")
    assert Message.objects.get(pk=first.pk).body == "edited mid-copy"
    assert Message.objects.get(pk=late.pk).deleted
    assert Message.objects.filter(body="sent mid-copy").count() == 1
    assert "(0 not mirrored yet)" in output


def test_a_leftover_of_an_interrupted_run_is_dropped_and_the_run_starts_over(
    history: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = dump()

    def fail(*args: Any) -> None:
        raise RuntimeError("interrupted")

    monkeypatch.setattr(partition_messages.Command, "_drop_foreign_keys", fail)
    with pytest.raises(RuntimeError):
        partition(partitions=2, batch=100)
    assert rows("SELECT to_regclass('messaging_message_partitioned') IS NOT NULL") == [(True,)]
    monkeypatch.undo()

    output = partition(partitions=2, batch=100)

    assert "dropping messaging_message_partitioned, left by an interrupted run" in output
    assert dump() == before
    assert rows("SELECT count(*) FROM pg_inherits WHERE inhparent = %s::regclass", TABLE) == [(2,)]


def test_bad_arguments_are_refused() -> None:
    for options in ({"partitions": 0}, {"partitions": 4, "batch": 0}):
        with pytest.raises(CommandError):
            partition(**options)


def test_the_plain_layout_is_back_after_each_test() -> None:
    # The conversions above ran inside their tests' transactions, rolled back since.
    with connection.cursor() as cursor:
        assert partition_messages.partition_count(cursor, TABLE) is None
    assert rows("SELECT to_regclass('messaging_message_unpartitioned')") == [(None,)]
    replay_key = "message_client_msg_id_unique"
    unique = "SELECT indisunique FROM pg_index WHERE indexrelid = %s::regclass"
    assert rows(unique, replay_key) == [(True,)]
    assert rows("SELECT count(*) FROM pg_constraint WHERE confrelid = %s::regclass", TABLE) == [
        (3,)
    ]


def test_a_message_table_with_many_rows_is_copied_in_many_batches(
    make_user: Callable[..., User],
) -> None:
    users = [make_user() for _ in range(3)]
    group = services.create_group(creator=users[0], title="Many", member_ids=[u.pk for u in users])
    Message.objects.bulk_create(
        Message(conversation=group, seq=seq, version=seq, sender=users[seq % 3], body=f"m{seq}")
        for seq in range(2, 1002)
    )
    before = dump()

    output = partition(partitions=8, batch=100)

    assert dump() == before
    progress = [
        line for line in output.splitlines() if line.startswith("copied ") and " / " in line
    ]
    assert len(progress) == math.ceil(len(before) / 100) == 11
