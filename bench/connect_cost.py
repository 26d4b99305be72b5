"""CPU per call of the database reads a connect and a catch-up make, in this process.

    python -m bench.connect_cost [--users 10000] [--calls 1000] [--rounds 3]

Creates a scratch database on the local PostgreSQL server (`BENCH_POSTGRES`, default
postgres://postgres@127.0.0.1:5432), migrates it, adds `--users` users (analysed, as a
database in use is) and a group of two with one message, then times, on a warm
connection, `--rounds` rounds of `--calls` calls each of:
- `pool`: a call through the gateway's database pool that returns at once (50 at a time);
- `token`: the handshake's check of the user behind an access token (`user_behind`);
- `snapshot`: the conversation snapshot of `session.ready`;
- `fetch`: a catch-up fetch of the one message after position 0, with its frame.
Prints this process's CPU time per call (what a gateway spends; PostgreSQL's is not
counted), in microseconds. The scratch database is dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from collections.abc import Callable

from bench.search_latency import scratch_database


def per_call_us(work: Callable[[], object], calls: int) -> float:
    """Return this process's CPU microseconds per call of `work`."""
    started = time.process_time()
    for _ in range(calls):
        work()
    return (time.process_time() - started) / calls * 1e6


def pool_us(calls: int) -> float:
    """Return the CPU microseconds per `db` call of a function that returns at once."""
    from chatsite.gateway.dbthreads import db

    async def run() -> float:
        gate = asyncio.Semaphore(50)

        async def one() -> None:
            async with gate:
                await db(lambda: None)

        started = time.process_time()
        await asyncio.gather(*(one() for _ in range(calls)))
        return (time.process_time() - started) / calls * 1e6

    return asyncio.run(run())


def measure(users: int, calls: int, rounds: int) -> dict[str, list[float]]:
    """Set up the data, then time each read `rounds` times."""
    from django.core.management import call_command
    from django.db import connection
    from rest_framework_simplejwt.tokens import AccessToken

    from accounts.models import User
    from accounts.tokens import issue_pair, user_behind
    from messaging import selectors, services, wire

    call_command("migrate", verbosity=0)
    User.objects.bulk_create([User(username=f"cost{n:05d}") for n in range(users)], batch_size=5000)
    ana, bo = User.objects.order_by("pk")[:2]
    group = services.create_group(creator=ana, title="cost", member_ids=[bo.pk])
    services.send_message(
        sender=ana, conversation_id=group.pk, client_msg_id=uuid.uuid4(), body="hello"
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    token = AccessToken(issue_pair(bo)["access"])  # type: ignore[arg-type]

    def fetch() -> None:
        page = selectors.list_messages_for_user(user=bo, conversation_id=group.pk, after=0)
        wire.messages_batch_frame(None, group.pk, page.messages, page.upto, page.has_more)

    reads: dict[str, Callable[[], object]] = {
        "token": lambda: user_behind(token),
        "snapshot": lambda: selectors.list_conversations_for_user(user=bo),
        "fetch": fetch,
    }
    for read in reads.values():  # a warm connection, statements prepared once
        for _ in range(10):
            read()
    figures: dict[str, list[float]] = {"pool": [], **{name: [] for name in reads}}
    for _ in range(rounds):
        figures["pool"].append(pool_us(calls * 10))
        for name, read in reads.items():
            figures[name].append(per_call_us(read, calls))
    return figures


def main() -> int:
    """Parse the options, run in a scratch database, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with scratch_database(f"connect_cost_{os.getpid()}"):
        import django

        django.setup()
        figures = measure(args.users, args.calls, args.rounds)
    for read, rounds in figures.items():
        print(f"{read:8s} " + "  ".join(f"{us:7.1f}" for us in rounds) + "  µs of CPU per call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
