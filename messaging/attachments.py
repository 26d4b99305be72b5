"""Attachments: store an upload (size-capped, typed by content, thumbnailed); serve it to members.

Rules (RELIABILITY.md S10): the size limit holds while the upload is read; the type
comes from the first bytes, never from the client; images over the pixel limit are
refused before they are decoded; file names lose any path and control characters; a
file is readable by its uploader and by members who can see a message carrying it, and
anyone else gets the same `not_found` as for a missing id.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import logging
import os
import unicodedata
import uuid
import warnings
from dataclasses import dataclass
from typing import IO, Any

from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.uploadhandler import FileUploadHandler
from django.db import DatabaseError, transaction
from django.db.models import Exists, OuterRef, Q
from PIL import Image, ImageOps

from accounts.models import User
from chatsite.errors import BadRequest, DomainError
from chatsite.rest import PayloadTooLarge
from chatsite.text import is_hidden_character
from messaging.models import Attachment, Membership, Message

logger = logging.getLogger(__name__)

OCTET_STREAM = "application/octet-stream"
TEXT = "text/plain"
# Raster images browsers render without running anything: the only types served inline.
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
_PIL_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WEBP"}
_EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "application/pdf": ".pdf",
    "application/zip": ".zip",
    TEXT: ".txt",
    OCTET_STREAM: ".bin",
}
# A multipart body is the file plus its framing (boundaries, part headers, other fields).
_FRAMING_ALLOWANCE = 64 * 1024
_CHUNK = 64 * 1024
_MAX_FILENAME = 200


class AttachmentNotFound(DomainError):
    """No such attachment among those the user may read (never says which)."""

    code = "not_found"
    http_status = 404
    default_message = "No such attachment."


class ImageTooLarge(BadRequest):
    """An image whose pixel count is over the limit (a decompression bomb, or just huge)."""

    default_message = "The image has too many pixels."


@dataclass(frozen=True)
class Download:
    """What a download sends: an open file, its type, its name, and whether it shows inline."""

    file: IO[bytes]
    content_type: str
    filename: str
    inline: bool


class SizeLimitedUploadHandler(FileUploadHandler):
    """Abort a multipart upload once it passes `CHAT_MAX_UPLOAD_BYTES` (413 `payload_too_large`).

    Put it first among the request's upload handlers: it counts every file chunk as it
    is read and refuses a declared Content-Length that is already too big.
    """

    def __init__(self, request: Any = None) -> None:
        super().__init__(request)
        self.limit = int(settings.CHAT_MAX_UPLOAD_BYTES)
        self.received = 0

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"The file is larger than {self.limit} bytes.", details={"max_bytes": self.limit}
        )

    def handle_raw_input(
        self,
        input_data: Any,
        META: dict[str, Any],
        content_length: int,
        boundary: str,
        encoding: str | None = None,
    ) -> None:
        """Refuse at once a body declared larger than the limit plus multipart framing."""
        if content_length and content_length > self.limit + _FRAMING_ALLOWANCE:
            raise self._too_large()

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        """Count the chunk (across all files of the request) and pass it on, or abort."""
        self.received += len(raw_data)
        if self.received > self.limit:
            raise self._too_large()
        return raw_data

    def file_complete(self, file_size: int) -> None:
        """Leave the file to the next handler."""
        return None


def sanitize_filename(name: object) -> str:
    """Return a display-safe file name: no path, no control or format characters, not hidden."""
    text = unicodedata.normalize("NFC", name if isinstance(name, str) else "")
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    text = "".join(
        c if c == " " or unicodedata.category(c)[0] != "Z" else " "
        for i, c in enumerate(text)
        if not is_hidden_character(c, text[i - 1] if i else "")
    )
    text = " ".join(text.split()).strip(" .")
    if not text:
        return "file"
    if len(text) > _MAX_FILENAME:
        stem, ext = os.path.splitext(text)
        ext = ext[:16]
        text = stem[: _MAX_FILENAME - len(ext)] + ext
    return text


def _chunks(stream: IO[bytes]) -> Any:
    stream.seek(0)
    while chunk := stream.read(_CHUNK):
        yield chunk


def detect_content_type(stream: IO[bytes]) -> str:
    """Return the type named by the content's magic number, text/plain for UTF-8 text."""
    stream.seek(0)
    head = stream.read(16)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "application/zip"
    return TEXT if _is_text(stream) else OCTET_STREAM


def _is_text(stream: IO[bytes]) -> bool:
    """Return whether the whole stream is UTF-8 without NUL bytes."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        for chunk in _chunks(stream):
            if b"\x00" in chunk:
                return False
            decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _sha256(stream: IO[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in _chunks(stream):
        digest.update(chunk)
    return digest.hexdigest()


def _thumbnail(stream: IO[bytes], content_type: str) -> tuple[bytes, str] | None:
    """Return a thumbnail (bytes, extension) of an image, None if it does not decode.

    Raise ImageTooLarge before decoding when the pixel count is over the limit.
    """
    limit = int(settings.CHAT_MAX_IMAGE_PIXELS)
    size = int(settings.CHAT_THUMBNAIL_SIZE)
    stream.seek(0)
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb guard warns (then fails) past its global limit; ours is
            # lower and explicit, and a warning must never pass silently here.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream, formats=[_PIL_FORMATS[content_type]]) as image:
                width, height = image.size
                if width * height > limit:
                    raise ImageTooLarge(
                        f"The image has {width} x {height} pixels; the limit is {limit}.",
                        details={"field": "file", "max_pixels": limit},
                    )
                image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale
                image.thumbnail((size, size))
                small = ImageOps.exif_transpose(image)
                alpha = small.mode in ("RGBA", "LA", "PA") or "transparency" in small.info
                small = small.convert("RGBA" if alpha else "RGB")
                out = io.BytesIO()
                if alpha:
                    small.save(out, format="PNG", optimize=True)
                    return out.getvalue(), ".png"
                small.save(out, format="JPEG", quality=80)
                return out.getvalue(), ".jpg"
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(
            "The image has too many pixels.", details={"field": "file", "max_pixels": limit}
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError, KeyError, IndexError) as exc:
        # Magic number of an image, but not a decodable one: keep it as opaque bytes.
        logger.info("upload with image magic did not decode: %r", exc)
        return None


def store_attachment(*, uploader: User, upload: File[bytes]) -> Attachment:
    """Store an uploaded file for `uploader` (who may then attach it to a message)."""
    limit = int(settings.CHAT_MAX_UPLOAD_BYTES)
    size = int(upload.size or 0)
    if size > limit:
        raise PayloadTooLarge(
            f"The file is larger than {limit} bytes.", details={"max_bytes": limit}
        )
    if size == 0:
        raise BadRequest("The file is empty.", details={"field": "file"})
    filename = sanitize_filename(upload.name)
    content_type = detect_content_type(upload)
    thumbnail = None
    if content_type in INLINE_TYPES:
        thumbnail = _thumbnail(upload, content_type)
        if thumbnail is None:
            content_type = OCTET_STREAM
    attachment = Attachment(
        uploader=uploader,
        filename=filename,
        content_type=content_type,
        size=size,
        sha256=_sha256(upload),
    )
    # The stored name is ours (random, with the detected type's extension); the client's
    # name is only ever shown, never used as a path.
    stored = uuid.uuid4().hex
    upload.seek(0)
    attachment.file.save(stored + _EXTENSIONS[content_type], upload, save=False)
    try:
        if thumbnail is not None:
            data, ext = thumbnail
            attachment.thumbnail.save(stored + ext, ContentFile(data), save=False)
        with transaction.atomic():
            attachment.save()
    except (DatabaseError, OSError):
        _discard_files(attachment)
        raise
    return attachment


def _discard_files(attachment: Attachment) -> None:
    for field in (attachment.file, attachment.thumbnail):
        if field:
            try:
                field.storage.delete(field.name)
            except OSError as exc:
                logger.warning("could not delete orphan file %s: %r", field.name, exc)


def get_attachment_for_user(*, user: User, attachment_id: int) -> Attachment:
    """Return the attachment if `user` uploaded it or can see a message carrying it.

    Anyone else gets AttachmentNotFound, exactly as for an id that does not exist.
    """
    may_see = Membership.objects.filter(
        conversation_id=OuterRef("conversation_id"),
        user=user,
        visible_from_seq__lte=OuterRef("seq"),
    )
    posted = Message.objects.filter(attachments=OuterRef("pk"), deleted=False).filter(
        Exists(may_see)
    )
    attachment = (
        Attachment.objects.filter(pk=attachment_id)
        .filter(Q(uploader=user) | Exists(posted))
        .first()
    )
    if attachment is None:
        raise AttachmentNotFound()
    return attachment


def open_download(attachment: Attachment, *, thumbnail: bool = False) -> Download:
    """Open the attachment (or its thumbnail) for sending, with how it may be shown."""
    if thumbnail:
        if not attachment.thumbnail:
            raise AttachmentNotFound("This attachment has no thumbnail.")
        ext = os.path.splitext(attachment.thumbnail.name)[1]
        kind = "image/png" if ext == ".png" else "image/jpeg"
        stem = os.path.splitext(attachment.filename)[0] or "file"
        return Download(attachment.thumbnail.open("rb"), kind, f"{stem}-thumbnail{ext}", True)
    content_type = attachment.content_type
    inline = content_type in INLINE_TYPES
    if content_type == TEXT:
        content_type = "text/plain; charset=utf-8"
    return Download(attachment.file.open("rb"), content_type, attachment.filename, inline)
