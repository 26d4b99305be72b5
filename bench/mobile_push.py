"""Mobile push senders: notifications per second of one worker process, and CPU per push.

One process sends `--count` pushes one after another through the real backend
(`messaging.push.fcm.FcmBackend`, `messaging.push.apns.ApnsBackend`), as a Celery pool
process does, to the tests' local servers (`bench/pushfakes.py`: the OAuth + FCM
server over HTTP/1.1 keep-alive, the APNs server over TLS + HTTP/2) answering each
request after `--delay` (50 ms). The server runs in a child process, so the CPU time
measured is the sender's alone: building the payload, signing (cached JWTs), TLS,
HTTP/2 framing, parsing the answer. It does not include deciding, claiming and
recording (PostgreSQL): `bench.notifications` measures those for Web Push.

    python -m bench.mobile_push
    python -m bench.mobile_push --count 400 --delay 0.05 --concurrency 1,4,8,16

`--concurrency` is `PUSH_CONCURRENCY`: the requests in flight at once
(`messaging.push.send_all`), over one HTTP/2 connection to APNs, a keep-alive pool to
FCM.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import multiprocessing
import os
import tempfile
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

PAYLOAD = {
    "type": "message",
    "conversation": 12,
    "seq": 41,
    "message_id": 9001,
    "sender": {"id": 3, "display_name": "Ana Lima"},
    "title": "Ana Lima",
    "body": "Are we still on for the review at three? I moved it to room 4.",
    "unread": 3,
    "url": "/#c12",
}


def _serve(platform: str, directory: str, delay: float, pipe: Connection) -> None:
    """Run one local push server in this (child) process until the pipe closes."""
    from bench.pushfakes import Answer, ApnsServer, FcmServer

    server: FcmServer | ApnsServer = (
        FcmServer(Path(directory)) if platform == "fcm" else ApnsServer(Path(directory))
    )
    server.default = Answer(delay=delay)
    with server:
        pipe.send(server.worker_env())
        pipe.recv()  # until the parent is done
        pipe.send(
            {
                "pushes": len(server.sent()),
                "connections": getattr(server, "connections", 0),
                "max_in_flight": getattr(server, "max_in_flight", None),
                "rejections": server.rejections[:5],
            }
        )


@contextlib.contextmanager
def _local_server(platform: str, delay: float) -> Iterator[tuple[dict[str, str], dict[str, Any]]]:
    """Run a local push server in a child process; yield its settings and what it saw.

    What it saw (pushes, connections, requests in flight at most, rejections) is filled
    in when the block ends.
    """
    seen: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as directory:
        parent, child = multiprocessing.Pipe()
        server = multiprocessing.get_context("spawn").Process(
            target=_serve, args=(platform, directory, delay, child), daemon=True
        )
        server.start()
        try:
            yield parent.recv(), seen
        finally:
            parent.send("done")
            seen.update(parent.recv())
            server.join(10)


def measure(platform: str, count: int, delay: float, concurrency: int = 1) -> dict[str, Any]:
    """Send `count` pushes to one platform's local server, `concurrency` at a time."""
    import django
    from django.conf import settings

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    django.setup()
    from messaging.models import Device
    from messaging.push import backend_for, send_all

    with _local_server(platform, delay) as (env, seen):
        for name, value in env.items():
            setattr(settings, name, value)
        backend = backend_for(platform)
        assert backend.problem() is None, backend.problem()
        payload = PAYLOAD
        devices = [
            Device(platform=platform, token=f"{n:064x}" if platform == "apns" else f"fcm-{n:020d}")
            for n in range(count)
        ]
        # One push first: the TLS handshake, the OAuth token, the JWT (then reused).
        backend.send(devices[0], payload, topic="c12", urgency="high", ttl=3600)
        settings.PUSH_CONCURRENCY = concurrency
        sends = [
            functools.partial(backend.send, device, payload, topic="c12", urgency="high", ttl=3600)
            for device in devices[1:]
        ]
        cpu, wall = time.process_time(), time.perf_counter()
        outcomes: dict[str, int] = {}
        problems: dict[str, int] = {}
        for result in send_all(sends):
            outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
            if result.outcome != "sent":
                problems[result.status] = problems.get(result.status, 0) + 1
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    sent = count - 1
    return {
        "platform": platform,
        "concurrency": concurrency,
        "pushes": sent,
        "outcomes": outcomes,
        "problems": problems,
        "server_delay_ms": delay * 1000,
        "per_second": round(sent / wall, 1),
        "ms_per_push": round(wall / sent * 1000, 1),
        "overhead_ms_per_push": round(wall / sent * 1000 - delay * 1000, 1),
        "cpu_ms_per_push": round(cpu / sent * 1000, 2),
        "server": seen,
    }


def measure_aioapns(count: int, delay: float, concurrency: int) -> dict[str, Any]:
    """Send the same APNs pushes through aioapns (its own asyncio HTTP/2 client).

    aioapns is not a dependency of the server: `pip install aioapns==4.0` to run this.
    It always dials `api.push.apple.com:443`; here its protocol class is pointed at the
    local server and its TLS context trusts the server's certificate.
    """
    import asyncio
    import ssl

    from aioapns import APNs, NotificationRequest, PushType
    from aioapns.connection import APNsProductionClientProtocol

    from messaging.push.apns import apns_body

    with _local_server("apns", delay) as (env, seen):
        host, port = env["APNS_ENDPOINT"].removeprefix("https://").split(":")
        APNsProductionClientProtocol.APNS_SERVER = host
        APNsProductionClientProtocol.APNS_PORT = int(port)
        message = json.loads(apns_body(PAYLOAD | {"badge": 3}, thread="c12"))

        tls = ssl.create_default_context(cafile=env["APNS_CA_FILE"])
        tls.set_alpn_protocols(["h2"])  # aioapns sets it only on a context of its own

        async def run() -> tuple[dict[str, int], float, float]:
            client = APNs(
                key=Path(env["APNS_KEY_FILE"]).read_text(),
                key_id=env["APNS_KEY_ID"],
                team_id=env["APNS_TEAM_ID"],
                topic=env["APNS_TOPIC"],
                max_connections=1,
                ssl_context=tls,
            )
            gate = asyncio.Semaphore(concurrency)
            outcomes: dict[str, int] = {}

            async def send(n: int) -> None:
                request = NotificationRequest(
                    device_token=f"{n:064x}",
                    message=message,
                    time_to_live=3600,
                    priority=10,
                    collapse_key="c12",
                    push_type=PushType.ALERT,
                )
                async with gate:
                    result = await client.send_notification(request)
                key = "sent" if result.is_successful else str(result.status)
                outcomes[key] = outcomes.get(key, 0) + 1

            await send(0)  # the TLS handshake and the JWT first, as for httpx
            outcomes.clear()
            cpu, wall = time.process_time(), time.perf_counter()
            await asyncio.gather(*(send(n) for n in range(1, count)))
            return outcomes, time.process_time() - cpu, time.perf_counter() - wall

        outcomes, cpu, wall = asyncio.run(run())
    sent = count - 1
    return {
        "platform": "apns",
        "client": "aioapns 4.0",
        "concurrency": concurrency,
        "pushes": sent,
        "outcomes": outcomes,
        "server_delay_ms": delay * 1000,
        "per_second": round(sent / wall, 1),
        "cpu_ms_per_push": round(cpu / sent * 1000, 2),
        "server": seen,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--platforms", default="fcm,apns")
    parser.add_argument(
        "--concurrency",
        default="1,8",
        help="comma-separated PUSH_CONCURRENCY values to measure (default 1,8)",
    )
    parser.add_argument(
        "--aioapns", action="store_true", help="also send the APNs pushes through aioapns"
    )
    args = parser.parse_args()
    for concurrency in [int(c) for c in args.concurrency.split(",")]:
        for platform in args.platforms.split(","):
            print(json.dumps(measure(platform, args.count, args.delay, concurrency)))
        if args.aioapns:
            print(json.dumps(measure_aioapns(args.count, args.delay, concurrency)))


if __name__ == "__main__":
    main()
