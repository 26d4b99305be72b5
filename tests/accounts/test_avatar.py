"""Profile pictures over REST: upload (cropped or centred), refusals, removal, serving.

`PUT /api/v1/users/me/avatar` takes a picture and an optional square; the answer is the
profile with `avatar_url`, which every user object others get carries too, and the
user's conversations hear `user.updated`.
"""

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image, ImageFile
from rest_framework.test import APIClient

from accounts import tokens
from accounts.models import User
from chatsite import limits
from messaging import services
from tests.conftest import Listener
from tests.security import pngs

pytestmark = pytest.mark.django_db

AVATAR = "/api/v1/users/me/avatar"
MakeUser = Callable[..., User]


@pytest.fixture(autouse=True)
def _media(settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"


def client_of(user: User) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens.issue_pair(user)['access']}")
    return client


def photo(width: int, height: int, *, fmt: str = "JPEG", exif: Any = None) -> bytes:
    """A picture whose left half is red and right half blue (top-left pixel: red)."""
    image = Image.new("RGB", (width, height), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, width // 2, height))
    out = io.BytesIO()
    if exif is not None:
        image.save(out, format=fmt, exif=exif)
    else:
        image.save(out, format=fmt)
    return out.getvalue()


def pixel_of(image: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    value = image.getpixel(xy)
    assert isinstance(value, tuple)
    return value


def put(client: APIClient, data: bytes, name: str = "me.jpg", **crop: Any) -> Any:
    body: dict[str, Any] = {"file": SimpleUploadedFile(name, data, content_type="image/jpeg")}
    body.update({k: str(v) for k, v in crop.items()})
    return client.put(AVATAR, body, format="multipart")


def fetch(client: APIClient, url: str) -> tuple[Any, Image.Image]:
    response: Any = client.get(url)
    assert response.status_code == 200, response.content[:200]
    data = b"".join(response.streaming_content)
    return response, Image.open(io.BytesIO(data))


def status_of(client: APIClient, url: str) -> int:
    """GET `url` and read the body (a served file stays open until it is read)."""
    response: Any = client.get(url)
    if response.streaming:
        b"".join(response.streaming_content)
    return int(response.status_code)


def stored(settings: Any) -> list[Path]:
    root = Path(settings.MEDIA_ROOT) / "avatars"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_an_upload_without_a_crop_keeps_the_centred_square_at_256_and_64(
    make_user: MakeUser,
) -> None:
    """Tried: a 600 x 300 JPEG, no square. The answer's `avatar_url` serves a 256 x 256
    JPEG of the centred 300 x 300 square: its left half red, its right half blue, as
    the middle of the picture is; the `-64.` name serves the same at 64 x 64."""
    client = client_of(make_user("ana"))
    response = put(client, photo(600, 300))
    assert response.status_code == 200, response.json()
    url = response.json()["avatar_url"]
    assert url.startswith("/api/v1/avatars/") and url.endswith("-256.jpg")
    _, big = fetch(client, url)
    assert big.size == (256, 256) and big.format == "JPEG"
    red, blue = pixel_of(big, (20, 128)), pixel_of(big, (236, 128))
    assert red[0] > 200 and red[2] < 60, red
    assert blue[2] > 200 and blue[0] < 60, blue
    _, small = fetch(client, url.replace("-256.", "-64."))
    assert small.size == (64, 64)


def test_a_crop_keeps_exactly_the_square_asked_for(make_user: MakeUser) -> None:
    """Tried: a 400 x 200 picture (red | blue) cropped to the square at x=250, y=50, 100
    wide: all blue. Then the square at x=0: all red. Each answer serves that square."""
    client = client_of(make_user("ana"))
    first = put(client, photo(400, 200), x=250, y=50, size=100)
    assert first.status_code == 200, first.json()
    _, blue = fetch(client, first.json()["avatar_url"])
    assert blue.size == (256, 256)
    for corner in ((2, 2), (253, 253)):
        pixel = pixel_of(blue, corner)
        assert pixel[2] > 200 and pixel[0] < 60, pixel
    second = put(client, photo(400, 200), x=0, y=0, size=200)
    _, red = fetch(client, second.json()["avatar_url"])
    for corner in ((2, 2), (253, 253)):
        pixel = pixel_of(red, corner)
        assert pixel[0] > 200 and pixel[2] < 60, pixel
    assert first.json()["avatar_url"] != second.json()["avatar_url"]


def test_a_large_jpeg_decoded_at_a_reduced_scale_keeps_the_square_asked_for(
    make_user: MakeUser,
) -> None:
    """Tried: a 2400 x 1200 JPEG (red | blue) with the square x=1500, y=300, 600 wide,
    which Pillow decodes at half scale (the square still has 300 pixels). The square
    is taken at that scale's coordinates: all blue, 256 x 256."""
    client = client_of(make_user("ana"))
    response = put(client, photo(2400, 1200), x=1500, y=300, size=600)
    assert response.status_code == 200, response.json()
    _, square = fetch(client, response.json()["avatar_url"])
    assert square.size == (256, 256)
    for corner in ((2, 2), (253, 2), (2, 253), (253, 253)):
        pixel = pixel_of(square, corner)
        assert pixel[2] > 200 and pixel[0] < 60, (corner, pixel)


def test_exif_orientation_is_applied_then_stripped(make_user: MakeUser) -> None:
    """Tried: a 300 x 100 JPEG (red left, blue right) whose EXIF says "rotate 90° clockwise"
    (orientation 6) and carries a camera maker. Upright it is 100 x 300, red on top and
    blue below: the square at the bottom (0, 200, 100), outside the file's own 300 x 100
    grid, is allowed and blue. The stored square has no EXIF at all."""
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "SecretCam"
    client = client_of(make_user("ana"))
    response = put(client, photo(300, 100, exif=exif.tobytes()), x=0, y=200, size=100)
    assert response.status_code == 200, response.json()
    _, square = fetch(client, response.json()["avatar_url"])
    for corner in ((2, 2), (253, 253)):
        pixel = pixel_of(square, corner)
        assert pixel[2] > 200 and pixel[0] < 60, pixel
    assert not square.getexif()
    assert "exif" not in square.info


def test_a_png_with_transparency_stays_a_png(make_user: MakeUser) -> None:
    """Tried: a transparent PNG. The square is a PNG (alpha kept), served as image/png."""
    image = Image.new("RGBA", (120, 120), (0, 128, 0, 0))
    out = io.BytesIO()
    image.save(out, format="PNG")
    client = client_of(make_user("ana"))
    response = put(client, out.getvalue(), name="me.png")
    assert response.status_code == 200, response.json()
    url = response.json()["avatar_url"]
    assert url.endswith("-256.png")
    served, square = fetch(client, url)
    assert served["Content-Type"] == "image/png"
    assert square.mode == "RGBA" and pixel_of(square, (5, 5))[3] == 0


@pytest.mark.parametrize(
    ("data", "crop", "field", "status"),
    [
        (b"just some text, not a picture", {}, "file", 400),
        (b"%PDF-1.4 a document", {}, "file", 400),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 200, {}, "file", 400),  # a PNG that does not decode
        ("photo", {"x": 350, "y": 0, "size": 100}, "x", 400),  # past the right edge
        ("photo", {"x": 0, "y": 150, "size": 100}, "x", 400),  # past the bottom
        ("photo", {"x": 0, "y": 0, "size": 201}, "x", 400),  # larger than the picture
        ("photo", {"x": 0, "y": 0, "size": limits.MIN_AVATAR_CROP - 1}, "size", 400),
        ("photo", {"x": -1, "y": 0, "size": 100}, "x", 400),
        ("photo", {"x": 10, "y": 10}, "size", 400),  # a square without its size
        ("bomb", {}, "file", 413),  # 16-bit RGBA: over the decode-cost limit from its header
        ("wide", {}, "file", 413),  # 5000 x 4000 RGBA: 80 MB decoded, over the pictures' 64 MiB
        ("tiny", {}, "size", 400),  # 40 x 40: its largest square is under the minimum
    ],
)
def test_bad_uploads_are_refused_with_a_json_error_and_the_old_picture_stays(
    make_user: MakeUser, settings: Any, data: Any, crop: dict[str, int], field: str, status: int
) -> None:
    """Tried: Ana has a picture; she uploads something that is not a picture, a square
    outside the picture or under the minimum, half a square, a decompression bomb, a
    picture too small. Each is a JSON error naming the field, and her picture stays."""
    ana = make_user("ana")
    client = client_of(ana)
    before = put(client, photo(400, 200)).json()["avatar_url"]
    files = stored(settings)
    if data == "photo":
        body = photo(400, 200)
    elif data == "bomb":
        body = pngs.png(6300, 6300, depth=16, colour=pngs.RGBA)
    elif data == "wide":
        body = pngs.png(5000, 4000, depth=8, colour=pngs.RGBA)
    elif data == "tiny":
        body = photo(40, 40)
    else:
        body = data
    response = put(client, body, "me.jpg", **crop)
    assert response.status_code == status, response.content[:300]
    error = response.json()["error"]
    assert error["message"]
    if status == 400:
        assert error["code"] == "bad_request"
        assert error["details"]["field"] == field
    ana.refresh_from_db()
    assert ana.avatar_url == before
    assert client.get("/api/v1/users/me").json()["avatar_url"] == before
    assert stored(settings) == files


def test_a_picture_over_the_decode_limit_is_refused_before_any_pixel_is_decoded(
    make_user: MakeUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tried: a 5000 x 4000 RGBA PNG (80 MB decoded, under the attachments' limit, over
    MAX_AVATAR_DECODE_BYTES), with Pillow's pixel decoding made to fail. The answer is 413
    naming the limit: the header decided; nothing was decoded."""
    client = client_of(make_user("ana"))
    body = pngs.png(5000, 4000, depth=8, colour=pngs.RGBA)
    tried: list[str] = []

    def refuse(image: ImageFile.ImageFile) -> Any:
        tried.append(f"{image.format} {image.size}")
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    response = put(client, body, "wide.png")
    assert response.status_code == 413, response.content[:300]
    details = response.json()["error"]["details"]
    assert details["max_decode_bytes"] == limits.MAX_AVATAR_DECODE_BYTES
    assert tried == []


def test_a_file_over_the_byte_cap_is_refused_while_it_is_read(
    make_user: MakeUser, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tried: a body whose declared length is past MAX_AVATAR_BYTES (refused before it is
    read), then, with the cap lowered to 50 KB, a 60 KB picture (refused while it is
    read). Both are 413 `payload_too_large` naming the cap; nothing is stored."""
    client = client_of(make_user("ana"))
    declared = put(client, photo(100, 100) + b"\x00" * (limits.MAX_AVATAR_BYTES + 70_000))
    monkeypatch.setattr(limits, "MAX_AVATAR_BYTES", 50_000)
    streamed = put(client, photo(100, 100) + b"\x00" * 60_000)
    for response, cap in ((declared, 10 * 1024 * 1024), (streamed, 50_000)):
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
        assert response.json()["error"]["details"] == {"max_bytes": cap}
    assert stored(settings) == []


def test_a_missing_file_is_a_clear_error(make_user: MakeUser) -> None:
    """Tried: a multipart body with only a square. 400 naming the `file` field."""
    client = client_of(make_user("ana"))
    response = client.put(AVATAR, {"x": "0"}, format="multipart")
    assert response.status_code == 400
    assert response.json()["error"]["details"]["field"] == "file"


def test_pictures_are_decoded_one_at_a_time_and_a_long_wait_is_a_503(
    make_user: MakeUser, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    """Tried: an upload while this process's one decode slot is taken by another picture
    (held here) for longer than the wait allowed. 503 `unavailable`, nothing stored, the
    old picture kept; once the slot is free the same upload goes through."""
    from accounts import avatars

    client = client_of(make_user("ana"))
    assert put(client, photo(300, 300)).status_code == 200
    before, files = client.get("/api/v1/users/me").json()["avatar_url"], stored(settings)
    monkeypatch.setattr(limits, "AVATAR_DECODE_WAIT", 0.2)
    assert avatars._decoding.acquire(timeout=1)  # another picture is being decoded
    try:
        response = put(client, photo(400, 200))
    finally:
        avatars._decoding.release()
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"
    assert client.get("/api/v1/users/me").json()["avatar_url"] == before
    assert stored(settings) == files
    assert put(client, photo(400, 200)).status_code == 200


def test_delete_removes_the_picture_and_its_files(make_user: MakeUser, settings: Any) -> None:
    """Tried: upload, then DELETE. The profile's `avatar_url` is null, the stored squares
    are gone and their URL answers 404 (JSON); a second DELETE is harmless."""
    client = client_of(make_user("ana"))
    url = put(client, photo(300, 300)).json()["avatar_url"]
    assert len(stored(settings)) == 2
    response = client.delete(AVATAR)
    assert response.status_code == 200
    assert response.json()["avatar_url"] is None
    assert stored(settings) == []
    gone = client.get(url)
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "not_found"
    assert client.delete(AVATAR).status_code == 200


def test_replacing_a_picture_deletes_the_old_files_unless_someone_else_has_them(
    make_user: MakeUser, settings: Any
) -> None:
    """Tried: Ana and Bo upload the same picture (one content, one set of files); Ana
    replaces hers: the shared files stay for Bo. Bo replaces his: they are deleted."""
    ana, bo = make_user("ana"), make_user("bo")
    shared = put(client_of(ana), photo(300, 300)).json()["avatar_url"]
    assert put(client_of(bo), photo(300, 300)).json()["avatar_url"] == shared
    put(client_of(ana), photo(300, 300), x=0, y=0, size=100)
    assert status_of(client_of(bo), shared) == 200
    put(client_of(bo), photo(300, 300), x=0, y=0, size=100)
    assert status_of(client_of(bo), shared) == 404
    assert len(stored(settings)) == 2


def test_others_see_the_new_avatar_url_and_hear_user_updated(
    make_user: MakeUser, listener: Listener, django_capture_on_commit_callbacks: Any
) -> None:
    """Tried: Bo and Ana share a direct chat and Bo listens on it. Ana uploads a picture:
    Bo's socket group gets `user.updated` with her `avatar_url`, and Bo sees it in the
    directory, in the chat's members and as the chat's `peer_avatar_url`. Ana removes
    it: `user.updated` with null."""
    ana, bo = make_user("ana"), make_user("bo")
    conversation, _ = services.create_direct_conversation(user=bo, other_user_id=ana.pk)
    listener.join(f"conv.{conversation.pk}")
    with django_capture_on_commit_callbacks(execute=True):
        url = put(client_of(ana), photo(300, 300)).json()["avatar_url"]
    assert url
    frame = listener.receive()["frame"]
    assert frame["type"] == "user.updated"
    assert frame["user"] == {
        "id": ana.pk,
        "username": "ana",
        "display_name": ana.name,
        "avatar_url": url,
    }
    bo_client = client_of(bo)
    directory = bo_client.get("/api/v1/users", {"q": "ana"}).json()["results"]
    assert [u["avatar_url"] for u in directory if u["id"] == ana.pk] == [url]
    detail = bo_client.get(f"/api/v1/conversations/{conversation.pk}").json()
    assert {m["id"]: m["avatar_url"] for m in detail["members"]} == {ana.pk: url, bo.pk: None}
    listed = bo_client.get("/api/v1/conversations").json()["results"]
    assert [c["peer_avatar_url"] for c in listed if c["id"] == conversation.pk] == [url]
    assert status_of(bo_client, url) == 200
    with django_capture_on_commit_callbacks(execute=True):
        client_of(ana).delete(AVATAR)
    frame = listener.receive()["frame"]
    assert frame["type"] == "user.updated" and frame["user"]["avatar_url"] is None


def test_a_display_name_change_is_announced_as_user_updated(
    make_user: MakeUser, listener: Listener, django_capture_on_commit_callbacks: Any
) -> None:
    """Tried: Ana renames herself with PATCH /users/me while Bo listens on their chat:
    `user.updated` carries the new name. Patching only her status announces nothing."""
    ana, bo = make_user("ana"), make_user("bo")
    conversation, _ = services.create_direct_conversation(user=bo, other_user_id=ana.pk)
    listener.join(f"conv.{conversation.pk}")
    with django_capture_on_commit_callbacks(execute=True):
        client_of(ana).patch("/api/v1/users/me", {"display_name": "Ana B"}, format="json")
    frame = listener.receive()["frame"]
    assert frame["type"] == "user.updated" and frame["user"]["display_name"] == "Ana B"
    with django_capture_on_commit_callbacks(execute=True):
        client_of(ana).patch("/api/v1/users/me", {"status": "busy"}, format="json")
    marker = listener.mark(f"conv.{conversation.pk}")
    assert listener.receive() == marker


def test_pictures_are_served_immutable_with_their_type_and_nosniff(
    make_user: MakeUser,
) -> None:
    """Tried: fetch a picture as another signed-in user, and without signing in, and
    by names that are not pictures' (path tricks, another size). The picture comes
    with its type, nosniff and a year-long immutable cache; the rest are refused."""
    url = put(client_of(make_user("ana")), photo(300, 300)).json()["avatar_url"]
    bo = client_of(make_user("bo"))
    served, _ = fetch(bo, url)
    assert served["Content-Type"] == "image/jpeg"
    assert served["X-Content-Type-Options"] == "nosniff"
    assert "immutable" in served["Cache-Control"] and "max-age=31536000" in served["Cache-Control"]
    assert status_of(APIClient(), url) in (401, 403)
    digest = url.rsplit("/", 1)[1].split("-")[0]
    for name in (
        f"{digest}-128.jpg",
        f"{digest}-256.png",
        "..%2Fsettings.py",
        "x" * 64 + "-64.jpg",
    ):
        response = bo.get(f"/api/v1/avatars/{name}")
        assert response.status_code == 404, name
