"""Search latency on 100,000 messages: p50/p95 of 20 queries through `messaging.search`.

Creates a scratch PostgreSQL database, migrates it (the generated `search_vector` column
and the GIN full-text and trigram indexes), loads 100,000 messages with COPY (Zipf-like
word frequencies, 5-30 words each) into 50 groups of 12 members, and times 20 searches
by one user who belongs to 10 of the groups (so every query is also filtered by
membership). Each query runs 3 times; the reported time is the median of the 3. The
database is dropped afterwards unless `--keep`.

    python -m bench.search_latency
    python -m bench.search_latency --messages 20000 --keep

Bounded: the load is one COPY, each query has the search's own statement timeout
(CHAT_SEARCH_TIMEOUT_MS), and the script stops after `--max-seconds` (default 300).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import string
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
SERVER = os.environ.get("BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432")
QUERIES = [
    "the",  # the commonest word: many matches, rank and page only 20
    "deploy",
    "deploy friday",
    "release notes",
    "meeting tomorrow",
    "conference",
    "confer",  # a word prefix
    "ference",  # a word infix: trigrams only
    "conferense",  # a misspelling: trigrams only
    "budget",
    "budget review",
    "xylophone",  # a rare word
    "zzzqqq",  # nothing
    "database migration",
    "lunch",
    "kubernetes cluster",
    "invoice",
    "hello team",
    "ship it",
    "quarterly",
]
TOPICS = [
    "deploy", "friday", "release", "notes", "meeting", "tomorrow", "conference", "budget",
    "review", "xylophone", "database", "migration", "lunch", "kubernetes", "cluster",
    "invoice", "hello", "team", "ship", "quarterly",
]  # fmt: skip
COMMON = [
    "the", "a", "to", "and", "is", "it", "of", "in", "we", "you", "that", "for", "on",
    "this", "be", "with", "are", "can", "do", "not", "at", "so", "have", "just", "ok",
]  # fmt: skip


def vocabulary(rng: random.Random, size: int) -> list[str]:
    """Return common words, then topic words, then made-up words (Zipf order)."""
    made = {
        "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 10))) for _ in range(size * 2)
    }
    return COMMON + TOPICS + sorted(made)[: size - len(COMMON) - len(TOPICS)]


def bodies(rng: random.Random, count: int, words: list[str]) -> list[str]:
    """Return message bodies with a Zipf-like word distribution."""
    weights = [1.0 / (rank + 1) ** 1.1 for rank in range(len(words))]
    out = []
    for _ in range(count):
        picked = rng.choices(words, weights=weights, k=rng.randint(5, 30))
        out.append(" ".join(picked))
    return out


def setup_database(name: str) -> str:
    """Create the scratch database; return its URL."""
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    return f"{SERVER}/{name}"


def drop_database(name: str) -> None:
    """Drop the scratch database."""
    with psycopg.connect(f"{SERVER}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def scratch_database(name: str, *, keep: bool = False) -> Iterator[None]:
    """Point this process's Django at a new scratch database `name` (no Redis).

    Django is set up by the caller, inside; the database is dropped afterwards unless
    `keep`.
    """
    os.environ["DATABASE_URL"] = setup_database(name)
    os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    sys.path.insert(0, str(ROOT))
    try:
        yield
    finally:
        if not keep:
            from django.db import connections

            connections.close_all()
            drop_database(name)


def load(messages: int, seed: int) -> dict[str, Any]:
    """Create users, groups and memberships with the ORM, messages with COPY."""
    from django.db import connection

    from accounts.models import User
    from messaging.models import Conversation, Membership, Message

    rng = random.Random(seed)
    users = User.objects.bulk_create(
        User(username=f"bench{i}", display_name=f"Bench {i}") for i in range(200)
    )
    groups = Conversation.objects.bulk_create(
        Conversation(kind="group", title=f"Group {i}") for i in range(50)
    )
    searcher = users[0]
    member_rows = []
    members: dict[int, list[int]] = {}
    for index, group in enumerate(groups):
        people = rng.sample(users[1:], 11) + ([searcher] if index < 10 else [users[1]])
        people = list({u.pk: u for u in people}.values())
        members[group.pk] = [u.pk for u in people]
        member_rows += [Membership(conversation=group, user=u) for u in people]
    Membership.objects.bulk_create(member_rows)
    texts = bodies(rng, messages, vocabulary(rng, 5000))
    seqs = dict.fromkeys(members, 0)
    table = Message._meta.db_table
    started = time.perf_counter()
    with connection.cursor() as cursor:
        raw = cursor.cursor
        columns = (
            "conversation_id, seq, version, kind, sender_id, client_msg_id, body, created_at, "
            "deleted, mentions"
        )
        with raw.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for text in texts:
                group_id = rng.choice(list(members))
                seqs[group_id] += 1
                seq = seqs[group_id]
                copy.write_row(
                    (group_id, seq, seq, "text", rng.choice(members[group_id]), uuid.uuid4(),
                     text, "2026-11-22T10:00:00Z", False, "[]")
                )  # fmt: skip
        for group_id, last in seqs.items():
            cursor.execute(
                "UPDATE messaging_conversation SET last_seq = %s WHERE id = %s", [last, group_id]
            )
        cursor.execute(f"ANALYZE {table}")
        cursor.execute("ANALYZE messaging_membership")
    return {"searcher": searcher, "load_seconds": time.perf_counter() - started}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Load the data and time the queries; return the figures."""
    import django

    django.setup()
    from django.core.management import call_command

    from messaging import search

    call_command("migrate", verbosity=0)
    loaded = load(args.messages, args.seed)
    searcher = loaded["searcher"]
    deadline = time.monotonic() + args.max_seconds
    timings: list[dict[str, Any]] = []
    for query in QUERIES[: args.queries]:
        runs = []
        hits = 0
        for _ in range(3):
            started = time.perf_counter()
            page = search.search_messages_for_user(user=searcher, query=query)
            runs.append((time.perf_counter() - started) * 1000)
            hits = len(page.hits)
        timings.append({"q": query, "ms": statistics.median(runs), "hits": hits})
        if time.monotonic() > deadline:
            break
    values = sorted(t["ms"] for t in timings)
    p95_index = max(0, round(0.95 * len(values) + 0.5) - 1)
    return {
        "messages": args.messages,
        "load_seconds": round(loaded["load_seconds"], 1),
        "queries": timings,
        "p50_ms": round(statistics.median(values), 1),
        "p95_ms": round(values[min(p95_index, len(values) - 1)], 1),
    }


def main() -> int:
    """Parse the options, run the benchmark in a scratch database, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=len(QUERIES))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args()
    with scratch_database(f"search_bench_{os.getpid()}", keep=args.keep):
        figures = run(args)
    for timing in figures["queries"]:
        print(f"{timing['ms']:8.1f} ms  {timing['hits']:3d} hits  {timing['q']!r}")
    count = len(figures["queries"])
    print(
        f"{figures['messages']} messages (loaded in {figures['load_seconds']} s): "
        f"p50 {figures['p50_ms']} ms, p95 {figures['p95_ms']} ms over {count} queries"
    )
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "search_latency.json").write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
