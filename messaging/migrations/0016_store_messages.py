"""The function that stores a batch of sends in one statement (PostgreSQL).

`chat_store_messages(...)` takes the sends as parallel arrays (conversation, sender,
client message id, body, mentions, reply) and returns one row per send, in their order:
the new message's id and seq, the conversation's `member_seq`, and whether the send
accepted the sender's message request; a refused send (not a member, a blocked pair's
direct chat, a plain member of an admins-only group) comes back without an id and
writes nothing. A gateway gathers the sends of its sockets that arrive while earlier
ones are being written and stores them with one call (`services.send_messages`); a
single send is a batch of one.

It first locks every conversation of the batch in id order (`FOR NO KEY UPDATE`, which
does not wait for rows that only refer to the conversation), so two batches never wait
for each other in a cycle; then, per send, it checks the sender under that lock, takes
the next seq, raises the sender's markers and inserts the message and the row that has
its notifications decided later. Each statement of a function reads a fresh snapshot,
so a removal committed while the batch waited for a lock is seen. A failure of any
statement (a client message id used before) undoes the whole batch; the caller then
stores its sends one at a time.

`chat_refuse_send()` (0015) is no longer called by this release; it is kept so that
gateways of the previous release keep working while a rolling upgrade replaces them.
SQLite (the embedded default) stores sends with the ORM and needs no function.
"""

from django.db import migrations

FORWARD = [
    """
CREATE OR REPLACE FUNCTION chat_store_messages(
    p_conversations bigint[], p_senders bigint[], p_cmids uuid[], p_bodies text[],
    p_mentions jsonb[], p_reply_tos bigint[], p_now timestamptz, p_due timestamptz
) RETURNS TABLE(o_n bigint, o_id bigint, o_seq bigint, o_member_seq bigint, o_accepted_now boolean)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    r record;
    c record;
    was boolean;
BEGIN
    -- Lock the batch's conversations in id order: concurrent batches cannot deadlock.
    PERFORM 1 FROM messaging_conversation WHERE id = ANY(p_conversations)
        ORDER BY id FOR NO KEY UPDATE;
    FOR r IN SELECT * FROM unnest(p_conversations, p_senders, p_cmids, p_bodies, p_mentions,
            p_reply_tos) WITH ORDINALITY AS t(conversation_id, sender_id, cmid, body, mentions,
            reply_to, ord) LOOP
        o_n := r.ord; o_id := NULL; o_seq := NULL; o_member_seq := NULL;
        o_accepted_now := NULL;
        SELECT cv.kind, cv.post_policy, cv.member_seq INTO c
            FROM messaging_conversation AS cv WHERE cv.id = r.conversation_id;
        IF NOT FOUND THEN
            RETURN NEXT;
            CONTINUE;
        END IF;
        -- a direct chat of a blocked pair takes no message
        IF c.kind = 'direct' AND EXISTS (
            SELECT 1 FROM messaging_membership AS other, messaging_block AS b
            WHERE other.conversation_id = r.conversation_id AND other.user_id <> r.sender_id
              AND ((b.blocker_id = r.sender_id AND b.blocked_id = other.user_id)
                OR (b.blocked_id = r.sender_id AND b.blocker_id = other.user_id))
        ) THEN
            RETURN NEXT;
            CONTINUE;
        END IF;
        -- a member; of an announcement group, its owner or an admin
        SELECT m.accepted INTO was FROM messaging_membership AS m
            WHERE m.conversation_id = r.conversation_id AND m.user_id = r.sender_id
              AND (c.post_policy = 'everyone' OR m.role IN ('owner', 'admin'));
        IF NOT FOUND THEN
            RETURN NEXT;
            CONTINUE;
        END IF;
        UPDATE messaging_conversation AS cv
            SET last_seq = cv.last_seq + 1, last_activity_at = p_now
            WHERE cv.id = r.conversation_id RETURNING cv.last_seq INTO o_seq;
        UPDATE messaging_membership AS m
            SET read_seq = GREATEST(m.read_seq, o_seq),
                delivered_seq = GREATEST(m.delivered_seq, o_seq), accepted = TRUE
            WHERE m.conversation_id = r.conversation_id AND m.user_id = r.sender_id;
        INSERT INTO messaging_message (conversation_id, seq, version, kind, sender_id,
                client_msg_id, body, system, created_at, edited_at, deleted, mentions,
                reactions, reply_to_id)
            VALUES (r.conversation_id, o_seq, o_seq, 'text', r.sender_id, r.cmid, r.body,
                NULL, p_now, NULL, FALSE, r.mentions, '[]'::jsonb, r.reply_to)
            RETURNING id INTO o_id;
        IF p_due IS NOT NULL THEN
            INSERT INTO messaging_notificationdue (message_id, due_at, attempts)
                VALUES (o_id, p_due, 0);
        END IF;
        o_member_seq := c.member_seq;
        o_accepted_now := NOT was;
        RETURN NEXT;
    END LOOP;
END
$fn$
""",
]
BACKWARD = [
    "DROP FUNCTION IF EXISTS chat_store_messages("
    "bigint[], bigint[], uuid[], text[], jsonb[], bigint[], timestamptz, timestamptz)"
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
        ("messaging", "0015_send_refusal"),
    ]

    operations = [
        migrations.RunPython(_run(FORWARD), _run(BACKWARD)),
    ]
