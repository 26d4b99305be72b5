"""Archiving on 1,000,000 messages: how fast, how small, and what reading it back costs.

Creates a scratch PostgreSQL database, migrates it, loads `--messages` messages 100 days
old with COPY (the word mix of `bench.search_latency`, 5-30 words each) into `--groups`
groups, and measures:

- the table's size: `pg_total_relation_size` of the message table (heap, TOAST and
  every index, the full-text and trigram ones included);
- `before` paging inside the old range from the table: 50 messages a page, 40 random
  pages, median and p95 of `selectors.list_messages_for_user`;
- archiving everything (`messaging.archive.archive_conversation` per group, as the
  nightly task does) into a local folder: messages per second;
- the size ratio: bytes of all segments over the table's size before;
- the same pages read from the archive (after a VACUUM of the table, as autovacuum
  soon does), cold (each page's segments read from the folder and checked) and warm
  (the same pages again, their segments in the process's cache);
- a search that matches nothing, so it reads all the `ARCHIVE_SEARCH_SEGMENTS` newest
  segments it may, cold and warm.

    python -m bench.archive_cost                  # 1,000,000 messages
    python -m bench.archive_cost --messages 50000 --keep

Bounded: archiving stops after `--max-seconds` (default 900) and reports what it did.
The database and the folder are deleted afterwards unless `--keep`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.search_latency import bodies, drop_database, setup_database, vocabulary  # noqa: E402


def load(messages: int, groups: int, seed: int) -> dict[str, Any]:
    """Create a reader who belongs to every group, the groups, and messages with COPY."""
    from django.db import connection

    from accounts.models import User
    from messaging.models import Conversation, Membership, Message

    rng = random.Random(seed)
    users = User.objects.bulk_create(
        User(username=f"bench{i}", display_name=f"Bench {i}") for i in range(100)
    )
    made = Conversation.objects.bulk_create(
        Conversation(kind="group", title=f"Group {i}") for i in range(groups)
    )
    Membership.objects.bulk_create(
        Membership(conversation=group, user=user)
        for group in made
        for user in [users[0], *rng.sample(users[1:], 9)]
    )
    texts = bodies(rng, min(messages, 50_000), vocabulary(rng, 5000))
    seqs = dict.fromkeys((g.pk for g in made), 0)
    table = Message._meta.db_table
    started = time.perf_counter()
    with connection.cursor() as cursor:
        raw = cursor.cursor
        columns = (
            "conversation_id, seq, version, kind, sender_id, client_msg_id, body, created_at, "
            "deleted, mentions, reactions"
        )
        with raw.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            ids = list(seqs)
            for n in range(messages):
                group_id = ids[n % len(ids)]
                seqs[group_id] += 1
                seq = seqs[group_id]
                copy.write_row(
                    (group_id, seq, seq, "text", rng.choice(users).pk, uuid.uuid4(),
                     texts[n % len(texts)], "2026-08-01T10:00:00Z", False, "[]", "[]")
                )  # fmt: skip
        for group_id, last in seqs.items():
            cursor.execute(
                "UPDATE messaging_conversation SET last_seq = %s WHERE id = %s", [last, group_id]
            )
        cursor.execute(f"VACUUM ANALYZE {table}")
    return {"reader": users[0], "seqs": seqs, "load_seconds": time.perf_counter() - started}


def table_bytes() -> int:
    from django.db import connection

    from messaging.models import Message

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_total_relation_size(%s)", [Message._meta.db_table])
        return int(cursor.fetchone()[0])


def vacuum() -> None:
    from django.db import connection

    from messaging.models import Message

    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {Message._meta.db_table}")


def time_pages(reader: Any, pages: list[tuple[int, int]], cold: bool) -> list[float]:
    from messaging import archive, selectors

    timings = []
    for conversation_id, before in pages:
        if cold:
            archive.cache.clear()
        started = time.perf_counter()
        batch = selectors.list_messages_for_user(
            user=reader, conversation_id=conversation_id, before=before, limit=50
        )
        timings.append((time.perf_counter() - started) * 1000)
        assert len(batch.messages) == 50, (conversation_id, before, len(batch.messages))
    return timings


def time_searches(reader: Any) -> dict[str, Any]:
    """Time a search that reads every segment it may (a word no message holds)."""
    from django.conf import settings

    from messaging import archive, search

    figures: dict[str, Any] = {"segments_read": settings.ARCHIVE_SEARCH_SEGMENTS}
    for label, cold in (("cold_ms", True), ("warm_ms", False)):
        runs = []
        for _ in range(3):
            if cold:
                archive.cache.clear()
            started = time.perf_counter()
            page = search.search_messages_for_user(user=reader, query="zzzqqq")
            runs.append((time.perf_counter() - started) * 1000)
            assert page.hits == []
        figures[label] = round(statistics.median(runs), 1)
    return figures


def summary(timings: list[float]) -> dict[str, float]:
    ordered = sorted(timings)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[max(0, round(0.95 * len(ordered)) - 1)], 2),
    }


def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.utils import timezone

    from messaging import archive

    call_command("migrate", verbosity=0)
    settings.STORAGES = {
        **settings.STORAGES,
        "archive": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": folder},
        },
    }
    loaded = load(args.messages, args.groups, args.seed)
    reader, seqs = loaded["reader"], loaded["seqs"]
    rng = random.Random(args.seed + 1)
    pages = [
        (group, rng.randint(60, seqs[group])) for group in rng.choices(list(seqs), k=args.pages)
    ]
    size_before = table_bytes()
    from_table = time_pages(reader, pages, cold=False)

    cutoff = timezone.now() - timedelta(days=30)
    deadline = time.monotonic() + args.max_seconds
    moved = 0
    started = time.perf_counter()
    for group in archive.conversations_to_archive(cutoff):
        moved += archive.archive_conversation(group, cutoff=cutoff)
        if time.monotonic() > deadline:
            break
    seconds = time.perf_counter() - started
    vacuum()  # what autovacuum does soon after: the archived rows' index entries go
    segment_bytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    from messaging.models import ArchiveSegment

    segments = ArchiveSegment.objects.count()
    done = moved == args.messages
    cold = time_pages(reader, pages, cold=True) if done else []
    if done:  # once to fill the cache (it holds ARCHIVE_CACHE_SEGMENTS), then timed
        settings.ARCHIVE_CACHE_SEGMENTS = len(pages) * 2
        time_pages(reader, pages, cold=False)
    warm = time_pages(reader, pages, cold=False) if done else []
    searches = time_searches(reader) if done else {}
    return {
        "messages": args.messages,
        "groups": args.groups,
        "load_seconds": round(loaded["load_seconds"], 1),
        "table_bytes": size_before,
        "archived": moved,
        "segments": segments,
        "archive_seconds": round(seconds, 1),
        "archived_per_second": round(moved / seconds) if seconds else 0,
        "segment_bytes": segment_bytes,
        "size_ratio": round(segment_bytes / size_before, 4),
        "page_from_table": summary(from_table),
        "page_from_archive_cold": summary(cold) if cold else None,
        "page_from_archive_warm": summary(warm) if warm else None,
        "search_archive": searches,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--groups", type=int, default=200)
    parser.add_argument("--pages", type=int, default=40)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    parser.add_argument("--keep", action="store_true", help="keep the database and folder")
    args = parser.parse_args()
    name = f"archive_bench_{os.getpid()}"
    os.environ["DATABASE_URL"] = setup_database(name)
    os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    folder = Path(tempfile.mkdtemp(prefix="archive-bench-"))
    try:
        figures = run(args, folder)
    finally:
        if not args.keep:
            from django.db import connections

            connections.close_all()
            drop_database(name)
            shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(figures, indent=2))
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "archive_cost.json").write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
