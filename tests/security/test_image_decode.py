"""Image uploads cost what their header says, and the gateway never decodes one.

The finding: a 308 KB PNG of 6300 x 6300 RGBA at 16 bits (under the 40 MP pixel limit)
took 1.5 s and ~300 MB to thumbnail in the gateway. Now the header alone decides: width
x height x bytes per pixel over CHAT_MAX_IMAGE_DECODE_BYTES is 413, with nothing
decoded, stored or queued; an accepted image is thumbnailed by the worker's task, whose
failure leaves the file usable without a thumbnail.
"""

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image, ImageFile
from rest_framework.test import APIClient

from accounts import tokens
from accounts.models import User
from messaging import attachments, tasks, wire
from messaging.models import Attachment
from tests.security import pngs

pytestmark = pytest.mark.django_db

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def finding_png() -> bytes:
    """The finding's file: 6300 x 6300 RGBA, 16 bits a sample, ~320 KB."""
    return pngs.png(6300, 6300, depth=16, colour=pngs.RGBA)


@pytest.fixture(autouse=True)
def _media(settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def client(make_user: Any) -> APIClient:
    client = APIClient()
    user: User = make_user("uploader")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens.issue_pair(user)['access']}")
    return client


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Fail any pixel decode (Pillow's `load`) in this process; yield what tried."""
    tried: list[str] = []

    def refuse(image: ImageFile.ImageFile) -> Any:
        tried.append(f"{image.format} {image.mode} {image.size}")
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    yield tried


def upload(client: APIClient, data: bytes, name: str = "image.png") -> Any:
    return client.post(
        "/api/v1/attachments",
        {"file": SimpleUploadedFile(name, data, content_type="image/png")},
        format="multipart",
    )


def stored_files(settings: Any) -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


# --- (a) the finding's file ------------------------------------------------------------


def test_the_finding_png_is_refused_from_its_header_and_nothing_is_stored(
    client: APIClient,
    settings: Any,
    no_decoding: list[str],
    monkeypatch: pytest.MonkeyPatch,
    finding_png: bytes,
) -> None:
    queued: list[int] = []
    monkeypatch.setattr(tasks.make_thumbnail_task, "delay", queued.append)
    data = finding_png
    assert len(data) < 400_000  # a few hundred KB on the wire
    assert settings.CHAT_MAX_IMAGE_PIXELS > 6300 * 6300  # the pixel limit lets it through

    response = upload(client, data, "deep.png")

    assert response.status_code == 413
    error = response.json()["error"]
    limit = settings.CHAT_MAX_IMAGE_DECODE_BYTES
    assert error["code"] == "payload_too_large"
    assert error["message"] == (
        f"The image would take {6300 * 6300 * 8} bytes to decode "
        f"(6300 x 6300 pixels, 8 bytes each); the limit is {limit}."
    )
    assert error["details"] == {
        "field": "file",
        "max_decode_bytes": limit,
        "decode_bytes": 6300 * 6300 * 8,
    }
    assert no_decoding == []
    assert queued == []
    assert Attachment.objects.count() == 0
    assert stored_files(settings) == []


def test_the_default_decode_limit_is_128_mib(settings: Any) -> None:
    assert 128 * MiB == settings.CHAT_MAX_IMAGE_DECODE_BYTES


# --- what an image costs ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("depth", "colour", "mode", "per_pixel"),
    [
        (1, pngs.GREY, "1", 1),
        (8, pngs.GREY, "L", 1),
        (8, pngs.PALETTE, "P", 1),
        (16, pngs.GREY, "I;16", 2),
        (8, pngs.GREY_ALPHA, "LA", 4),  # Pillow keeps two bands in four bytes
        (8, pngs.RGB, "RGB", 4),  # and three
        (8, pngs.RGBA, "RGBA", 4),
        (16, pngs.RGB, "RGB", 6),  # Pillow keeps 8 bits, the file inflates to 6 bytes
        (16, pngs.RGBA, "RGBA", 8),
    ],
)
def test_bytes_per_pixel_are_pillows_or_the_files_whichever_is_more(
    depth: int, colour: int, mode: str, per_pixel: int, no_decoding: list[str]
) -> None:
    data = pngs.png(300, 200, depth=depth, colour=colour)

    header = attachments.inspect_image(io.BytesIO(data), "image/png")

    assert header == attachments.ImageHeader(300, 200, mode, per_pixel)
    assert header.decode_bytes == 300 * 200 * per_pixel


def test_the_limit_is_the_setting_and_inclusive(client: APIClient, settings: Any) -> None:
    settings.CHAT_MAX_IMAGE_DECODE_BYTES = 100 * 100 * 8

    assert upload(client, pngs.png(100, 100)).status_code == 201
    refused = upload(client, pngs.png(100, 101))
    assert refused.status_code == 413
    assert refused.json()["error"]["details"]["max_decode_bytes"] == 100 * 100 * 8


def test_a_jpeg_costs_the_reduced_scale_it_decodes_at(
    client: APIClient, settings: Any, no_decoding: list[str]
) -> None:
    out = io.BytesIO()
    Image.new("RGB", (2400, 1600), "teal").save(out, format="JPEG")
    settings.CHAT_MAX_IMAGE_DECODE_BYTES = 1 * MiB  # 2400 x 1600 x 4 is 15 MB

    header = attachments.inspect_image(io.BytesIO(out.getvalue()), "image/jpeg")

    # Decoded at 1/4 for a 320-pixel thumbnail: 600 x 400.
    assert header is not None
    assert (header.width, header.height) == (600, 400)
    assert header.decode_bytes <= 1 * MiB


def test_a_progressive_jpeg_costs_its_whole_coefficients(settings: Any) -> None:
    """libjpeg buffers a progressive image's coefficients at full size, whatever the scale."""
    out = io.BytesIO()
    Image.new("RGB", (2400, 1600), "teal").save(out, format="JPEG", progressive=True)
    settings.CHAT_MAX_IMAGE_DECODE_BYTES = 2400 * 1600 * 3 * 2 - 1

    with pytest.raises(attachments.ImageTooCostly) as refused:
        attachments.inspect_image(io.BytesIO(out.getvalue()), "image/jpeg")

    assert refused.value.details["decode_bytes"] == 2400 * 1600 * 3 * 2


def test_pillows_own_bomb_guard_is_a_400_not_a_500(client: APIClient, settings: Any) -> None:
    # Lift our limits: Pillow's guard (2 x Image.MAX_IMAGE_PIXELS) is the one that trips.
    settings.CHAT_MAX_IMAGE_PIXELS = 10**12
    settings.CHAT_MAX_IMAGE_DECODE_BYTES = 10**15
    assert 2 * (Image.MAX_IMAGE_PIXELS or 0) < 20_000 * 20_000
    header = pngs.chunk(b"IHDR", (20_000).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0]))
    bomb = pngs.SIGNATURE + header + pngs.chunk(b"IEND", b"")

    response = upload(client, bomb, "bomb.png")

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"
    assert response.json()["error"]["details"]["max_pixels"] == 10**12
    assert Attachment.objects.count() == 0


# --- thumbnails: made by the worker's task ---------------------------------------------


def store(make_user: Any, data: bytes, name: str = "image.png") -> Attachment:
    """Store an upload as the gateway does, without queueing its thumbnail."""
    return attachments.store_attachment(
        uploader=make_user(), upload=SimpleUploadedFile(name, data, content_type="image/png")
    )


def thumbnail_of(client: APIClient, attachment: Attachment) -> Any:
    return client.get(f"/api/v1/attachments/{attachment.pk}", {"thumbnail": 1})


def owner_client(attachment: Attachment) -> APIClient:
    client = APIClient()
    access = tokens.issue_pair(attachment.uploader)["access"]
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client


def test_the_gateway_stores_an_image_without_decoding_it(
    make_user: Any, no_decoding: list[str]
) -> None:
    attachment = store(make_user, pngs.png(1000, 800))

    assert attachment.thumbnail_status == Attachment.Thumbnail.PENDING
    assert not attachment.thumbnail
    assert no_decoding == []


def test_a_pending_thumbnail_answers_404_thumbnail_pending_then_the_image(
    make_user: Any,
) -> None:
    attachment = store(make_user, pngs.png(1000, 800, depth=8, colour=pngs.RGB))
    client = owner_client(attachment)
    payload = wire.attachment_payload(attachment)
    assert payload["thumbnail"] == "pending"
    assert payload["thumbnail_url"] == f"/api/v1/attachments/{attachment.pk}?thumbnail=1"

    pending = thumbnail_of(client, attachment)
    assert pending.status_code == 404
    assert pending.json()["error"]["code"] == "thumbnail_pending"

    assert attachments.make_thumbnail(attachment.pk) == "ready"

    attachment.refresh_from_db()
    assert wire.attachment_payload(attachment)["thumbnail"] == "ready"
    ready = thumbnail_of(client, attachment)
    assert ready.status_code == 200
    assert ready["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(b"".join(ready.streaming_content))).size == (320, 256)


def test_a_thumbnail_task_failure_leaves_the_file_usable_without_one(
    make_user: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    data = pngs.png(640, 480, depth=8, colour=pngs.RGBA)
    attachment = store(make_user, data, "logo.png")

    def crash(stream: Any, content_type: str) -> None:
        raise RuntimeError("the decoder fell over")

    monkeypatch.setattr(attachments, "render_thumbnail", crash)
    tasks.make_thumbnail_task.delay(attachment.pk)  # eager here, as under `make run`

    attachment.refresh_from_db()
    assert attachment.thumbnail_status == Attachment.Thumbnail.NONE
    assert not attachment.thumbnail
    assert "thumbnail of attachment" in caplog.text
    payload = wire.attachment_payload(attachment)
    assert (payload["thumbnail"], payload["thumbnail_url"]) == ("none", None)
    assert payload["content_type"] == "image/png"
    client = owner_client(attachment)
    file: Any = client.get(payload["url"], HTTP_ACCEPT="*/*")
    assert file.status_code == 200
    assert b"".join(file.streaming_content) == data
    missing = thumbnail_of(client, attachment)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


def test_pixels_that_do_not_decode_mean_no_thumbnail(make_user: Any) -> None:
    good = pngs.png(200, 100, depth=8, colour=pngs.RGB)
    idat = good.index(b"IDAT")
    broken = good[: idat + 4] + b"\x00" * 40 + good[idat + 44 :]  # header intact
    attachment = store(make_user, broken)
    assert attachment.thumbnail_status == Attachment.Thumbnail.PENDING

    assert attachments.make_thumbnail(attachment.pk) == "none"

    attachment.refresh_from_db()
    assert attachment.thumbnail_status == Attachment.Thumbnail.NONE


def test_a_task_delivered_again_after_a_crash_gives_up_rather_than_decode_again(
    make_user: Any, no_decoding: list[str]
) -> None:
    attachment = store(make_user, pngs.png(200, 100))
    # The first run claimed it, then its worker died mid-decode (its task comes back).
    Attachment.objects.filter(pk=attachment.pk).update(thumbnail_status="working")

    assert attachments.make_thumbnail(attachment.pk) == "none"

    assert no_decoding == []
    attachment.refresh_from_db()
    assert attachment.thumbnail_status == Attachment.Thumbnail.NONE
    assert attachments.make_thumbnail(attachment.pk) == "gone"  # and a duplicate: nothing


def test_limits_lowered_after_the_upload_still_hold_in_the_worker(
    make_user: Any, settings: Any, no_decoding: list[str]
) -> None:
    attachment = store(make_user, pngs.png(400, 400))
    settings.CHAT_MAX_IMAGE_DECODE_BYTES = 400 * 400 * 8 - 1

    assert attachments.make_thumbnail(attachment.pk) == "none"
    assert no_decoding == []


def test_without_a_broker_the_file_goes_without_a_thumbnail(
    make_user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kombu.exceptions import OperationalError

    attachment = store(make_user, pngs.png(200, 100))

    def unreachable(attachment_id: int) -> None:
        raise OperationalError("connection refused")

    monkeypatch.setattr(tasks.make_thumbnail_task, "delay", unreachable)
    tasks.queue_thumbnail(attachment)

    assert attachment.thumbnail_status == Attachment.Thumbnail.NONE


def test_an_upload_under_eager_celery_answers_ready(client: APIClient) -> None:
    """`make run` has no broker: the task runs inline and the answer already says ready."""
    response = upload(client, pngs.png(500, 500, depth=8, colour=pngs.RGBA))

    assert response.status_code == 201
    assert response.json()["thumbnail"] == "ready"
    thumb: Any = client.get(response.json()["thumbnail_url"])
    assert thumb.status_code == 200
    assert thumb["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(b"".join(thumb.streaming_content))).size == (320, 320)
