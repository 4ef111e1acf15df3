"""XDF 1.0 framing shared by the writer and the scanner (spec: github.com/sccn/xdf/wiki).

A file is the magic ``XDF:`` followed by chunks: NumLengthBytes (1, 4 or 8), Length (that many
bytes, little-endian, counting tag and content), Tag (uint16 LE), content. All numbers are
little-endian.
"""

from __future__ import annotations

import gzip
import struct
from enum import IntEnum
from pathlib import Path
from typing import BinaryIO

MAGIC = b"XDF:"

BOUNDARY_UUID = bytes.fromhex("43A546DCCBF5410FB30ED5467383CBE4")
"""Content of every Boundary chunk; readers scan for it to resynchronise after damage."""

VALUE_DTYPES = {
    "int8": "<i1",
    "int16": "<i2",
    "int32": "<i4",
    "int64": "<i8",
    "float32": "<f4",
    "double64": "<f8",
}
"""Numeric ``channel_format`` names and their on-disk dtypes; ``string`` is the only other."""

CHANNEL_FORMATS = (*VALUE_DTYPES, "string")


class Tag(IntEnum):
    """Chunk tags defined by XDF 1.0."""

    FILE_HEADER = 1
    STREAM_HEADER = 2
    SAMPLES = 3
    CLOCK_OFFSET = 4
    BOUNDARY = 5
    STREAM_FOOTER = 6


STREAM_TAGS = frozenset({Tag.STREAM_HEADER, Tag.SAMPLES, Tag.CLOCK_OFFSET, Tag.STREAM_FOOTER})
"""Tags whose content starts with a uint32 StreamId."""

CLOCK_OFFSET_CONTENT_BYTES = 4 + 8 + 8
"""StreamId, CollectionTime (double), OffsetValue (double)."""


def open_xdf(path: Path, mode: str) -> BinaryIO:
    """Open ``path`` for binary reading or writing, gzip-compressed when it ends in ``.xdfz``."""
    if path.suffix.lower() == ".xdfz":
        return gzip.open(path, mode)
    return open(path, mode)


def encode_varlen(value: int) -> bytes:
    """Encode a length or count as XDF's variable-length integer (size byte 1, 4 or 8)."""
    if value < 0x100:
        return struct.pack("<BB", 1, value)
    if value < 0x1_0000_0000:
        return struct.pack("<BI", 4, value)
    return struct.pack("<BQ", 8, value)


def decode_varlen(data: bytes, pos: int) -> tuple[int, int]:
    """Decode a variable-length integer at ``data[pos]``; return it and the position after it.

    Raises ValueError when the size byte is not 1, 4 or 8 or the integer runs past ``data``.
    """
    if pos >= len(data):
        raise ValueError(f"a variable-length integer at offset {pos} runs past the data")
    size = data[pos]
    if size not in (1, 4, 8):
        raise ValueError(f"variable-length integer size byte {size} (must be 1, 4 or 8)")
    end = pos + 1 + size
    if end > len(data):
        raise ValueError(f"a variable-length integer at offset {pos} runs past the data")
    return int.from_bytes(data[pos + 1 : end], "little"), end
