"""Turn the message table into `PARTITION BY HASH (conversation_id)`, writes running.

`manage.py partition_messages --partitions 16 [--batch 10000] [--drop-old] [--skip-count]
[--lock-timeout 2]`

Every hot query is keyed by `conversation_id`, so hash partitions by it (or Citus shards
by it, docs/scaling.md) split the table without splitting a conversation. PostgreSQL
makes every primary key and unique constraint of a partitioned table include the
partition key, so the partitioned layout keys messages by (conversation_id, id), seqs by
(conversation_id, seq), and the replay key by (conversation_id, sender_id,
client_msg_id), with a plain index on (sender_id, client_msg_id) for the replay lookup
and one on `id` for the few reads that know only the id. Foreign keys into the table are
dropped: none of the referencing tables carries `conversation_id`, and Django cascades
deletes itself. The model does not change: the same code runs on both layouts.

The steps, each printed as it runs:

1. Create `messaging_message_partitioned` with the same columns, its N partitions, its
   keys, indexes and foreign keys (under names of its own for now).
2. Put a trigger on the message table that copies every insert and update into the new
   table (an upsert: the newest version wins) and removes every deleted row from it, noting
   the deleted ids, so the rows copied below never go stale.
3. Copy the rows in id order, `--batch` rows a transaction, and print the progress after
   each batch. A batch takes no lock on the messages it reads; it first takes the key
   share locks its foreign key checks need (conversations, senders), so it never waits
   for a writer that waits for it. A row the trigger wrote is left as the trigger wrote it.
4. Drop the foreign keys that point at the message table (a short lock on each table).
5. In one transaction, with the message table locked against writes (`LOCK TABLE ... IN
   EXCLUSIVE MODE`; reads go on): copy whatever is left, remove rows deleted while they
   were being copied, check that both tables hold the same number of rows (unless
   `--skip-count`: the count is most of the time writes wait), drop the trigger,
   continue the id sequence after the old table's, rename the old table
   `messaging_message_unpartitioned` (or drop it, `--drop-old`) and the new one into its
   place, objects and sequence under the old names.
6. ANALYZE the partitioned table (autovacuum never analyzes a partitioned parent).

Steps that wait for table locks give up after `--lock-timeout` and try again (5 times),
as does a batch that lost a deadlock, so the command never queues the server's writes
behind it for long.

A second run finds the table partitioned, says so and exits 0. On SQLite (the embedded
default) it refuses: there is nothing to partition. An interrupted run leaves the new
table and the trigger behind; the next run drops them and starts over.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import OperationalError, connection, transaction
from django.db.backends.utils import CursorWrapper

from messaging.models import Message

T = TypeVar("T")

TABLE = Message._meta.db_table
STAGING = f"{TABLE}_partitioned"
UNPARTITIONED = f"{TABLE}_unpartitioned"
SYNC = f"{TABLE}_partition_sync"
# The (conversation_id, id) of rows deleted while the copy runs; a batch may have read one
# just before its delete and write it after, and the swap removes those.
DELETED = f"{TABLE}_partition_deleted"
KEY = "conversation_id"
# The replay key (`sender`, `client_msg_id`) is unique across conversations on the
# plain table; partitioned, its unique index leads with the conversation, and a plain
# index under this name serves the lookup by sender and id (messaging/services.py).
REPLAY_INDEX = "message_client_msg_id_unique"
REPLAY_LOOKUP_INDEX = "message_client_msg_id_idx"
# Reads that know a message's id only (the notification worker, moderation, the admin)
# find it through this index, one probe per partition, not a scan of every partition.
ID_INDEX = "message_id_idx"
MAX_PARTITIONS = 1024
# SQLSTATEs of a step that lost a lock race: lock_not_available, deadlock_detected.
RETRIED = ("55P03", "40P01")
MAX_NAME = 63


@dataclass(frozen=True)
class Rename:
    """An object of the new table: its temporary name, and its name once swapped in."""

    temporary: str
    final: str
    constraint: bool  # renamed with ALTER TABLE ... RENAME CONSTRAINT, else ALTER INDEX


@dataclass(frozen=True)
class Plan:
    """What the new table gets: statements to run, in order, and the renames at the swap."""

    statements: list[str]
    renames: list[Rename]
    old_names: list[Rename]  # the old table's objects, renamed when it is kept


class Command(BaseCommand):
    """`manage.py partition_messages`: the messages table, hash-partitioned by conversation."""

    lock_timeout = 2.0

    help = (
        "Convert the message table into PARTITION BY HASH (conversation_id) with --partitions "
        "partitions, copying in --batch sized transactions while the server keeps running, "
        "then swapping the tables in one short transaction that blocks writes (not reads). "
        "Exits 0 without change if the table is partitioned already. PostgreSQL only."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        """Take the partition count, the batch size, and what to do with the old table."""
        parser.add_argument("--partitions", type=int, required=True, help="hash partitions")
        parser.add_argument("--batch", type=int, default=10_000, help="rows per copy batch")
        parser.add_argument(
            "--drop-old",
            action="store_true",
            help=f"drop the old table instead of keeping it as {UNPARTITIONED}",
        )
        parser.add_argument(
            "--skip-count",
            action="store_true",
            help="do not count both tables while writes are blocked (about 0.4 s a million "
            "rows on a small machine); the trigger keeps the copy exact, the count checks it",
        )
        parser.add_argument(
            "--lock-timeout",
            type=float,
            default=2.0,
            help="seconds to wait for a table lock before trying that step again (5 tries)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Convert the table (see the module docstring), printing each step."""
        partitions, batch = int(options["partitions"]), int(options["batch"])
        drop_old, lock_timeout = bool(options["drop_old"]), float(options["lock_timeout"])
        count = not options["skip_count"]
        if connection.vendor != "postgresql":
            raise CommandError(
                f"partition_messages needs PostgreSQL; this database is {connection.vendor}, "
                "whose message table has nothing to partition."
            )
        if not 1 <= partitions <= MAX_PARTITIONS:
            raise CommandError(f"--partitions must be between 1 and {MAX_PARTITIONS}.")
        if batch < 1:
            raise CommandError("--batch must be at least 1.")
        if lock_timeout <= 0:
            raise CommandError("--lock-timeout must be positive.")
        self.lock_timeout = lock_timeout
        with connection.cursor() as cursor, self._immediate_constraints(cursor):
            existing = partition_count(cursor, TABLE)
            if existing is not None:
                self.stdout.write(
                    f"{TABLE} is partitioned already (by hash of {KEY}, {existing} "
                    "partitions): nothing to do."
                )
                return
            if not drop_old and regclass(cursor, UNPARTITIONED):
                raise CommandError(
                    f"{UNPARTITIONED} exists (kept by an earlier conversion?): drop it, or "
                    "run with --drop-old."
                )
            self._drop_leftovers(cursor)
            plan = self._plan(cursor)
            columns = copied_columns(cursor, TABLE)
            self._create(cursor, plan, partitions)
            self._install_sync(cursor, columns)
            last_id = self._copy(cursor, columns, batch)
            self._drop_foreign_keys(cursor)
            self._retrying(
                "swap",
                lambda: self._swap(cursor, columns, batch, last_id, plan, drop_old, count),
            )
            started = time.monotonic()
            cursor.execute(f"ANALYZE {TABLE}")
            self.stdout.write(f"analyzed {TABLE} in {time.monotonic() - started:.1f}s")
        kept = "dropped" if drop_old else f"kept as {UNPARTITIONED}"
        self.stdout.write(
            self.style.SUCCESS(
                f"{TABLE} is partitioned by hash of {KEY} into {partitions} partitions; "
                f"the old table is {kept}."
            )
        )

    # --- steps ---------------------------------------------------------------------------

    def _drop_leftovers(self, cursor: CursorWrapper) -> None:
        """Drop the new table and the trigger an interrupted run left behind."""
        with transaction.atomic():
            if regclass(cursor, STAGING):
                self.stdout.write(f"dropping {STAGING}, left by an interrupted run")
            cursor.execute(f"DROP TRIGGER IF EXISTS {SYNC} ON {TABLE}")
            cursor.execute(f"DROP FUNCTION IF EXISTS {SYNC}()")
            cursor.execute(f"DROP TABLE IF EXISTS {STAGING}, {DELETED}")

    def _plan(self, cursor: CursorWrapper) -> Plan:
        """Read the table's keys and indexes; say how the partitioned table has each."""
        statements: list[str] = []
        renames: list[Rename] = []
        old_names: list[Rename] = []
        count = iter(range(10_000))

        def temporary() -> str:
            return f"{STAGING}_{next(count)}"

        def keep_old(name: str, constraint: bool) -> None:
            old_name = f"{name[: MAX_NAME - 4]}_old"
            if old_name in {o.final for o in old_names}:
                raise CommandError(f"two indexes of {TABLE} would both be renamed {old_name}.")
            old_names.append(Rename(name, old_name, constraint))

        constraint_indexes: set[str] = set()
        cursor.execute(
            """
            SELECT con.conname, con.contype, pg_get_constraintdef(con.oid),
                   COALESCE(ix.relname, ''),
                   ARRAY(SELECT a.attname FROM unnest(con.conkey) k
                         JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k)
              FROM pg_constraint con
              LEFT JOIN pg_class ix ON ix.oid = con.conindid AND con.contype IN ('p', 'u', 'x')
             WHERE con.conrelid = %s::regclass
             ORDER BY con.conname
            """,
            [TABLE],
        )
        for name, kind, definition, index, columns in cursor.fetchall():
            if kind in ("p", "u", "x"):
                constraint_indexes.add(index)
                keep_old(name, constraint=True)
            if kind == "p":
                if list(columns) != ["id"]:
                    raise CommandError(f"{TABLE}'s primary key is {definition}, not (id).")
                tmp = temporary()
                statements.append(
                    f"ALTER TABLE {STAGING} ADD CONSTRAINT {tmp} PRIMARY KEY ({KEY}, id)"
                )
                renames.append(Rename(tmp, name, constraint=True))
            elif kind == "u":
                if KEY not in columns:
                    raise CommandError(
                        f"the unique constraint {name} ({definition}) does not include {KEY}; "
                        "a partitioned table cannot enforce it. Change it first."
                    )
                tmp = temporary()
                statements.append(f"ALTER TABLE {STAGING} ADD CONSTRAINT {tmp} {definition}")
                renames.append(Rename(tmp, name, constraint=True))
            elif kind == "f":
                # Foreign key names belong to their table: the new table takes them as they are.
                statements.append(f"ALTER TABLE {STAGING} ADD CONSTRAINT {name} {definition}")
            elif kind == "c":
                pass  # check constraints come with the columns (LIKE ... INCLUDING CONSTRAINTS)
            else:
                raise CommandError(f"{TABLE} has a constraint this command does not know: {name}")
        cursor.execute(
            """
            SELECT ix.relname, i.indisunique, pg_get_indexdef(i.indexrelid)
              FROM pg_index i JOIN pg_class ix ON ix.oid = i.indexrelid
             WHERE i.indrelid = %s::regclass
             ORDER BY ix.relname
            """,
            [TABLE],
        )
        for name, unique, definition in cursor.fetchall():
            if name in constraint_indexes:
                continue
            keep_old(name, constraint=False)
            match = re.fullmatch(
                r"CREATE (UNIQUE )?INDEX (\S+) ON (?:ONLY )?(\S+) USING (.+)", definition
            )
            if match is None:
                raise CommandError(f"cannot read the definition of index {name}: {definition}")
            method_and_columns = match.group(4)
            if unique and KEY not in index_columns(method_and_columns):
                if name != REPLAY_INDEX:
                    raise CommandError(
                        f"the unique index {name} ({definition}) does not include {KEY}; "
                        "a partitioned table cannot enforce it. Change it first."
                    )
                # Unique per conversation; the same (sender, id) lookup through a plain index.
                tmp = temporary()
                statements.append(f"CREATE INDEX {tmp} ON {STAGING} USING {method_and_columns}")
                renames.append(Rename(tmp, REPLAY_LOOKUP_INDEX, constraint=False))
                method_and_columns = re.sub(
                    r"^(\w+) \(", rf"\1 ({KEY}, ", method_and_columns, count=1
                )
            tmp = temporary()
            statements.append(
                f"CREATE {'UNIQUE ' if unique else ''}INDEX {tmp} ON {STAGING} "
                f"USING {method_and_columns}"
            )
            renames.append(Rename(tmp, name, constraint=False))
        if not any(r.final == ID_INDEX for r in renames):
            tmp = temporary()
            statements.append(f"CREATE INDEX {tmp} ON {STAGING} USING btree (id)")
            renames.append(Rename(tmp, ID_INDEX, constraint=False))
        return Plan(statements, renames, old_names)

    def _create(self, cursor: CursorWrapper, plan: Plan, partitions: int) -> None:
        """Create the partitioned table, its partitions, keys and indexes (one transaction)."""
        started = time.monotonic()
        with transaction.atomic():
            cursor.execute(
                f"CREATE TABLE {STAGING} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING IDENTITY "
                "INCLUDING GENERATED INCLUDING CONSTRAINTS INCLUDING STORAGE "
                "INCLUDING COMPRESSION INCLUDING COMMENTS INCLUDING STATISTICS) "
                f"PARTITION BY HASH ({KEY})"
            )
            width = len(str(partitions - 1))
            for remainder in range(partitions):
                cursor.execute(
                    f"CREATE TABLE {TABLE}_p{remainder:0{width}d} PARTITION OF {STAGING} "
                    f"FOR VALUES WITH (MODULUS {partitions}, REMAINDER {remainder})"
                )
            for statement in plan.statements:
                cursor.execute(statement)
            self._copy_grants(cursor)
            cursor.execute(
                f"CREATE TABLE {DELETED} ({KEY} bigint NOT NULL, id bigint NOT NULL, "
                f"PRIMARY KEY ({KEY}, id))"
            )
        self.stdout.write(
            f"created {STAGING} with {partitions} partitions, {len(plan.renames)} keys and "
            f"indexes in {time.monotonic() - started:.1f}s"
        )

    def _copy_grants(self, cursor: CursorWrapper) -> None:
        """Give the new table the privileges other roles have on the old one."""
        cursor.execute(
            """
            SELECT CASE WHEN acl.grantee = 0 THEN 'PUBLIC'
                        ELSE quote_ident(pg_get_userbyid(acl.grantee)) END,
                   acl.privilege_type
              FROM pg_class c, aclexplode(c.relacl) acl
             WHERE c.oid = %s::regclass AND acl.grantee <> c.relowner
            """,
            [TABLE],
        )
        for grantee, privilege in cursor.fetchall():
            cursor.execute(f"GRANT {privilege} ON {STAGING} TO {grantee}")

    def _install_sync(self, cursor: CursorWrapper, columns: list[str]) -> None:
        """Mirror every later write of the old table into the new one, until the swap.

        Creating the trigger waits for the writes in progress to commit (and holds new
        ones meanwhile); every write after it fires it, every one before it is visible
        to the copy that follows, so no row is missed.
        """
        names = ", ".join(columns)
        values = ", ".join(f"NEW.{c}" for c in columns)
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in (KEY, "id"))
        with self._lock_timeout(), transaction.atomic():
            cursor.execute(
                f"""
                CREATE FUNCTION {SYNC}() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE'
                            AND OLD.{KEY} IS DISTINCT FROM NEW.{KEY}) THEN
                        DELETE FROM {STAGING} WHERE {KEY} = OLD.{KEY} AND id = OLD.id;
                        INSERT INTO {DELETED} ({KEY}, id) VALUES (OLD.{KEY}, OLD.id)
                        ON CONFLICT DO NOTHING;
                    END IF;
                    IF TG_OP <> 'DELETE' THEN
                        INSERT INTO {STAGING} ({names}) VALUES ({values})
                        ON CONFLICT ({KEY}, id) DO UPDATE SET {updates};
                    END IF;
                    RETURN NULL;
                END
                $$
                """
            )
            cursor.execute(
                f"CREATE TRIGGER {SYNC} AFTER INSERT OR UPDATE OR DELETE ON {TABLE} "
                f"FOR EACH ROW EXECUTE FUNCTION {SYNC}()"
            )
        self.stdout.write(f"writes to {TABLE} are now mirrored into {STAGING}")

    def _copy(self, cursor: CursorWrapper, columns: list[str], batch: int) -> int:
        """Copy every row in id order, a batch a transaction; return the last id copied."""
        cursor.execute(f"SELECT count(*) FROM {TABLE}")
        total = int(cursor.fetchone()[0])
        self.stdout.write(f"copying {total:,} rows in batches of {batch:,}")
        prelocks = key_share_locks(cursor)
        started = time.monotonic()
        copied, last_id = 0, 0
        while True:

            def one(after: int = last_id) -> tuple[int, int, int]:
                with transaction.atomic():
                    return copy_batch(cursor, columns, prelocks, after, batch)

            count, last, _ = self._retrying("copying a batch", one)
            if not count:
                break
            copied, last_id = copied + count, last
            elapsed = time.monotonic() - started
            self.stdout.write(
                f"copied {copied:,} / {total:,} rows ({100 * copied / max(total, 1):.0f}%), "
                f"{copied / max(elapsed, 1e-6):,.0f} rows/s"
            )
        self.stdout.write(
            f"copied {copied:,} rows in {time.monotonic() - started:.1f}s (up to id {last_id})"
        )
        return last_id

    def _drop_foreign_keys(self, cursor: CursorWrapper) -> None:
        """Drop the foreign keys into the message table (Django cascades the deletes itself).

        A partitioned table can only be referenced through a unique key that includes
        the partition key, and the referencing tables do not carry `conversation_id`.
        """
        cursor.execute(
            "SELECT conrelid::regclass::text, conname FROM pg_constraint "
            "WHERE contype = 'f' AND confrelid = %s::regclass ORDER BY 1, 2",
            [TABLE],
        )
        for table, name in cursor.fetchall():

            def drop(table: str = table, name: str = name) -> None:
                with self._lock_timeout(), transaction.atomic():
                    cursor.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")

            self._retrying(f"dropping {name}", drop)
            self.stdout.write(f"dropped the foreign key {name} of {table}")

    def _swap(
        self,
        cursor: CursorWrapper,
        columns: list[str],
        batch: int,
        last_id: int,
        plan: Plan,
        drop_old: bool,
        count: bool,
    ) -> None:
        """Copy the rest and swap the tables, writes blocked (one transaction)."""
        with self._lock_timeout(), transaction.atomic():
            cursor.execute(f"LOCK TABLE {TABLE} IN EXCLUSIVE MODE")
            locked = time.monotonic()
            rest = written = 0
            while True:
                read, last, wrote = copy_batch(cursor, columns, [], last_id, batch)
                if not read:
                    break
                rest, written, last_id = rest + read, written + wrote, last
            cursor.execute(
                f"DELETE FROM {STAGING} s USING {DELETED} d WHERE s.{KEY} = d.{KEY} AND s.id = d.id"
            )
            cursor.execute(f"DROP TABLE {DELETED}")
            checked = "rows not counted (--skip-count)"
            if count:
                cursor.execute(
                    f"SELECT (SELECT count(*) FROM {TABLE}), (SELECT count(*) FROM {STAGING})"
                )
                old_rows, new_rows = cursor.fetchone()
                if old_rows != new_rows:
                    raise CommandError(
                        f"{TABLE} has {old_rows} rows and {STAGING} {new_rows}: nothing "
                        "swapped. Run the command again."
                    )
                checked = f"{new_rows:,} rows counted in both"
            cursor.execute(f"DROP TRIGGER {SYNC} ON {TABLE}")
            cursor.execute(f"DROP FUNCTION {SYNC}()")
            old_sequence = serial_sequence(cursor, TABLE)
            new_sequence = serial_sequence(cursor, STAGING)
            if new_sequence is not None:
                # An identity column has a sequence of its own: continue after the old one.
                cursor.execute(
                    f"SELECT GREATEST((SELECT max(id) FROM {TABLE}), "
                    "(SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END "
                    f"FROM {old_sequence}))"
                )
                highest = cursor.fetchone()[0] or 0
                if highest >= 1:
                    cursor.execute("SELECT setval(%s, %s, true)", [new_sequence, highest])
            elif old_sequence is not None:
                # A serial column: the new table's default calls the same sequence; it
                # moves to the new table so that dropping the old one leaves it alone.
                cursor.execute(f"ALTER SEQUENCE {old_sequence} OWNED BY {STAGING}.id")
            if drop_old:
                cursor.execute(f"DROP TABLE {TABLE}")
            else:
                for old in plan.old_names:
                    rename(cursor, TABLE, old.temporary, old.final, constraint=old.constraint)
                cursor.execute(f"ALTER TABLE {TABLE} RENAME TO {UNPARTITIONED}")
                if new_sequence is not None and old_sequence is not None:
                    cursor.execute(
                        f"ALTER SEQUENCE {old_sequence} RENAME TO {UNPARTITIONED}_id_seq"
                    )
            cursor.execute(f"ALTER TABLE {STAGING} RENAME TO {TABLE}")
            for new in plan.renames:
                rename(cursor, TABLE, new.temporary, new.final, constraint=new.constraint)
            if new_sequence is not None and old_sequence is not None:
                final_sequence = old_sequence.rsplit(".", 1)[-1]
                cursor.execute(f"ALTER SEQUENCE {new_sequence} RENAME TO {final_sequence}")
        self.stdout.write(
            f"swapped the tables: read the last {rest:,} rows ({written:,} not mirrored "
            f"yet), {checked}, writes blocked for {time.monotonic() - locked:.2f}s"
        )

    # --- helpers -------------------------------------------------------------------------

    @contextmanager
    def _immediate_constraints(self, cursor: CursorWrapper) -> Iterator[None]:
        """Check deferred foreign keys now when run inside a caller's transaction (tests).

        PostgreSQL alters no table with checks still pending in the transaction; run on
        its own, each step is a transaction of its own and has none.
        """
        if not connection.in_atomic_block:
            yield
            return
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        try:
            yield
        finally:
            # Django's foreign keys are all INITIALLY DEFERRED: back to that.
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")

    @contextmanager
    def _lock_timeout(self) -> Iterator[None]:
        """Give up on a lock after `--lock-timeout` seconds, rather than queue writes behind."""
        with connection.cursor() as cursor:
            cursor.execute("SHOW lock_timeout")
            before = cursor.fetchone()[0]
            cursor.execute(
                "SELECT set_config('lock_timeout', %s, false)",
                [f"{int(self.lock_timeout * 1000)}ms"],
            )
            try:
                yield
            finally:
                cursor.execute("SELECT set_config('lock_timeout', %s, false)", [before])

    def _retrying(self, what: str, step: Callable[[], T], tries: int = 5) -> T:
        """Run a step that takes locks; on a lock timeout or deadlock, wait and run it again."""
        for attempt in range(1, tries + 1):
            try:
                return step()
            except OperationalError as exc:
                if getattr(exc.__cause__, "sqlstate", None) not in RETRIED:
                    raise
                if attempt == tries:
                    raise CommandError(f"{what} failed {tries} times: {exc}") from exc
                self.stdout.write(f"{what}: {str(exc).strip()}; trying again ({attempt}/{tries})")
                time.sleep(min(2**attempt, 30))
        raise AssertionError("unreachable")


# --- catalog reads ---------------------------------------------------------------------------


def regclass(cursor: CursorWrapper, name: str) -> bool:
    """Return whether a table (or other relation) of that name exists."""
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
    return bool(cursor.fetchone()[0])


def partition_count(cursor: CursorWrapper, table: str) -> int | None:
    """Return how many partitions `table` has, or None if it is not partitioned."""
    cursor.execute(
        "SELECT (SELECT count(*) FROM pg_inherits WHERE inhparent = p.partrelid) "
        "FROM pg_partitioned_table p WHERE p.partrelid = to_regclass(%s)",
        [table],
    )
    row = cursor.fetchone()
    return None if row is None else int(row[0])


def copied_columns(cursor: CursorWrapper, table: str) -> list[str]:
    """Return the columns a copy writes: all but generated ones (those compute themselves)."""
    cursor.execute(
        "SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = %s::regclass "
        "AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
        [table],
    )
    return [name for (name,) in cursor.fetchall()]


def serial_sequence(cursor: CursorWrapper, table: str) -> str | None:
    """Return the sequence behind `table.id` (identity or serial), or None."""
    cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [table])
    row = cursor.fetchone()
    return None if row is None or row[0] is None else str(row[0])


def index_columns(method_and_columns: str) -> list[str]:
    """Return the plain column names in `btree (a, b) WHERE ...` (expressions are skipped)."""
    inside = re.match(r"^\w+ \((.*?)\)(?: |$)", method_and_columns)
    if inside is None:
        return []
    return [part.strip().split(" ")[0] for part in inside.group(1).split(",")]


def key_share_locks(cursor: CursorWrapper) -> list[str]:
    """Return statements that lock, for a batch, the rows its foreign key checks will lock.

    A check locks the row it finds (`FOR KEY SHARE`) at the batch's commit; a writer that
    holds a conversation `FOR UPDATE` (an edit) may meanwhile wait for the batch, on a row
    the trigger wants to write. Taken first, before the batch writes anything, these
    locks only ever make the batch wait, never the two for each other.
    """
    cursor.execute(
        """
        SELECT con.confrelid::regclass::text, quote_ident(a.attname), quote_ident(af.attname)
          FROM pg_constraint con
          JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = con.conkey[1]
          JOIN pg_attribute af ON af.attrelid = con.confrelid AND af.attnum = con.confkey[1]
         WHERE con.conrelid = %s::regclass AND con.contype = 'f'
           AND cardinality(con.conkey) = 1
         ORDER BY 1, 2
        """,
        [STAGING],
    )
    return [
        f"SELECT 1 FROM {table} WHERE {referenced} IN (SELECT {column} FROM {TABLE} "
        f"WHERE id > %s AND id <= %s) ORDER BY {referenced} FOR KEY SHARE"
        for table, column, referenced in cursor.fetchall()
    ]


def copy_batch(
    cursor: CursorWrapper, columns: list[str], prelocks: list[str], after_id: int, batch: int
) -> tuple[int, int, int]:
    """Copy up to `batch` rows with ids above `after_id`.

    Returns how many rows the batch read, the last id and how many it wrote: rows the
    trigger wrote already are left as they are (it wrote the newest version).
    """
    cursor.execute(
        f"SELECT count(*), COALESCE(max(id), 0) FROM "
        f"(SELECT id FROM {TABLE} WHERE id > %s ORDER BY id LIMIT %s) batch",
        [after_id, batch],
    )
    count, last = cursor.fetchone()
    if not count:
        return 0, after_id, 0
    for statement in prelocks:
        cursor.execute(statement, [after_id, last])
    names = ", ".join(columns)
    cursor.execute(
        f"INSERT INTO {STAGING} ({names}) SELECT {names} FROM {TABLE} "
        f"WHERE id > %s AND id <= %s ON CONFLICT ({KEY}, id) DO NOTHING",
        [after_id, last],
    )
    return int(count), int(last), max(cursor.rowcount, 0)


def rename(cursor: CursorWrapper, table: str, old: str, new: str, *, constraint: bool) -> None:
    """Rename a constraint (and the index behind it) or an index."""
    if constraint:
        cursor.execute(f"ALTER TABLE {table} RENAME CONSTRAINT {old} TO {new}")
    else:
        cursor.execute(f"ALTER INDEX {old} RENAME TO {new}")
