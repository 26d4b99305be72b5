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
import re
import unicodedata
import uuid
import warnings
import wave
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
from messaging.models import ArchivedAttachment, Attachment, Membership, Message

logger = logging.getLogger(__name__)

OCTET_STREAM = "application/octet-stream"
TEXT = "text/plain"
# Raster images browsers render without running anything: shown inline.
INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
# Audio and video the browsers play with their own controls: served inline too (the
# response's sandbox CSP and nosniff still hold), never run as a page.
MEDIA_TYPES = frozenset(
    {
        "audio/webm",
        "audio/ogg",
        "audio/mpeg",
        "audio/mp4",
        "audio/wav",
        "video/webm",
        "video/ogg",
        "video/mp4",
    }
)
AUDIO_TYPES = frozenset(t for t in MEDIA_TYPES if t.startswith("audio/"))
_PIL_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WEBP"}
_EXTENSIONS = {
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "image/gif": ".gif",
    "image/webp": ".webp",
    "audio/webm": ".webm",
    "audio/ogg": ".ogg",
    "audio/mpeg": ".mp3",
    "audio/mp4": ".m4a",
    "audio/wav": ".wav",
    "video/webm": ".webm",
    "video/ogg": ".ogv",
    "video/mp4": ".mp4",
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
    media = _media_type(head, stream)
    if media is not None:
        return media
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "application/zip"
    return TEXT if _is_text(stream) else OCTET_STREAM


# How far into a file its media header is looked for (tracks, codec headers).
_MEDIA_HEAD = 64 * 1024
_EBML = b"\x1a\x45\xdf\xa3"
_MP3_SYNC = frozenset({0xFB, 0xFA, 0xF3, 0xF2, 0xE3, 0xE2})


def _media_type(head: bytes, stream: IO[bytes]) -> str | None:
    """Return the audio or video type named by the magic number, None for anything else.

    WebM (Matroska) and Ogg say from their first 64 KiB whether they carry video (a
    video track; a Theora stream); MP4 says audio only by its `M4A ` brand.
    """
    if head.startswith(_EBML):
        stream.seek(0)
        tracks = _matroska_track_types(stream.read(_MEDIA_HEAD))
        if tracks is None:
            return None
        return "video/webm" if 1 in tracks else "audio/webm"
    if head.startswith(b"OggS"):
        stream.seek(0)
        return "video/ogg" if b"\x80theora" in stream.read(_MEDIA_HEAD) else "audio/ogg"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"M4A ", b"M4B "):
            return "audio/mp4"
        if brand in (b"isom", b"iso2", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1", b"dash"):
            return "video/mp4"
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(b"ID3") or (len(head) > 1 and head[0] == 0xFF and head[1] in _MP3_SYNC):
        return "audio/mpeg"
    return None


def _ebml_number(data: bytes, at: int, *, keep_marker: bool) -> tuple[int, int] | None:
    """Read an EBML variable-length number at `at`; answer (value, next offset)."""
    if at >= len(data) or data[at] == 0:
        return None
    first = data[at]
    length = 8 - first.bit_length() + 1
    if at + length > len(data):
        return None
    value = first if keep_marker else first & (0xFF >> length)
    for byte in data[at + 1 : at + length]:
        value = (value << 8) | byte
    return value, at + length


# Matroska element ids (with their length marker, as written).
_SEGMENT, _TRACKS, _TRACK_ENTRY, _TRACK_TYPE = 0x18538067, 0x1654AE6B, 0xAE, 0x83
_DOC_TYPE, _EBML_ID = 0x4282, 0x1A45DFA3
_UNKNOWN_SIZES = frozenset((1 << (7 * n)) - 1 for n in range(1, 9))


def _matroska_track_types(data: bytes) -> set[int] | None:
    """Return the track types (1 video, 2 audio) of a WebM's head; None if it is not WebM.

    Walks the elements of the EBML header (its DocType must be `webm` or `matroska`), the
    Segment (often of unknown size, as recorders write it) and its Tracks; anything else
    is skipped by its size. An empty set: the tracks were not within the head.
    """
    at, doc_type, types = 0, b"", set()
    containers = {_SEGMENT, _TRACKS, _TRACK_ENTRY, _EBML_ID}
    while at < len(data):
        element = _ebml_number(data, at, keep_marker=True)
        if element is None:
            break
        element_id, at = element
        size_field = _ebml_number(data, at, keep_marker=False)
        if size_field is None:
            break
        size, at = size_field
        if element_id in containers:
            continue  # step into it
        if size in _UNKNOWN_SIZES or at + size > len(data):
            break
        if element_id == _DOC_TYPE:
            doc_type = data[at : at + size]
        elif element_id == _TRACK_TYPE:
            types.add(int.from_bytes(data[at : at + size], "big"))
        at += size
    if doc_type.rstrip(b"\x00") not in (b"webm", b"matroska"):
        return None
    return types


def wav_duration_ms(stream: IO[bytes]) -> int | None:
    """Return a WAV file's length in milliseconds from its header, None if unreadable."""
    stream.seek(0)
    try:
        with wave.open(stream, "rb") as wav:
            rate = wav.getframerate()
            return round(wav.getnframes() * 1000 / rate) if rate else None
    except (wave.Error, EOFError, OSError):
        return None


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


def _check_media(
    content_type: str, upload: File[bytes], *, voice: bool, duration_ms: int | None
) -> int | None:
    """Apply the voice and duration rules; return the duration to store (None: none)."""
    if voice and content_type not in AUDIO_TYPES:
        raise BadRequest(
            "A voice message must be audio (WebM or Ogg Opus, MP3, M4A or WAV); "
            f"this file is {content_type}.",
            details={"field": "voice", "content_type": content_type},
        )
    if content_type not in MEDIA_TYPES:
        if duration_ms is not None:
            raise BadRequest(
                "Only audio and video have a duration.", details={"field": "duration_ms"}
            )
        return None
    if content_type == "audio/wav":
        duration_ms = wav_duration_ms(upload) or duration_ms  # the header knows better
    limit = settings.CHAT_MAX_VOICE_SECONDS if voice else settings.CHAT_MAX_MEDIA_SECONDS
    if duration_ms is not None and duration_ms > limit * 1000:
        what = "A voice message" if voice else "An audio or video file"
        raise BadRequest(
            f"{what} may last at most {limit} seconds.",
            details={"field": "duration_ms", "max_seconds": limit},
        )
    return duration_ms


def store_attachment(
    *,
    uploader: User,
    upload: File[bytes],
    voice: bool = False,
    duration_ms: int | None = None,
) -> Attachment:
    """Store an uploaded file for `uploader` (who may then attach it to a message).

    `voice`: audio recorded in the app, shown as a voice message; `duration_ms`: what
    the client measured of audio or video (a WAV's header overrides it), at most
    `CHAT_MAX_VOICE_SECONDS` for a voice message, `CHAT_MAX_MEDIA_SECONDS` otherwise.
    """
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
    duration_ms = _check_media(content_type, upload, voice=voice, duration_ms=duration_ms)
    attachment = Attachment(
        uploader=uploader,
        filename=filename,
        content_type=content_type,
        size=size,
        sha256=_sha256(upload),
        thumbnail_status=status,
        duration_ms=duration_ms,
        voice=voice,
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


def _downscaled(stream: IO[bytes], content_type: str) -> bytes | None:
    """Return the image scaled down to `CHAT_MAX_IMAGE_EDGE`, or None if it fits already.

    Turned upright by its EXIF orientation and encoded again in its own format, so none
    of its metadata survives. GIFs are left as they are (their frames would be lost).
    """
    edge = int(settings.CHAT_MAX_IMAGE_EDGE)
    if content_type == "image/gif" or edge <= 0:
        return None
    if inspect_image(stream, content_type) is None:  # over the limits, or unreadable
        return None
    with _open_image(stream, content_type) as image:
        if max(image.size) <= edge:  # the file's own size, not a JPEG's reduced decode
            return None
        image.draft(image.mode, (edge, edge))  # a JPEG decodes at the smallest scale that will do
        upright = ImageOps.exif_transpose(image)
        upright.thumbnail((edge, edge), Image.Resampling.LANCZOS)
        if content_type == "image/jpeg" and upright.mode not in ("RGB", "L"):
            upright = upright.convert("RGB")
        out = io.BytesIO()
        options: dict[str, Any] = {"quality": 88} if content_type != "image/png" else {}
        upright.save(out, format=_PIL_FORMATS[content_type], **options)
    return out.getvalue()


def _replace_with_downscaled(attachment: Attachment) -> Attachment:
    """Store the scaled-down copy of an image over its side limit in place of the file."""
    with attachment.file.open("rb") as stream:
        data = _downscaled(stream, attachment.content_type)
    if data is None:
        return attachment
    old = attachment.file.name
    storage = attachment.file.storage
    stem = uuid.uuid4().hex
    name = storage.save(
        attachment.file.field.generate_filename(
            attachment, stem + _EXTENSIONS[attachment.content_type]
        ),
        ContentFile(data),
    )
    digest = hashlib.sha256(data).hexdigest()
    done = Attachment.objects.filter(
        pk=attachment.pk, thumbnail_status=Attachment.Thumbnail.WORKING
    ).update(file=name, size=len(data), sha256=digest)
    if not done:  # deleted meanwhile
        _delete_file(storage, name)
        return attachment
    _delete_file(storage, old)
    logger.info(
        "attachment %d scaled down to %d px: %d -> %d bytes",
        attachment.pk,
        settings.CHAT_MAX_IMAGE_EDGE,
        attachment.size,
        len(data),
    )
    return Attachment.objects.get(pk=attachment.pk)


def _store_thumbnail(attachment_id: int) -> str:
    """Decode the claimed attachment and store its thumbnail; return the status reached.

    An image over `CHAT_MAX_IMAGE_EDGE` is first scaled down in place (`_downscaled`).
    """
    attachment = _replace_with_downscaled(Attachment.objects.get(pk=attachment_id))
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
    may_see_archived = Membership.objects.filter(
        conversation_id=OuterRef("conversation_id"),
        user=user,
        visible_from_seq__lte=OuterRef("seq"),
    )
    archived = ArchivedAttachment.objects.filter(attachment=OuterRef("pk")).filter(
        Exists(may_see_archived)
    )
    attachment = (
        Attachment.objects.filter(pk=attachment_id)
        .filter(Q(uploader=user) | Exists(posted) | Exists(archived))
        .first()
    )
    if attachment is None:
        raise AttachmentNotFound()
    return attachment


_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class RangeNotSatisfiable(DomainError):
    """A `Range` that starts past the end of the file (416)."""

    code = "range_not_satisfiable"
    http_status = 416
    default_message = "The requested range is outside the file."


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """Return the (first, last) byte a one-part `Range` header asks for, None to send all.

    Only `bytes=a-b`, `bytes=a-` and `bytes=-n` are honoured; anything else (several
    ranges, other units, garbage) is answered with the whole file, as HTTP allows. A
    start past the end raises RangeNotSatisfiable.
    """
    match = _RANGE.fullmatch(header.strip())
    if match is None or size <= 0:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last n bytes
        n = int(last)
        if n == 0:
            raise RangeNotSatisfiable(details={"size": size})
        return max(0, size - n), size - 1
    start = int(first)
    if start >= size:
        raise RangeNotSatisfiable(details={"size": size})
    end = min(int(last), size - 1) if last else size - 1
    if end < start:
        return None
    return start, end


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
    inline = content_type in INLINE_TYPES or content_type in MEDIA_TYPES
    if content_type == TEXT:
        content_type = "text/plain; charset=utf-8"
    return Download(attachment.file.open("rb"), content_type, attachment.filename, inline)
