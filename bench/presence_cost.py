"""Presence cost per heartbeat at 10,000 connected users: Redis commands, Redis CPU, our CPU.

    python -m bench.presence_cost [--users 10000] [--rounds 3]

Starts its own redis-server on a free loopback port, connects every user (one socket
each) through `presence.services.connection_opened`, then runs `--rounds` rounds in
which every connection sends one heartbeat, as a socket does every
PRESENCE_WRITE_INTERVAL (12.5 s) in steady state, through the same code the gateway
runs (`presence.services.heartbeat`). Reports per heartbeat: Redis commands and round
trips, Redis CPU (from INFO), and the CPU of this process (the gateway's share).
The socket-side work per frame before that (a clock comparison) is not included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")


def redis_cpu(info: dict[str, Any]) -> float:
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def measure(url: str, users: int, rounds: int) -> dict[str, Any]:
    from redis.asyncio import Redis

    from presence import services
    from presence.store import RedisPresenceStore

    client = Redis.from_url(url)
    store = RedisPresenceStore(clients=[client], prefix="bench")
    now = time.time()
    sem = asyncio.Semaphore(200)  # 200 sockets' worth of concurrency, as a busy gateway

    async def opened(uid: int) -> None:
        async with sem:
            await services.connection_opened(store, uid, f"conn-{uid}", busy=False, now=now)

    await asyncio.gather(*(opened(u) for u in range(1, users + 1)))
    sys.stderr.write(f"{users} users connected\n")
    figures = []
    for round_no in range(1, rounds + 1):
        before = await client.info()
        cpu0, wall0 = time.process_time(), time.perf_counter()

        async def beat(uid: int) -> None:
            async with sem:
                await services.heartbeat(
                    store, uid, f"conn-{uid}", idle=False, changed=False, now=time.time()
                )

        await asyncio.gather(*(beat(u) for u in range(1, users + 1)))
        cpu1, wall1 = time.process_time(), time.perf_counter()
        after = await client.info()
        commands = int(after["total_commands_processed"]) - int(before["total_commands_processed"])
        figures.append(
            {
                "round": round_no,
                "heartbeats": users,
                "redis_commands_per_heartbeat": (commands - 1) / users,  # minus the INFO
                "redis_cpu_us_per_heartbeat": (redis_cpu(after) - redis_cpu(before)) / users * 1e6,
                "client_cpu_us_per_heartbeat": (cpu1 - cpu0) / users * 1e6,
                "wall_s": wall1 - wall0,
            }
        )
        sys.stderr.write(f"round {round_no}: {json.dumps(figures[-1])}\n")
    await client.aclose()
    return {"users": users, "round_trips_per_heartbeat": 1, "rounds": figures}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/presence_cost.json"))
    args = parser.parse_args()

    import django

    django.setup()
    from bench.harness import RedisServer

    with RedisServer() as redis_server:
        result = asyncio.run(measure(redis_server.url, args.users, args.rounds))
    rows = result["rounds"]
    median = sorted(rows, key=lambda r: r["redis_cpu_us_per_heartbeat"])[len(rows) // 2]
    print(f"presence cost at {args.users} connected users (median of {len(rows)} rounds)")
    print(
        f"  Redis commands per heartbeat: {median['redis_commands_per_heartbeat']:.2f}"
        " (1 round trip)"
    )
    print(f"  Redis CPU per heartbeat:      {median['redis_cpu_us_per_heartbeat']:.1f} us")
    print(f"  gateway CPU per heartbeat:    {median['client_cpu_us_per_heartbeat']:.1f} us")
    steady = args.users / 12.5
    print(
        f"  steady state ({args.users} users, a write per 12.5 s): {steady:.0f} heartbeats/s, "
        f"Redis {steady * median['redis_cpu_us_per_heartbeat'] / 1e4:.2f}% of a core, "
        f"gateways {steady * median['client_cpu_us_per_heartbeat'] / 1e4:.2f}% of a core"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
