"""Mobile push senders: notifications per second of one worker process, and CPU per push.

One process sends `--count` pushes one after another through the real backend
(`messaging.push.fcm.FcmBackend`, `messaging.push.apns.ApnsBackend`), as a Celery pool
process does, to the tests' local servers (`tests/push/fakes.py`: the OAuth + FCM
server over HTTP/1.1 keep-alive, the APNs server over TLS + HTTP/2) answering each
request after `--delay` (50 ms). The server runs in a child process, so the CPU time
measured is the sender's alone: building the payload, signing (cached JWTs), TLS,
HTTP/2 framing, parsing the answer. It does not include deciding, claiming and
recording (PostgreSQL): `bench.notifications` measures those for Web Push.

    python -m bench.mobile_push
    python -m bench.mobile_push --count 400 --delay 0.05
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any


def _serve(platform: str, directory: str, delay: float, pipe: Connection) -> None:
    """Run one local push server in this (child) process until the pipe closes."""
    from tests.push.fakes import Answer, ApnsServer, FcmServer

    server: FcmServer | ApnsServer = (
        FcmServer(Path(directory)) if platform == "fcm" else ApnsServer(Path(directory))
    )
    server.default = Answer(delay=delay)
    with server:
        pipe.send(server.worker_env())
        pipe.recv()  # until the parent is done
        pipe.send({"pushes": len(server.sent()), "connections": getattr(server, "connections", 0)})


def measure(platform: str, count: int, delay: float) -> dict[str, Any]:
    """Send `count` pushes to one platform's local server; return the figures."""
    import django
    from django.conf import settings

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
    django.setup()
    from messaging.models import Device
    from messaging.push import backend_for

    with tempfile.TemporaryDirectory() as directory:
        parent, child = multiprocessing.Pipe()
        server = multiprocessing.get_context("spawn").Process(
            target=_serve, args=(platform, directory, delay, child), daemon=True
        )
        server.start()
        env: dict[str, str] = parent.recv()
        for name, value in env.items():
            setattr(settings, name, value)
        backend = backend_for(platform)
        assert backend.problem() is None, backend.problem()
        payload = {
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
        devices = [
            Device(platform=platform, token=f"{n:064x}" if platform == "apns" else f"fcm-{n:020d}")
            for n in range(count)
        ]
        # One push first: the TLS handshake, the OAuth token, the JWT (then reused).
        backend.send(devices[0], payload, topic="c12", urgency="high", ttl=3600)
        cpu, wall = time.process_time(), time.perf_counter()
        outcomes: dict[str, int] = {}
        for device in devices[1:]:
            result = backend.send(device, payload, topic="c12", urgency="high", ttl=3600)
            outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        parent.send("done")
        seen = parent.recv()
        server.join(10)
    sent = count - 1
    return {
        "platform": platform,
        "pushes": sent,
        "outcomes": outcomes,
        "server_delay_ms": delay * 1000,
        "per_second": round(sent / wall, 1),
        "ms_per_push": round(wall / sent * 1000, 1),
        "overhead_ms_per_push": round(wall / sent * 1000 - delay * 1000, 1),
        "cpu_ms_per_push": round(cpu / sent * 1000, 2),
        "server": seen,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--platforms", default="fcm,apns")
    args = parser.parse_args()
    for platform in args.platforms.split(","):
        print(json.dumps(measure(platform, args.count, args.delay)))


if __name__ == "__main__":
    main()
