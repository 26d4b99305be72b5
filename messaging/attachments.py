"""Attachments: store an upload (size-capped, typed by content); serve it to members.

Rules (RELIABILITY.md S10): the size limit holds while the upload is read; the type
comes from the first bytes, never from the client; images over the pixel limit or the
decode-cost limit are refused from their header, before anything is decoded; file names
lose any path and control characters; a file is readable by its uploader and by members
who can see a message carrying it, and anyone else gets the same `not_found` as for a
missing id.

The gateway never decodes pixels: an image is stored with its thumbnail `pending` and
the Celery worker makes the thumbnail (`make_thumbnail`, on the `thumbnails` queue,
whose worker's concurrency bounds how many images are decoded at once).
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


class ImageTooCostly(PayloadTooLarge):
    """An image whose decoded pixels would take more bytes than the decode-cost limit."""

    default_message = "The image would take too much memory to decode."


class ThumbnailPending(DomainError):
    """The thumbnail is still being made: ask again shortly."""

    code = "thumbnail_pending"
    http_status = 404
    default_message = "The thumbnail is not ready yet; try again in a few seconds."


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says: its size as it would be decoded, and that cost."""

    width: int
    height: int
    mode: str
    bytes_per_pixel: int

    @property
    def decode_bytes(self) -> int:
        """Return the bytes its decoded pixels take: width x height x bytes per pixel."""
        return self.width * self.height * self.bytes_per_pixel


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


# Bytes per pixel of a decoded image in Pillow's memory: one byte for the 8-bit
# single-band modes, two for 16-bit grey, and four for every other mode (RGB too: Pillow
# keeps three bands in four bytes; I and F are 32-bit).
_ONE_BYTE_MODES = frozenset({"1", "L", "P"})
_TWO_BYTE_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N"})
# PNG colour type (IHDR) -> samples per pixel: grey, RGB, palette, grey+alpha, RGBA.
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _memory_bytes_per_pixel(mode: str) -> int:
    if mode in _ONE_BYTE_MODES:
        return 1
    if mode in _TWO_BYTE_MODES:
        return 2
    return 4


def _png_source_bytes_per_pixel(stream: IO[bytes]) -> int:
    """Return the bytes per pixel of a PNG's own samples (IHDR bit depth x channels).

    A 16-bit RGBA PNG inflates to eight bytes a pixel, though Pillow keeps it as 8-bit
    RGBA (four): the decode reads and converts every one of those eight.
    """
    stream.seek(0)
    head = stream.read(33)  # signature (8), IHDR length and type (8), IHDR data (13)
    if len(head) < 33 or head[12:16] != b"IHDR":
        return 0
    depth, colour = head[24], head[25]
    return -(-_PNG_CHANNELS.get(colour, 4) * depth // 8)


def _open_image(stream: IO[bytes], content_type: str) -> Image.Image:
    """Open (not decode) an image, with Pillow's own bomb guard raising, never warning."""
    stream.seek(0)
    with warnings.catch_warnings():
        # Pillow's own bomb guard warns (then fails) past its global limit; ours is
        # lower and explicit, and a warning must never pass silently here.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return Image.open(stream, formats=[_PIL_FORMATS[content_type]])


def _check_header(image: Image.Image, stream: IO[bytes], content_type: str) -> ImageHeader:
    """Apply both limits to an opened image, from its header only; return what it costs.

    The pixel count is the whole canvas. The decode cost is the pixels the decoder will
    actually produce (a JPEG decodes at a reduced scale for a thumbnail: `draft`) times
    the larger of Pillow's bytes per pixel and the file's own (16-bit PNG samples). A
    progressive JPEG is the exception: libjpeg keeps the coefficients of the whole image
    (two bytes a sample) whatever the scale, so it costs full size x components x 2.
    """
    pixels_limit = int(settings.CHAT_MAX_IMAGE_PIXELS)
    cost_limit = int(settings.CHAT_MAX_IMAGE_DECODE_BYTES)
    size = int(settings.CHAT_THUMBNAIL_SIZE)
    width, height = image.size
    if width * height > pixels_limit:
        raise ImageTooLarge(
            f"The image has {width} x {height} pixels; the limit is {pixels_limit}.",
            details={"field": "file", "max_pixels": pixels_limit},
        )
    image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale; others: no-op
    per_pixel = _memory_bytes_per_pixel(image.mode)
    if content_type == "image/png":
        per_pixel = max(per_pixel, _png_source_bytes_per_pixel(stream))
    header = ImageHeader(image.size[0], image.size[1], image.mode, per_pixel)
    if content_type == "image/jpeg" and image.info.get("progressive"):
        components = int(getattr(image, "layers", 0)) or len(image.getbands())
        whole = ImageHeader(width, height, image.mode, components * 2)
        if whole.decode_bytes > header.decode_bytes:
            header, per_pixel = whole, whole.bytes_per_pixel
    if header.decode_bytes > cost_limit:
        raise ImageTooCostly(
            f"The image would take {header.decode_bytes} bytes to decode "
            f"({header.width} x {header.height} pixels, {per_pixel} bytes each); "
            f"the limit is {cost_limit}.",
            details={
                "field": "file",
                "max_decode_bytes": cost_limit,
                "decode_bytes": header.decode_bytes,
            },
        )
    return header


_NOT_AN_IMAGE = (OSError, SyntaxError, ValueError, EOFError, KeyError, IndexError)


def inspect_image(stream: IO[bytes], content_type: str) -> ImageHeader | None:
    """Read an image's header (nothing is decoded) and apply the limits; None if unreadable.

    Raise ImageTooLarge (400) over the pixel limit or at Pillow's bomb guard, and
    ImageTooCostly (413) over the decode-cost limit.
    """
    limit = int(settings.CHAT_MAX_IMAGE_PIXELS)
    try:
        with _open_image(stream, content_type) as image:
            return _check_header(image, stream, content_type)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(
            "The image has too many pixels.", details={"field": "file", "max_pixels": limit}
        ) from exc
    except _NOT_AN_IMAGE as exc:
        # Magic number of an image, but no readable header: keep it as opaque bytes.
        logger.info("upload with image magic has no readable header: %r", exc)
        return None


def render_thumbnail(stream: IO[bytes], content_type: str) -> tuple[bytes, str] | None:
    """Decode an image and return its thumbnail (bytes, extension); None if it does not decode.

    The limits are applied again first (settings may have changed since the upload), so
    no image over them is ever decoded. This is the worker's work, never the gateway's.
    """
    size = int(settings.CHAT_THUMBNAIL_SIZE)
    try:
        with _open_image(stream, content_type) as image:
            _check_header(image, stream, content_type)
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
    except (Image.DecompressionBombError, Image.DecompressionBombWarning, DomainError) as exc:
        logger.warning("image over the limits reached the thumbnailer: %s", exc)
        return None
    except _NOT_AN_IMAGE as exc:
        logger.info("image did not decode for a thumbnail: %r", exc)
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
    status = Attachment.Thumbnail.NONE
    if content_type in INLINE_TYPES:
        if inspect_image(upload, content_type) is None:
            content_type = OCTET_STREAM
        else:
            status = Attachment.Thumbnail.PENDING
    attachment = Attachment(
        uploader=uploader,
        filename=filename,
        content_type=content_type,
        size=size,
        sha256=_sha256(upload),
        thumbnail_status=status,
    )
    # The stored name is ours (random, with the detected type's extension); the client's
    # name is only ever shown, never used as a path.
    stored = uuid.uuid4().hex
    upload.seek(0)
    attachment.file.save(stored + _EXTENSIONS[content_type], upload, save=False)
    try:
        with transaction.atomic():
            attachment.save()
    except (DatabaseError, OSError):
        discard_files(attachment)
        raise
    return attachment


def give_up_thumbnail(attachment_id: int) -> None:
    """Let a pending thumbnail go (it could not be queued): the file goes without one."""
    Attachment.objects.filter(
        pk=attachment_id, thumbnail_status=Attachment.Thumbnail.PENDING
    ).update(thumbnail_status=Attachment.Thumbnail.NONE)


def make_thumbnail(attachment_id: int) -> str:
    """Make an attachment's thumbnail (the worker's task); return the status it ends in.

    Whatever goes wrong, the attachment stays usable: it ends `ready` or `none`, never
    stuck. A run that finds the thumbnail `working` takes it for one that died mid-way
    (a worker killed while decoding, its task delivered again) and gives up on it rather
    than decode that image again.
    """
    working = Attachment.Thumbnail.WORKING
    claimed = Attachment.objects.filter(
        pk=attachment_id, thumbnail_status=Attachment.Thumbnail.PENDING
    ).update(thumbnail_status=working)
    if not claimed:
        if Attachment.objects.filter(pk=attachment_id, thumbnail_status=working).update(
            thumbnail_status=Attachment.Thumbnail.NONE
        ):
            logger.warning("thumbnail of attachment %d was cut off before; none", attachment_id)
            return Attachment.Thumbnail.NONE
        return "gone"  # done already, or the attachment was deleted
    try:
        status = _store_thumbnail(attachment_id)
    except Exception:
        logger.exception("thumbnail of attachment %d failed", attachment_id)
        status = Attachment.Thumbnail.NONE
    if status == Attachment.Thumbnail.NONE:
        Attachment.objects.filter(pk=attachment_id, thumbnail_status=working).update(
            thumbnail_status=status
        )
    return status


def _store_thumbnail(attachment_id: int) -> str:
    """Decode the claimed attachment and store its thumbnail; return the status reached."""
    attachment = Attachment.objects.get(pk=attachment_id)
    with attachment.file.open("rb") as stream:
        thumbnail = render_thumbnail(stream, attachment.content_type)
    if thumbnail is None:
        return Attachment.Thumbnail.NONE
    data, ext = thumbnail
    stem = os.path.splitext(os.path.basename(attachment.file.name))[0]
    storage = attachment.thumbnail.storage
    name = storage.save(
        attachment.thumbnail.field.generate_filename(attachment, stem + ext), ContentFile(data)
    )
    done = Attachment.objects.filter(
        pk=attachment_id, thumbnail_status=Attachment.Thumbnail.WORKING
    ).update(thumbnail=name, thumbnail_status=Attachment.Thumbnail.READY)
    if not done:  # deleted meanwhile
        _delete_file(storage, name)
        return "gone"
    return Attachment.Thumbnail.READY


def _delete_file(storage: Any, name: str) -> None:
    try:
        storage.delete(name)
    except OSError as exc:
        logger.warning("could not delete orphan file %s: %r", name, exc)


def discard_files(attachment: Attachment) -> None:
    for field in (attachment.file, attachment.thumbnail):
        if field:
            _delete_file(field.storage, field.name)


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
        if attachment.thumbnail_status in (
            Attachment.Thumbnail.PENDING,
            Attachment.Thumbnail.WORKING,
        ):
            raise ThumbnailPending()
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
