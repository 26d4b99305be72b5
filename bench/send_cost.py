"""CPU and wall time per send and per receipt written by the services, in this process.

    python -m bench.send_cost [--sends 2000] [--rounds 3] [--batch 1]

Creates a scratch database on the local PostgreSQL server (`BENCH_POSTGRES`, default
postgres://postgres@127.0.0.1:5432, as `bench.connect_cost`), migrates it, opens a
direct chat of two users and times `--rounds` rounds of: `--sends` sends into it (`send`),
then as many delivery receipts of the other member (`delivered`), each raising the
marker to the next of those messages, then as many read receipts (`read`). One call
after the other on a warm connection, as a gateway's database thread runs them: outside
any transaction, with the per-user rate limit (lifted so it never refuses) on the Redis
of `REDIS_URL` when it is set, as in a gateway. The broadcast is left out: a gateway
hands it to its fan-out queue and goes on, and outside a gateway it would start an event
loop per call, so here it is dropped. Prints this process's CPU, the CPU of its
PostgreSQL backend (read from `/proc`, so only when the server runs on this machine;
`-` otherwise) and the wall time per call, in microseconds (the wall time includes the
commit's flush to disk). With `--batch N` (N > 1) the sends go N at a time to
`services.send_messages`, as a busy gateway stores the sends of its sockets (one
statement per N sends), and the figures are still per send. The scratch database is
dropped afterwards.
"""

from __future__ import annotations

import argparse
import os
import time
import uuid

from bench.search_latency import scratch_database

Figures = dict[str, list[tuple[float, float | None, float]]]


def backend_cpu(pid: int) -> float | None:
    """Return the CPU seconds used so far by process `pid`; None if it is not on this machine."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def measure(sends: int, rounds: int, batch: int = 1) -> Figures:
    """Return (CPU µs, PostgreSQL backend CPU µs or None, wall µs) per call of each write."""
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connection

    from accounts.models import User
    from messaging import events, services

    call_command("migrate", verbosity=0)
    settings.DEBUG = False  # as the gateways run: no query log, no debug cursor
    settings.CHAT_SEND_RATE = settings.CHAT_SEND_BURST = 10_000_000
    events.send_now = lambda batch: None  # no broadcast: see the module's docstring
    ana, bo = User.objects.bulk_create([User(username="cost-ana"), User(username="cost-bo")])
    conversation, _ = services.create_direct_conversation(user=ana, other_user_id=bo.pk)
    pk = conversation.pk
    seqs: list[int] = []

    def send(n: int) -> None:
        if batch > 1:
            if n % batch == 0:  # the batch of sends n .. n + batch - 1
                requests = [
                    services.SendRequest(ana, pk, uuid.uuid4(), f"m{k}")
                    for k in range(n, n + batch)
                ]
                for outcome in services.send_messages(requests):
                    assert isinstance(outcome, services.SendResult), outcome
                    seqs.append(outcome.message.seq)
            return
        sent = services.send_message(
            sender=ana, conversation_id=pk, client_msg_id=uuid.uuid4(), body=f"m{n}"
        )
        seqs.append(sent.message.seq)

    def delivered(n: int) -> None:  # each one raises bo's marker to the next message
        services.mark_delivered(user=bo, conversation_id=pk, seq=seqs[n])

    def read(n: int) -> None:
        services.mark_read(user=bo, conversation_id=pk, seq=seqs[n])

    for n in range(20 * batch):  # a warm connection, the statements prepared
        send(n)
        delivered(n)
        read(n)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        backend = int(cursor.fetchone()[0])
    figures: Figures = {"send": [], "delivered": [], "read": []}
    for _ in range(rounds):
        first = len(seqs)
        for name, write in (("send", send), ("delivered", delivered), ("read", read)):
            cpu, wall, server = time.process_time(), time.perf_counter(), backend_cpu(backend)
            for n in range(first, first + sends):
                write(n)
            server_after = backend_cpu(backend)
            figures[name].append(
                (
                    (time.process_time() - cpu) / sends * 1e6,
                    None
                    if server is None or server_after is None
                    else (server_after - server) / sends * 1e6,
                    (time.perf_counter() - wall) / sends * 1e6,
                )
            )
    return figures


def main() -> int:
    """Parse the options, run in a scratch database, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1, help="sends per send_messages call")
    args = parser.parse_args()
    redis_url = os.environ.get("REDIS_URL")
    with scratch_database(f"send_cost_{os.getpid()}"):
        if redis_url:
            os.environ["REDIS_URL"] = redis_url  # the rate limit's Redis, as in a gateway
        import django

        django.setup()
        figures = measure(args.sends - args.sends % args.batch, args.rounds, args.batch)
    for name, rounds in figures.items():
        for cpu, server, wall in rounds:
            backend = "      -" if server is None else f"{server:7.1f}"
            print(
                f"{name:9s} {cpu:7.1f} µs of CPU, {backend} µs of PostgreSQL's, "
                f"{wall:7.1f} µs of wall time per call"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
