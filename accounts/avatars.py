"""Profile pictures: decode an upload under the image rules, crop it square, store it.

The upload passes the attachments' rules first (`messaging.attachments`): its type
comes from its first bytes (PNG, JPEG, GIF or WebP only), and its header alone is
checked against the pixel and decode-cost limits before anything is decoded. It is
then decoded (a JPEG at the smallest scale the crop allows), turned upright by its EXIF
orientation, cropped to the square asked for (else the centred largest one), resized
to each of `AVATAR_SIZES` and encoded again: nothing of the file's metadata survives.

Pictures are stored in the attachments' storage under the hash of the largest
square's bytes (`avatars/<sha256>-<size>.<ext>`), so a URL names one content for ever
and is served as immutable. A change is announced to the user's contacts through
`accounts.services.profile_changed`, as a display-name change is.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import threading
import warnings
from dataclasses import dataclass
from typing import IO, Any

from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import default_storage
from django.db import transaction
from PIL import Image, ImageOps

from accounts.models import AVATAR_SIZES, User
from accounts.services import announce_profile
from chatsite import limits
from chatsite.errors import BadRequest, DomainError, Unavailable
from chatsite.rest import PayloadTooLarge
from messaging import attachments

logger = logging.getLogger(__name__)

_FOLDER = "avatars"
# What a served name looks like: the hash, the size, the extension.
NAME_PATTERN = r"(?P<digest>[0-9a-f]{64})-(?P<size>256|64)\.(?P<ext>jpg|png)"
_NAME = re.compile(NAME_PATTERN)
CONTENT_TYPES = {"jpg": "image/jpeg", "png": "image/png"}


_NOT_AN_IMAGE = (OSError, SyntaxError, ValueError, EOFError, KeyError, IndexError)

# Pictures are decoded in the request, so this process decodes at most
# `limits.AVATAR_DECODES` of them at once; the others wait their turn.
_decoding = threading.BoundedSemaphore(limits.AVATAR_DECODES)


class AvatarNotFound(DomainError):
    """No stored picture by that name."""

    code = "not_found"
    http_status = 404
    default_message = "No such picture."


@dataclass(frozen=True)
class Crop:
    """A square in the image's pixels, as the user sees the image (upright)."""

    x: int
    y: int
    size: int


class AvatarUploadHandler(attachments.SizeLimitedUploadHandler):
    """Abort a picture upload once it passes `MAX_AVATAR_BYTES` (413, while it is read)."""

    def __init__(self, request: Any = None) -> None:
        super().__init__(request)
        self.limit = limits.MAX_AVATAR_BYTES


def _not_an_image() -> BadRequest:
    return BadRequest(
        "That is not a picture: send a PNG, JPEG, GIF or WebP image.",
        details={"field": "file"},
    )


def _open(upload: File[bytes], content_type: str) -> Image.Image:
    upload.seek(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(upload, formats=[content_type.split("/")[1].upper()])


def _upright_size(image: Image.Image, size: tuple[int, int]) -> tuple[int, int]:
    """Return `size` (the image's own, before any draft) once turned by its EXIF orientation."""
    width, height = size
    orientation = image.getexif().get(0x0112, 1)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _check_cost(image: Image.Image) -> None:
    """Refuse a decode (at the scale chosen) over the pictures' decode-cost limit.

    The header check already applied the attachments' limit at the thumbnail's scale;
    a small square of a large JPEG decodes at a larger scale than a thumbnail does, and
    pictures, decoded in the request, have a lower limit (`MAX_AVATAR_DECODE_BYTES`).
    """
    limit = min(int(settings.CHAT_MAX_IMAGE_DECODE_BYTES), limits.MAX_AVATAR_DECODE_BYTES)
    cost = image.size[0] * image.size[1] * 4
    if cost > limit:
        raise attachments.ImageTooCostly(
            f"The picture would take {cost} bytes to decode at the scale this square needs;"
            f" the limit is {limit}. Choose a larger square.",
            details={"field": "file", "max_decode_bytes": limit, "decode_bytes": cost},
        )


def _check_crop_size(size: int) -> None:
    if size < limits.MIN_AVATAR_CROP:
        raise BadRequest(
            f"The square must be at least {limits.MIN_AVATAR_CROP} pixels wide"
            f" (this one is {size}).",
            details={"field": "size", "min_size": limits.MIN_AVATAR_CROP},
        )


def _check_crop(crop: Crop | None, width: int, height: int) -> Crop:
    """Return the crop asked for (checked against the upright image) or the centred square."""
    if crop is None:
        side = min(width, height)
        crop = Crop((width - side) // 2, (height - side) // 2, side)
    _check_crop_size(crop.size)
    if crop.x < 0 or crop.y < 0 or crop.x + crop.size > width or crop.y + crop.size > height:
        raise BadRequest(
            f"The square ({crop.x}, {crop.y}, {crop.size} wide) is not inside the"
            f" {width} x {height} picture.",
            details={"field": "x", "width": width, "height": height},
        )
    return crop


def render(upload: File[bytes], crop: Crop | None) -> tuple[dict[int, bytes], str]:
    """Decode, straighten, crop and resize an upload; return {size: bytes} and the extension.

    Raise BadRequest for what is not a picture, a square outside it or too small, and
    the attachments' limit errors (400 or 413) for an image too large to decode.
    """
    content_type = attachments.detect_content_type(upload)
    if content_type not in attachments.INLINE_TYPES:
        raise _not_an_image()
    if attachments.inspect_image(upload, content_type) is None:  # the limits, header only
        raise _not_an_image()
    try:
        with _open(upload, content_type) as image:
            # A JPEG decodes at a reduced scale while the square keeps at least 256 pixels.
            # The cost is checked first: reading a PNG's EXIF decodes it.
            if crop is not None:
                _check_crop_size(crop.size)
            full = image.size
            side = max(crop.size if crop else min(full), 1)
            want = max(AVATAR_SIZES)
            image.draft("RGB", (-(-want * full[0] // side), -(-want * full[1] // side)))
            _check_cost(image)
            width, height = _upright_size(image, full)
            square = _check_crop(crop, width, height)
            image.load()
            upright = ImageOps.exif_transpose(image)
            factor = upright.size[0] / width
            box = (
                round(square.x * factor),
                round(square.y * factor),
                round((square.x + square.size) * factor),
                round((square.y + square.size) * factor),
            )
            picture = upright.crop(box)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise attachments.ImageTooLarge(
            details={"field": "file", "max_pixels": int(settings.CHAT_MAX_IMAGE_PIXELS)}
        ) from exc
    except _NOT_AN_IMAGE as exc:
        logger.info("picture upload did not decode: %r", exc)
        raise _not_an_image() from exc
    alpha = picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info
    picture = picture.convert("RGBA" if alpha else "RGB")
    out: dict[int, bytes] = {}
    for size in AVATAR_SIZES:
        small = picture.resize((size, size), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        if alpha:
            small.save(buffer, format="PNG", optimize=True)
        else:
            small.save(buffer, format="JPEG", quality=88)
        out[size] = buffer.getvalue()
    return out, "png" if alpha else "jpg"


def _name(digest: str, size: int, ext: str) -> str:
    return f"{_FOLDER}/{digest}-{size}.{ext}"


def store_picture(upload: File[bytes], crop: Crop | None, *, namespace: bytes = b"") -> str:
    """Check, decode, crop, resize and store a picture; return its name "<sha256>.<ext>".

    The name hashes `namespace` and the largest square's bytes: a group's pictures
    (`namespace=b"group"`) never share files with a person's, so the one may be deleted
    without asking whether the other still shows it.
    """
    if int(upload.size or 0) > limits.MAX_AVATAR_BYTES:
        raise PayloadTooLarge(
            f"The picture is larger than {limits.MAX_AVATAR_BYTES} bytes.",
            details={"max_bytes": limits.MAX_AVATAR_BYTES},
        )
    if not upload.size:
        raise BadRequest("The file is empty.", details={"field": "file"})
    if not _decoding.acquire(timeout=limits.AVATAR_DECODE_WAIT):
        raise Unavailable("Too many pictures are being processed; try again shortly.")
    try:
        squares, ext = render(upload, crop)
    finally:
        _decoding.release()
    digest = hashlib.sha256(namespace + squares[max(AVATAR_SIZES)]).hexdigest()
    for size, data in squares.items():
        name = _name(digest, size, ext)
        if not default_storage.exists(name):
            default_storage.save(name, ContentFile(data))
    return f"{digest}.{ext}"


def set_avatar(*, user: User, upload: File[bytes], crop: Crop | None) -> User:
    """Make the upload (cropped to `crop`, else its centred square) the user's picture.

    The previous picture stays until the new one is stored and saved; any refusal keeps it.
    """
    return _replace(user, store_picture(upload, crop))


def remove_avatar(*, user: User) -> User:
    """Remove the user's picture (clients show initials again)."""
    return _replace(user, "")


def _replace(user: User, avatar: str) -> User:
    old = User.objects.filter(pk=user.pk).values_list("avatar", flat=True).first() or ""
    if old == avatar:
        user.avatar = avatar
        return user
    with transaction.atomic():
        User.objects.filter(pk=user.pk).update(avatar=avatar)
        announce_profile(user.pk)
    user.avatar = avatar
    if old and not User.objects.filter(avatar=old).exists():
        delete_picture_files(old)
    return user


def avatar_files(avatar: str) -> list[str]:
    """Return the stored file names of a picture (`User.avatar`), one per size."""
    digest, _, ext = avatar.partition(".")
    return [_name(digest, size, ext) for size in AVATAR_SIZES] if avatar else []


def delete_picture_files(avatar: str) -> None:
    """Delete a picture's stored files (the caller knows nobody shows it any more)."""
    for name in avatar_files(avatar):
        try:
            default_storage.delete(name)
        except OSError as exc:
            logger.warning("could not delete old picture %s: %r", avatar, exc)


def open_avatar(name: str) -> tuple[IO[bytes], str]:
    """Open a stored picture by its served name; answer the file and its content type."""
    match = _NAME.fullmatch(name)
    if match is None:
        raise AvatarNotFound()
    path = f"{_FOLDER}/{name}"
    try:
        return default_storage.open(path, "rb"), CONTENT_TYPES[match["ext"]]
    except (FileNotFoundError, OSError) as exc:
        raise AvatarNotFound() from exc
