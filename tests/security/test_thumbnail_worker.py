"""Ten large images at once from one user: the gateway's memory stays flat, the worker thumbnails.

The finding: ten 6300 x 6300 16-bit PNGs uploaded at once took a gateway from 436 MB
to 3.2 GB, as each upload was decoded in it. Here a real uvicorn gateway takes ten
uploads of the largest image the default limit allows (4096 x 4096 RGBA at 16 bits:
exactly 128 MiB to decode) and a real Celery worker on the `thumbnails` queue makes
every thumbnail. The gateway's peak resident memory (VmHWM, reset before the uploads)
must stay within GATEWAY_BOUND of its resident memory before them: less than one
decoded image, so not one was decoded there. Memory is what the finding measured, so
memory is asserted; the wait for thumbnails is only a generous upper bound.
"""

import concurrent.futures
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from accounts import tokens
from accounts.models import User
from bench.harness import redis_db_url
from messaging.models import Attachment
from tests.e2e import conftest as e2e
from tests.e2e.conftest import MakeDeployment, MakeWorkers
from tests.security import pngs

# The e2e fixtures (tests/e2e/conftest.py): gateways and workers on the test database
# and a private Redis.
db_url = e2e.db_url
redis_server = e2e.redis_server
make_deployment = e2e.make_deployment
make_workers = e2e.make_workers

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

MiB = 1024 * 1024
UPLOADS = 10
SIDE = 4096  # x 4096 x 8 bytes = 128 MiB, the default CHAT_MAX_IMAGE_DECODE_BYTES
# The thumbnail worker's --concurrency: at most this many images decoded at once.
THUMBNAIL_CONCURRENCY = 1
# Growth of the gateway's peak over its resident memory before the uploads. Measured:
# 6 MiB for the ten uploads (the files, the requests, the header reads); with the
# thumbnails made in the gateway, as before, the same ten took it from 115 to 1092 MiB.
# One decoded 4096 x 4096 image alone is 64 MiB in Pillow (128 MiB at its peak).
GATEWAY_BOUND = 48 * MiB
# A thumbnail worker child holds one decoded image at a time: 64 MiB of RGBA and as
# much again while Pillow resizes it; the rest is the interpreter and Django. Measured:
# 236 MiB.
WORKER_BOUND = 400 * MiB
# Ten decodes one after the other on a loaded two-CPU machine: a bound, not a timing.
THUMBNAILS_WITHIN = 240.0


def status_kib(pid: int, field: str) -> int:
    """Return a `/proc/<pid>/status` memory field (VmRSS, VmHWM) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for pid {pid}")


def reset_peak(pid: int) -> bool:
    """Reset the process's VmHWM to its current VmRSS (clear_refs 5); False if not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def test_ten_concurrent_large_images_leave_the_gateway_flat_and_all_get_thumbnails(
    make_deployment: MakeDeployment,
    make_workers: MakeWorkers,
    redis_server: Any,
    make_user: Callable[..., User],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    env = {
        "CELERY_BROKER_URL": redis_db_url(redis_server.url, 1),
        "MEDIA_ROOT": str(tmp_path / "media"),
        "API_UPLOAD_BURST": str(UPLOADS + 5),  # one warm-up upload, then ten at once
    }
    deployment = make_deployment(gateways=1, env=env)
    celery = make_workers(
        deployment,
        workers=1,
        beat=False,
        env=env,
        concurrency=THUMBNAIL_CONCURRENCY,
        queues="thumbnails",
    )
    gateway = deployment.gateways[0]
    worker = celery.workers[0]
    base = gateway.http_url
    user = make_user("deep")
    auth = {"Authorization": f"Bearer {tokens.issue_pair(user)['access']}"}
    image = pngs.png(SIDE, SIDE, depth=16, colour=pngs.RGBA)

    def upload(data: bytes, name: str) -> dict[str, Any]:
        response = requests.post(
            f"{base}/api/v1/attachments",
            files={"file": (name, data, "image/png")},
            headers=auth,
            timeout=120,
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    def thumbnail(payload: dict[str, Any]) -> bytes | None:
        response = requests.get(f"{base}{payload['thumbnail_url']}", headers=auth, timeout=30)
        if response.status_code == 404:
            assert response.json()["error"]["code"] == "thumbnail_pending", response.text
            return None
        assert response.status_code == 200, response.text
        return response.content

    def wait_for_thumbnails(payloads: list[dict[str, Any]]) -> list[bytes]:
        deadline = time.monotonic() + THUMBNAILS_WITHIN
        done: dict[int, bytes] = {}
        while len(done) < len(payloads):
            for payload in payloads:
                if payload["id"] not in done and (data := thumbnail(payload)) is not None:
                    done[payload["id"]] = data
            if time.monotonic() > deadline:
                states = list(Attachment.objects.values_list("id", "thumbnail_status"))
                raise AssertionError(
                    f"{len(done)} of {len(payloads)} thumbnails in {THUMBNAILS_WITHIN} s: "
                    f"{states}\n{worker.output()[-5000:]}"
                )
            time.sleep(0.2)
        return [done[p["id"]] for p in payloads]

    # Warm up: the first upload imports what an upload needs (Pillow among it).
    warm = upload(image, "warm-up.png")
    assert warm["thumbnail"] in ("pending", "ready")
    wait_for_thumbnails([warm])

    pid = gateway.pid
    resident_before = status_kib(pid, "VmRSS")
    peak_was_reset = reset_peak(pid)
    with concurrent.futures.ThreadPoolExecutor(UPLOADS) as pool:
        payloads = list(pool.map(lambda n: upload(image, f"deep-{n}.png"), range(UPLOADS)))
    peak_after_uploads = status_kib(pid, "VmHWM")
    thumbnails = wait_for_thumbnails(payloads)
    peak = status_kib(pid, "VmHWM")
    worker_peak = max(status_kib(p, "VmHWM") for p in worker.group_pids())

    growth = peak - resident_before
    figures = {
        "gateway_resident_before_mib": resident_before / MiB,
        "gateway_peak_after_uploads_mib": peak_after_uploads / MiB,
        "gateway_peak_mib": peak / MiB,
        "gateway_peak_growth_mib": growth / MiB,
        "gateway_peak_was_reset": peak_was_reset,
        "worker_peak_mib": worker_peak / MiB,
    }
    for name, value in figures.items():  # the test's user properties (JUnit reports)
        request.node.user_properties.append((name, round(value, 1)))
    assert all(p["thumbnail"] in ("pending", "ready") for p in payloads)
    assert all(p["content_type"] == "image/png" for p in payloads)
    if peak_was_reset:
        assert growth <= GATEWAY_BOUND, figures
    else:  # the peak may be from before (start-up): it must not have moved much
        assert peak <= resident_before + GATEWAY_BOUND, figures
    assert worker_peak <= WORKER_BOUND, figures
    for data in thumbnails:
        with Image.open(io.BytesIO(data)) as thumb:
            assert thumb.format == "PNG"  # RGBA: transparency kept
            assert thumb.size == (320, 320)
    ready = Attachment.objects.filter(thumbnail_status=Attachment.Thumbnail.READY)
    assert ready.count() == UPLOADS + 1
