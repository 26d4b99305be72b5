"""Attachments (RELIABILITY.md S10): size cap while reading, content typing, pixel floods,
file names, who may download, and the headers that keep a download from running."""

import io
import struct
import uuid
import zlib
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.files.uploadhandler import MemoryFileUploadHandler
from django.http.multipartparser import MultiPartParser
from django.test.client import BOUNDARY, encode_multipart
from PIL import Image

from accounts.models import User
from chatsite.rest import PayloadTooLarge
from messaging import attachments, services
from messaging.models import Attachment, Conversation
from tests.api.conftest import Client, error_code, send

pytestmark = pytest.mark.django_db

HTML = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'


def png(width: int = 64, height: int = 48, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height), "red").save(out, format="PNG")
    return out.getvalue()


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge canvas (a decompression bomb's first bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def upload(client: Any, data: bytes, name: str = "file.bin", claimed: str = "image/png") -> Any:
    return client.post(
        "/api/v1/attachments",
        {"file": SimpleUploadedFile(name, data, content_type=claimed)},
        format="multipart",
    )


def download(
    client: Any, attachment_id: int, accept: str = "*/*", **params: Any
) -> tuple[Any, bytes]:
    """GET an attachment; return the response and its body (reading it closes the file)."""
    response = client.get(f"/api/v1/attachments/{attachment_id}", params, HTTP_ACCEPT=accept)
    if response.streaming:
        return response, b"".join(response.streaming_content)
    return response, response.content


def stored_files(settings: Any) -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


# --- storing ---------------------------------------------------------------------------


def test_png_upload_is_typed_stored_and_thumbnailed(
    client_for: Client, ana: User, settings: Any
) -> None:
    response = upload(client_for(ana), png(800, 600), "cat.png")

    assert response.status_code == 201
    body = response.json()
    attachment = Attachment.objects.get(pk=body["id"])
    assert body == {
        "id": attachment.pk,
        "filename": "cat.png",
        "content_type": "image/png",
        "size": attachment.size,
        "url": f"/api/v1/attachments/{attachment.pk}",
        # Tests run Celery eagerly (as `make run` does): the task ran before the answer.
        "thumbnail": "ready",
        "thumbnail_url": f"/api/v1/attachments/{attachment.pk}?thumbnail=1",
        "duration_ms": None,
        "voice": False,
    }
    assert len(attachment.sha256) == 64
    with attachment.thumbnail.open("rb") as stored, Image.open(stored) as thumb:
        assert thumb.size == (320, 240)
    assert all(Path(settings.MEDIA_ROOT) in p.parents for p in stored_files(settings))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"GIF89a" + b"\x00" * 20, "application/octet-stream"),  # GIF magic, not a GIF
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "application/pdf"),
        (b"PK\x03\x04" + b"\x00" * 26, "application/zip"),
        ("plain text, ünïcode ✓\n".encode(), "text/plain"),
        (HTML, "text/plain"),
        (SVG, "text/plain"),
        (b"\x00\x01\x02binary", "application/octet-stream"),
        (b"\xff\xfe\xfd not utf-8", "application/octet-stream"),
    ],
)
def test_type_comes_from_the_content_never_the_client(
    client_for: Client, ana: User, data: bytes, expected: str
) -> None:
    response = upload(client_for(ana), data, "x.png", claimed="image/png")

    assert response.status_code == 201
    assert response.json()["content_type"] == expected
    assert response.json()["thumbnail"] == "none"
    assert response.json()["thumbnail_url"] is None


def test_png_magic_on_top_of_html_is_not_an_image(client_for: Client, ana: User) -> None:
    polyglot = b"\x89PNG\r\n\x1a\n" + HTML

    response = upload(client_for(ana), polyglot, "x.png")

    assert response.json()["content_type"] == "application/octet-stream"


def test_oversize_upload_is_413_and_nothing_is_stored(
    client_for: Client, ana: User, settings: Any
) -> None:
    settings.CHAT_MAX_UPLOAD_BYTES = 1000

    streamed = upload(client_for(ana), b"a" * 5000, "big.txt")  # caught while reading
    declared = upload(client_for(ana), b"a" * 200_000, "bigger.txt")  # caught by its length
    exact = upload(client_for(ana), b"a" * 1000, "fits.txt")

    for response in (streamed, declared):
        assert response.status_code == 413
        assert error_code(response) == "payload_too_large"
        assert response.json()["error"]["details"] == {"max_bytes": 1000}
    assert exact.status_code == 201
    assert Attachment.objects.count() == 1
    assert len(stored_files(settings)) == 1


def test_size_limit_stops_reading_the_body(settings: Any) -> None:
    settings.CHAT_MAX_UPLOAD_BYTES = 100_000
    total = 160_000
    body = encode_multipart(BOUNDARY, {"file": SimpleUploadedFile("f.bin", b"x" * total)})

    class Counting(io.BytesIO):
        consumed = 0

        def read(self, size: int | None = -1) -> bytes:
            chunk = super().read(size)
            Counting.consumed += len(chunk)
            return chunk

    meta = {
        "CONTENT_TYPE": f"multipart/form-data; boundary={BOUNDARY}",
        "CONTENT_LENGTH": str(len(body)),
    }
    handlers = [attachments.SizeLimitedUploadHandler(), MemoryFileUploadHandler()]
    with pytest.raises(PayloadTooLarge):
        MultiPartParser(meta, Counting(body), handlers).parse()

    assert Counting.consumed < len(body)


def test_empty_or_missing_file_is_400(client_for: Client, ana: User) -> None:
    empty = upload(client_for(ana), b"", "empty.txt")
    missing = client_for(ana).post("/api/v1/attachments", {"other": "x"}, format="multipart")

    assert (empty.status_code, missing.status_code) == (400, 400)
    assert missing.json()["error"]["details"]["field"] == "file"


@pytest.mark.parametrize(
    ("width", "height"),
    [(50_000, 50_000), (7_000, 7_000)],  # past Pillow's own guard; past ours only
)
def test_pixel_flood_is_rejected_before_decoding(
    client_for: Client, ana: User, width: int, height: int
) -> None:
    response = upload(client_for(ana), png_header_claiming(width, height), "bomb.png")

    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == "file"
    assert response.json()["error"]["details"]["max_pixels"] == 40_000_000
    assert Attachment.objects.count() == 0


def test_pixel_limit_is_the_setting(client_for: Client, ana: User, settings: Any) -> None:
    settings.CHAT_MAX_IMAGE_PIXELS = 100

    response = upload(client_for(ana), png(20, 20), "small.png")

    assert response.status_code == 400


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\win.ini", "win.ini"),
        ("/abs/path/report.pdf", "report.pdf"),
        ("..", "file"),
        (".hidden", "hidden"),
        ("evil\u202egnp.exe", "evilgnp.exe"),
        ("tab\tand\x07bell.txt", "tabandbell.txt"),
        ("a" * 300 + ".txt", "a" * 196 + ".txt"),
    ],
)
def test_file_names_are_sanitised(given: str, shown: str) -> None:
    assert attachments.sanitize_filename(given) == shown


def test_uploaded_dot_dot_names_never_reach_the_disk(
    client_for: Client, ana: User, settings: Any
) -> None:
    response = upload(client_for(ana), b"hello", "../../../outside.txt")

    assert response.status_code == 201
    assert response.json()["filename"] == "outside.txt"
    files = stored_files(settings)
    assert len(files) == 1 and "outside" not in files[0].name
    assert files[0].resolve().is_relative_to(Path(settings.MEDIA_ROOT).resolve())


# --- downloading -----------------------------------------------------------------------


def posted(
    client_for: Client, uploader: User, conversation: Conversation, data: bytes, name: str
) -> int:
    attachment_id = int(upload(client_for(uploader), data, name).json()["id"])
    services.send_message(
        sender=uploader,
        conversation_id=conversation.pk,
        client_msg_id=uuid.uuid4(),
        body="see attached",
        attachment_ids=[attachment_id],
    )
    return attachment_id


def test_image_is_served_inline_with_safe_headers(
    client_for: Client, ana: User, bo: User, group: Conversation
) -> None:
    attachment_id = posted(client_for, ana, group, png(), "cat.png")

    response, content = download(client_for(bo), attachment_id, accept="image/png")

    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    assert response["Content-Disposition"].startswith("inline")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response["Content-Security-Policy"]
    assert content == png()


def test_thumbnail_is_served_inline(
    client_for: Client, ana: User, bo: User, group: Conversation
) -> None:
    attachment_id = posted(client_for, ana, group, png(1000, 1000, "RGBA"), "logo.png")

    response, content = download(client_for(bo), attachment_id, thumbnail=1)

    assert response.status_code == 200
    assert response["Content-Type"] == "image/png"
    thumb = Image.open(io.BytesIO(content))
    assert thumb.size == (320, 320)


@pytest.mark.parametrize("data", [HTML, SVG, b"\x89PNG\r\n\x1a\n" + HTML])
def test_html_and_svg_disguised_as_png_download_as_attachments(
    client_for: Client, ana: User, bo: User, group: Conversation, data: bytes
) -> None:
    attachment_id = posted(client_for, ana, group, data, "innocent.png")

    response, _ = download(client_for(bo), attachment_id)

    assert response.status_code == 200
    assert response["Content-Type"] in ("text/plain; charset=utf-8", "application/octet-stream")
    assert response["Content-Disposition"].startswith("attachment;")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response["Content-Security-Policy"]
    no_thumb, _ = download(client_for(bo), attachment_id, thumbnail=1)
    assert no_thumb.status_code == 404


def test_only_the_uploader_reads_an_unposted_file(client_for: Client, ana: User, bo: User) -> None:
    attachment_id = upload(client_for(ana), b"draft", "draft.txt").json()["id"]

    assert download(client_for(ana), attachment_id)[0].status_code == 200
    assert download(client_for(bo), attachment_id)[0].status_code == 404


def test_outsiders_get_the_404_of_a_missing_attachment(
    client_for: Client, ana: User, bo: User, cy: User, group: Conversation, make_user: Any
) -> None:
    attachment_id = posted(client_for, ana, group, b"minutes of the meeting", "minutes.txt")
    services.remove_member(actor=ana, conversation_id=group.pk, user_id=bo.pk)
    late = make_user("late")
    services.add_members(actor=ana, conversation_id=group.pk, user_ids=[late.pk])

    answers = {
        "non-member": download(client_for(cy), attachment_id)[0],
        "removed member": download(client_for(bo), attachment_id)[0],
        "joined after it was posted": download(client_for(late), attachment_id)[0],
        "missing id": download(client_for(cy), attachment_id + 1000)[0],
    }

    for who, response in answers.items():
        assert response.status_code == 404, who
        assert response.json() == {
            "error": {"code": "not_found", "message": "No such attachment."}
        }, who
    assert download(client_for(ana), attachment_id)[0].status_code == 200
    assert download(client_for(), attachment_id)[0].status_code == 401


def test_deleting_the_message_withdraws_the_file_from_members(
    client_for: Client, ana: User, bo: User, group: Conversation
) -> None:
    attachment_id = posted(client_for, ana, group, b"oops", "oops.txt")
    message = group.messages.filter(kind="text").get()
    services.delete_message(user=ana, conversation_id=group.pk, message_id=message.pk)

    assert download(client_for(bo), attachment_id)[0].status_code == 404


def test_message_payload_carries_the_attachment(
    client_for: Client, ana: User, bo: User, group: Conversation
) -> None:
    attachment_id = upload(client_for(ana), png(), "cat.png").json()["id"]

    sent = client_for(ana).post(
        f"/api/v1/conversations/{group.pk}/messages",
        {"client_msg_id": str(uuid.uuid4()), "body": "", "attachments": [attachment_id]},
        format="json",
    )
    foreign = client_for(bo).post(
        f"/api/v1/conversations/{group.pk}/messages",
        {"client_msg_id": str(uuid.uuid4()), "body": "mine now", "attachments": [attachment_id]},
        format="json",
    )

    assert sent.status_code == 201
    assert [a["id"] for a in sent.json()["attachments"]] == [attachment_id]
    assert sent.json()["attachments"][0]["content_type"] == "image/png"
    assert foreign.status_code == 400
    fetched = client_for(bo).get(f"/api/v1/conversations/{group.pk}/messages").json()
    assert fetched["messages"][-1]["attachments"] == sent.json()["attachments"]
    assert send(bo, group).attachments.count() == 0


def test_attachments_keep_the_order_they_were_sent_in(
    client_for: Client, ana: User, bo: User, group: Conversation
) -> None:
    # Tried: Ana sends five uploads in an order that is not the order of their ids (the
    # newest first, the oldest in the middle). The answer, the members' pages and the
    # stored links all list them as she sent them. Before, the links were inserted in the
    # order of a Python set of ids: the pages listed them by id whatever she chose.
    ids = [int(upload(client_for(ana), png(), f"{n}.png").json()["id"]) for n in range(5)]
    order = [ids[4], ids[2], ids[0], ids[3], ids[1]]

    sent = client_for(ana).post(
        f"/api/v1/conversations/{group.pk}/messages",
        {"client_msg_id": str(uuid.uuid4()), "body": "in this order", "attachments": order},
        format="json",
    )

    assert sent.status_code == 201
    assert [a["id"] for a in sent.json()["attachments"]] == order
    fetched = client_for(bo).get(f"/api/v1/conversations/{group.pk}/messages").json()
    assert [a["id"] for a in fetched["messages"][-1]["attachments"]] == order
    assert [a["filename"] for a in fetched["messages"][-1]["attachments"]] == [
        "4.png", "2.png", "0.png", "3.png", "1.png"
    ]  # fmt: skip
