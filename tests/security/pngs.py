"""PNG files built byte by byte: deep (16-bit) canvases that compress to almost nothing."""

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# IHDR colour types: grey, RGB, palette, grey + alpha, RGBA.
GREY, RGB, PALETTE, GREY_ALPHA, RGBA = 0, 2, 3, 4, 6
_CHANNELS = {GREY: 1, RGB: 3, PALETTE: 1, GREY_ALPHA: 2, RGBA: 4}


def chunk(kind: bytes, data: bytes) -> bytes:
    """Return one PNG chunk: length, type, data, CRC."""
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png(width: int, height: int, *, depth: int = 16, colour: int = RGBA) -> bytes:
    """Return a valid, uniform PNG: every row the same, filter 0, one IDAT.

    6300 x 6300 RGBA at 16 bits (the security finding's file) inflates to 317 MB of
    samples and deflates to about 310 KB.
    """
    row_bytes = -(-width * _CHANNELS[colour] * depth // 8)
    sample = bytes([0x12, 0x34] * (row_bytes // 2 + 1))[:row_bytes]
    row = b"\x00" + sample
    deflate = zlib.compressobj(6)
    # Compress a block of rows at a time: fast, and memory stays at one block.
    block = row * 64
    parts = [deflate.compress(block) for _ in range(height // 64)]
    parts.append(deflate.compress(row * (height % 64)))
    parts.append(deflate.flush())
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    extra = chunk(b"PLTE", b"\x00\x00\x00\xff\xff\xff") if colour == PALETTE else b""
    return (
        SIGNATURE
        + chunk(b"IHDR", header)
        + extra
        + chunk(b"IDAT", b"".join(parts))
        + chunk(b"IEND", b"")
    )
