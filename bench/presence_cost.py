"""Presence cost per heartbeat at 10,000 connected users: Redis commands, Redis CPU, our CPU.

    python -m bench.presence_cost [--users 10000] [--rounds 3] [--gateways 2]
                                  [--open-batch 200]

Starts its own redis-server on a free loopback port, connects every user (one socket
each) through `presence.services.connection_opened`, 200 at a time as a busy gateway's
handshakes (reported per open: Redis commands, Redis CPU, this process's CPU; opens
that arrive together share a script call, at most `--open-batch`: 1 is one call each,
as before they were gathered), then runs `--rounds` rounds in
which every connection sends one heartbeat, as a socket does every other ping in steady
state (50 s: the first ping at least PRESENCE_WRITE_INTERVAL, 30 s, after the last
write). Each round is run twice:
- one by one (`presence.services.heartbeat`, a pipeline per heartbeat: what the
  gateway did before it gathered them), and
- gathered, through the gateway's own code path (`presence.beats.BeatBatch`), in
  batches of the size a gateway gathers in steady state: the users' heartbeats per
  second, shared by `--gateways`, times `PRESENCE_WRITE_WINDOW`.
Reports per heartbeat: Redis commands, Redis CPU (from INFO), and the CPU of this
process (the gateway's share). The socket-side work per frame before that (a clock
comparison) is not included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")


def redis_cpu(info: dict[str, Any]) -> float:
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def measure(
    url: str, users: int, rounds: int, gateways: int, open_batch: int
) -> dict[str, Any]:
    from django.conf import settings
    from redis.asyncio import Redis

    from chatsite.redis import async_clients
    from presence import services
    from presence import store as presence_store
    from presence.beats import BeatBatch
    from presence.store import RedisPresenceStore

    # The gathered path writes through the gateway's store: point it at this server.
    settings.REDIS_URL, settings.REDIS_SHARDS, settings.REDIS_KEY_PREFIX = url, [], "bench"
    settings.PRESENCE_STORE = "redis"
    window = settings.PRESENCE_WRITE_WINDOW
    # A socket pinging every heartbeat writes at the first ping PRESENCE_WRITE_INTERVAL on.
    heartbeat = settings.WS_HEARTBEAT_INTERVAL
    every = math.ceil(settings.PRESENCE_WRITE_INTERVAL / heartbeat) * heartbeat
    batch_size = max(1, round(users / every / gateways * window))
    client = Redis.from_url(url)
    store = RedisPresenceStore(clients=[client], prefix="bench")
    now = time.time()
    sem = asyncio.Semaphore(200)  # 200 sockets' worth of concurrency, as a busy gateway

    async def opened(uid: int) -> None:
        async with sem:
            await services.connection_opened(store, uid, f"conn-{uid}", busy=False, now=now)

    presence_store.OPEN_BATCH = open_batch
    before = await client.info()
    cpu0 = time.process_time()
    await asyncio.gather(*(opened(u) for u in range(1, users + 1)))
    cpu1 = time.process_time()
    after = await client.info()
    opens = {
        "open_batch": open_batch,
        "redis_commands_per_open": (
            int(after["total_commands_processed"]) - int(before["total_commands_processed"]) - 1
        )
        / users,
        "redis_cpu_us_per_open": (redis_cpu(after) - redis_cpu(before)) / users * 1e6,
        "client_cpu_us_per_open": (cpu1 - cpu0) / users * 1e6,
    }
    sys.stderr.write(f"{users} users connected: {json.dumps(opens)}\n")
    sys.stderr.write(f"gathered heartbeat batches of {batch_size}\n")

    async def one_by_one() -> None:
        async def beat(uid: int) -> None:
            async with sem:
                await services.heartbeat(
                    store, uid, f"conn-{uid}", idle=False, changed=False, now=time.time()
                )

        await asyncio.gather(*(beat(u) for u in range(1, users + 1)))

    async def gathered() -> None:
        settings.PRESENCE_WRITE_WINDOW = 0.001  # CPU depends on the batch size, not the wait
        beats = BeatBatch()
        for first in range(1, users + 1, batch_size):
            for uid in range(first, min(users + 1, first + batch_size)):
                beats.queue(uid, f"conn-{uid}", lambda: False)
            while beats.pending or beats.writing:
                await asyncio.sleep(0.001)
        settings.PRESENCE_WRITE_WINDOW = window

    figures = []
    for round_no in range(1, rounds + 1):
        for mode, run in (("one by one", one_by_one), ("gathered", gathered)):
            before = await client.info()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await run()
            cpu1, wall1 = time.process_time(), time.perf_counter()
            after = await client.info()
            commands = int(after["total_commands_processed"]) - int(
                before["total_commands_processed"]
            )
            figures.append(
                {
                    "round": round_no,
                    "mode": mode,
                    "heartbeats": users,
                    "redis_commands_per_heartbeat": (commands - 1) / users,  # minus the INFO
                    "redis_cpu_us_per_heartbeat": (redis_cpu(after) - redis_cpu(before))
                    / users
                    * 1e6,
                    "client_cpu_us_per_heartbeat": (cpu1 - cpu0) / users * 1e6,
                    "wall_s": wall1 - wall0,
                }
            )
            sys.stderr.write(f"round {round_no}: {json.dumps(figures[-1])}\n")
    for shared in async_clients():
        await shared.aclose()
    await client.aclose()
    return {"users": users, "batch_size": batch_size, "opens": opens, "rounds": figures}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gateways", type=int, default=2, help="gateways sharing the users")
    parser.add_argument(
        "--open-batch", type=int, default=200, help="opens a script call at most (1: one each)"
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/presence_cost.json"))
    args = parser.parse_args()

    import django

    django.setup()
    from bench.harness import RedisServer

    with RedisServer() as redis_server:
        result = asyncio.run(
            measure(redis_server.url, args.users, args.rounds, args.gateways, args.open_batch)
        )
    opens = result["opens"]
    print(f"presence cost at {args.users} connected users (median of {args.rounds} rounds)")
    print(f"  connecting, at most {args.open_batch} opens a script call:")
    print(f"    Redis commands per open:      {opens['redis_commands_per_open']:.2f}")
    print(f"    Redis CPU per open:           {opens['redis_cpu_us_per_open']:.1f} us")
    print(f"    gateway CPU per open:         {opens['client_cpu_us_per_open']:.1f} us")
    steady = args.users / 12.5
    for mode in ("one by one", "gathered"):
        rows = [r for r in result["rounds"] if r["mode"] == mode]
        median = sorted(rows, key=lambda r: r["client_cpu_us_per_heartbeat"])[len(rows) // 2]
        label = mode if mode == "one by one" else f"gathered, {result['batch_size']} a batch"
        print(f"  {label}:")
        print(f"    Redis commands per heartbeat: {median['redis_commands_per_heartbeat']:.2f}")
        print(f"    Redis CPU per heartbeat:      {median['redis_cpu_us_per_heartbeat']:.1f} us")
        print(f"    gateway CPU per heartbeat:    {median['client_cpu_us_per_heartbeat']:.1f} us")
        print(
            f"    steady state ({args.users} users, a write per 12.5 s): {steady:.0f} "
            f"heartbeats/s, Redis {steady * median['redis_cpu_us_per_heartbeat'] / 1e4:.2f}% "
            f"of a core, gateways {steady * median['client_cpu_us_per_heartbeat'] / 1e4:.2f}%"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
