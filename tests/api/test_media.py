"""Audio, video and voice messages: strict sniffing, durations, ranges, big images scaled down.

The media files are real headers: a WAV written by the `wave` module, WebM (EBML)
elements as a recorder writes them (a Segment of unknown size), Ogg pages, MP4 boxes.
"""

import hashlib
import io
import wave
from typing import Any

import pytest
from django.core.files.storage import default_storage
from PIL import Image

from accounts.models import User
from messaging.models import Attachment

from .conftest import Client, error_code

pytestmark = pytest.mark.django_db


def ebml(element_id: int, data: bytes, *, unknown_size: bool = False) -> bytes:
    """One EBML element: its id, its size (a variable-length number), its data."""
    size = b"\x01\xff\xff\xff\xff\xff\xff\xff" if unknown_size else bytes([0x80 | len(data)])
    assert unknown_size or len(data) < 127
    return element_id.to_bytes((element_id.bit_length() + 7) // 8, "big") + size + data


def webm(*track_types: int, doc_type: bytes = b"webm") -> bytes:
    header = ebml(0x1A45DFA3, ebml(0x4286, b"\x01") + ebml(0x4282, doc_type))
    info = ebml(0x1549A966, ebml(0x2AD7B1, b"\x0f\x42\x40"))
    tracks = ebml(
        0x1654AE6B,
        b"".join(
            ebml(0xAE, ebml(0xD7, bytes([n + 1])) + ebml(0x83, bytes([kind])))
            for n, kind in enumerate(track_types)
        ),
    )
    cluster = ebml(0x1F43B675, b"\x00" * 40)
    return header + ebml(0x18538067, info + tracks + cluster, unknown_size=True)


def ogg(codec_header: bytes) -> bytes:
    page = b"OggS\x00\x02" + b"\x00" * 8 + b"\x01\x00\x00\x00" + b"\x00" * 8 + b"\x01"
    return page + bytes([len(codec_header)]) + codec_header


def mp4(brand: bytes) -> bytes:
    ftyp = brand + b"\x00\x00\x02\x00" + brand + b"mp41"
    return (8 + len(ftyp)).to_bytes(4, "big") + b"ftyp" + ftyp + b"\x00\x00\x00\x08free"


def wav(seconds: float, rate: int = 8000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * int(rate * seconds))
    return out.getvalue()


def body(response: Any) -> bytes:
    """The bytes of a streamed (file or range) response."""
    return b"".join(response.streaming_content)


def upload(client: Any, name: str, data: bytes, **fields: Any) -> Any:
    f = io.BytesIO(data)
    f.name = name
    return client.post("/api/v1/attachments", {"file": f, **fields}, format="multipart")


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("voice.webm", webm(2), "audio/webm"),
        ("clip.webm", webm(1, 2), "video/webm"),
        ("clip.mkv", webm(1, doc_type=b"matroska"), "video/webm"),
        ("voice.ogg", ogg(b"OpusHead\x01\x01\x38\x01\x80\xbb\x00\x00\x00\x00\x00"), "audio/ogg"),
        ("clip.ogv", ogg(b"\x80theora\x03\x02\x01"), "video/ogg"),
        ("song.m4a", mp4(b"M4A "), "audio/mp4"),
        ("clip.mp4", mp4(b"isom"), "video/mp4"),
        ("song.mp3", b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\xff\xfb\x90\x00" * 8, "audio/mpeg"),
        ("frames.mp3", b"\xff\xfb\x90\x00" * 8, "audio/mpeg"),
        ("tone.wav", wav(0.5), "audio/wav"),
        # What only claims to be media by its name or first bytes stays what it is.
        ("voice.webm", b"just some words, not a recording", "text/plain"),
        ("odd.webm", webm(2, doc_type=b"notwebm"), "application/octet-stream"),
        ("box.mp4", mp4(b"qwer"), "application/octet-stream"),
    ],
)
def test_media_types_come_from_the_content(
    client_for: Client, ana: User, name: str, data: bytes, expected: str
) -> None:
    response = upload(client_for(ana), name, data)

    assert response.status_code == 201, response.json()
    assert response.json()["content_type"] == expected


def test_a_voice_message_keeps_its_duration_and_is_marked_voice(
    client_for: Client, ana: User
) -> None:
    response = upload(client_for(ana), "voice.webm", webm(2), voice="true", duration_ms="7300")

    assert response.status_code == 201
    body = response.json()
    assert (body["content_type"], body["voice"], body["duration_ms"]) == ("audio/webm", True, 7300)
    stored = Attachment.objects.get(pk=body["id"])
    assert (stored.voice, stored.duration_ms) == (True, 7300)


def test_a_wav_header_overrides_the_declared_duration(client_for: Client, ana: User) -> None:
    response = upload(client_for(ana), "tone.wav", wav(1.25), duration_ms="99")

    assert response.json()["duration_ms"] == 1250


@pytest.mark.parametrize(
    ("name", "data", "fields", "field"),
    [
        # Tried: a picture sent as a voice message.
        ("voice.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, {"voice": "true"}, "voice"),
        # Tried: a voice message one second over the limit (300 s).
        ("long.webm", webm(2), {"voice": "true", "duration_ms": "301000"}, "duration_ms"),
        # Tried: a WAV whose own header says it is over the voice limit.
        ("long.wav", wav(301, rate=100), {"voice": "true", "duration_ms": "1000"}, "duration_ms"),
        # Tried: a duration on a PDF.
        ("doc.pdf", b"%PDF-1.4\n%%EOF\n", {"duration_ms": "1000"}, "duration_ms"),
        # Tried: a negative, and a non-numeric duration.
        ("voice.webm", webm(2), {"duration_ms": "-5"}, "duration_ms"),
        ("voice.webm", webm(2), {"duration_ms": "soon"}, "duration_ms"),
    ],
)
def test_refused_media_uploads_say_why_and_store_nothing(
    client_for: Client, ana: User, name: str, data: bytes, fields: dict[str, str], field: str
) -> None:
    response = upload(client_for(ana), name, data, **fields)

    assert response.status_code == 400 and error_code(response) == "bad_request"
    assert response.json()["error"]["details"]["field"] == field
    assert not Attachment.objects.exists()


def test_audio_is_served_inline_and_in_byte_ranges(client_for: Client, ana: User) -> None:
    data = wav(0.25)
    client = client_for(ana)
    url = upload(client, "tone.wav", data).json()["url"]

    whole = client.get(url)
    head = client.get(url, HTTP_RANGE="bytes=0-9")
    tail = client.get(url, HTTP_RANGE="bytes=-4")
    open_ended = client.get(url, HTTP_RANGE=f"bytes={len(data) - 3}-")
    past_the_end = client.get(url, HTTP_RANGE=f"bytes={len(data)}-")
    several = client.get(url, HTTP_RANGE="bytes=0-1,5-6")

    assert body(whole) == data
    assert whole.status_code == 200 and whole["Accept-Ranges"] == "bytes"
    assert whole["Content-Disposition"].startswith("inline")
    assert whole["Content-Type"] == "audio/wav"
    assert head.status_code == 206 and body(head) == data[:10]
    assert head["Content-Range"] == f"bytes 0-9/{len(data)}"
    assert head["Content-Length"] == "10" and head["X-Content-Type-Options"] == "nosniff"
    assert body(tail) == data[-4:]
    assert body(open_ended) == data[-3:]
    assert past_the_end.status_code == 416
    assert past_the_end["Content-Range"] == f"bytes */{len(data)}"
    assert several.status_code == 200  # several ranges: the whole file, as HTTP allows
    assert body(several) == data


def test_an_image_over_the_edge_limit_is_scaled_down_upright_and_keeps_its_thumbnail(
    client_for: Client, ana: User
) -> None:
    # 3000 x 1000 as stored, but its EXIF says "rotate 90° clockwise" (orientation 6):
    # it shows 1000 x 3000, and is kept as 683 x 2048.
    image = Image.new("RGB", (3000, 1000), "navy")
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "SecretCam"  # metadata that must not survive
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif, quality=80)
    original = out.getvalue()

    response = upload(client_for(ana), "wide.jpg", original)

    assert response.status_code == 201
    stored = Attachment.objects.get(pk=response.json()["id"])
    assert stored.thumbnail_status == Attachment.Thumbnail.READY
    with default_storage.open(stored.file.name, "rb") as f:
        data = f.read()
    with Image.open(io.BytesIO(data)) as scaled:
        assert scaled.size == (683, 2048)
        assert not scaled.getexif()
    assert (stored.size, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    served = client_for(ana).get(f"/api/v1/attachments/{stored.pk}")
    assert body(served) == data


def test_an_image_within_the_edge_limit_is_kept_byte_for_byte(
    client_for: Client, ana: User
) -> None:
    out = io.BytesIO()
    Image.new("RGB", (2048, 600), "teal").save(out, format="PNG")

    response = upload(client_for(ana), "fits.png", out.getvalue())

    stored = Attachment.objects.get(pk=response.json()["id"])
    assert stored.sha256 == hashlib.sha256(out.getvalue()).hexdigest()


def test_the_media_limits_are_published(client_for: Client) -> None:
    limits = client_for().get("/api/v1/server/limits").json()

    assert (limits["max_image_edge"], limits["max_voice_seconds"]) == (2048, 300)
    assert limits["max_media_seconds"] == 21600
    assert "audio/webm" in limits["media_types"] and "video/mp4" in limits["media_types"]
