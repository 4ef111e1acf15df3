"""A cheap structural check of an XDF file before pyxdf reads it.

pyxdf logs and carries on when a file is damaged: a truncated recording comes back as partial
data with no error. This walks the chunk framing (magic, every chunk's length within the file,
known tags, headers before their streams' chunks, well-formed XML, the sample layout of every
Samples chunk) without decoding sample values, so damage becomes a clear error and a crashed
recording's intact prefix can be located.

Where pyxdf, the reference reader, reads a file that departs from the spec without losing or
misplacing any sample (a Boundary chunk with other content, a chunk with an unknown tag, a
StreamFooter that is not XML, a FileHeader missing or out of place), the scan records the
departure in ``XdfLayout.deviations`` instead of refusing the file; the reader warns. What
could misplace or garble samples is still refused: a chunk whose content does not fill its
length, a second StreamHeader, a TimestampBytes other than 0 or 8 (pyxdf reads any non-zero
value as 8, but bytes overwritten inside a Samples chunk look exactly like that), and a
ClockOffset that is not finite (it would make every synchronised stamp of its stream NaN).
"""

from __future__ import annotations

import gzip
import math
import struct
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from bench.data.session_io._errors import SessionFileError
from bench.data.session_io._xdf_format import (
    BOUNDARY_UUID,
    CHANNEL_FORMATS,
    CLOCK_OFFSET_CONTENT_BYTES,
    MAGIC,
    STREAM_TAGS,
    VALUE_DTYPES,
    Tag,
    decode_varlen,
    open_xdf,
)

_READ_BLOCK = 1 << 20


@dataclass(frozen=True)
class XdfStream:
    """A stream as its StreamHeader declares it."""

    stream_id: int
    header_xml: str
    header: ET.Element
    name: str
    stream_type: str
    source_id: str
    channel_count: int
    channel_format: str
    nominal_srate: float

    def describe(self) -> str:
        return (
            f"stream {self.stream_id} {self.name!r} (type {self.stream_type!r}, "
            f"{self.channel_count} {self.channel_format} channels)"
        )


@dataclass(frozen=True)
class XdfChunk:
    """Where one chunk lies: ``start`` is its first byte, ``end`` one past its last."""

    tag: Tag
    start: int
    end: int
    stream_id: int | None


@dataclass
class XdfLayout:
    """The chunks of a file, its streams, and whether it ends early.

    ``intact_end`` is the byte after the last complete chunk; ``truncation`` says why the file
    is incomplete (None when every chunk is whole and every stream has its footer).
    """

    streams: dict[int, XdfStream] = field(default_factory=dict)
    footers: set[int] = field(default_factory=set)
    chunks: list[XdfChunk] = field(default_factory=list)
    intact_end: int = 0
    truncation: str | None = None
    deviations: dict[str, list[int]] = field(default_factory=dict)
    """Departures from the spec read as pyxdf reads them: what, and the chunk start bytes."""

    def deviate(self, what: str, start: int) -> None:
        self.deviations.setdefault(what, []).append(start)


def scan_xdf(path: Path) -> XdfLayout:
    """Walk the chunks of ``path``; raise SessionFileError on damage other than truncation."""
    with open_xdf(path, "rb") as file:
        try:
            return _Scanner(file, path).run()
        except (gzip.BadGzipFile, zlib.error) as err:
            raise SessionFileError(f"{path}: not a valid gzip-compressed XDF file: {err}") from None


def read_prefix(path: Path, size: int) -> bytes:
    """The first ``size`` bytes of the (decompressed) file, as far as they can be read."""
    with open_xdf(path, "rb") as file:
        return read_up_to(file, size)


def read_up_to(file: BinaryIO, size: int) -> bytes:
    """Read up to ``size`` bytes; fewer mean the file ended (or its gzip stream was cut).

    Reads in blocks, so a corrupt huge chunk length costs at most the rest of the file instead
    of one impossible allocation.
    """
    parts = []
    while size > 0:
        try:
            block = file.read(min(size, _READ_BLOCK))
        except EOFError:  # a gzip stream cut short
            block = b""
        if not block:
            break
        parts.append(block)
        size -= len(block)
    return b"".join(parts)


class _Scanner:
    def __init__(self, file: BinaryIO, path: Path) -> None:
        self._file = file
        self._path = path
        self._layout = XdfLayout()

    def run(self) -> XdfLayout:
        head = read_up_to(self._file, len(MAGIC))
        if head != MAGIC:
            what = "is empty" if not head else f"starts with {head!r}"
            raise SessionFileError(
                f"{self._path}: not an XDF file: it {what}; XDF files start with {MAGIC!r}"
            )
        position = len(MAGIC)
        layout = self._layout
        layout.intact_end = position
        while True:
            chunk_end = self._chunk(position)
            if chunk_end is None:
                break
            position = layout.intact_end = chunk_end
        if layout.truncation is None:
            layout.truncation = self._missing_parts()
        return layout

    def _chunk(self, start: int) -> int | None:
        """Check the chunk at ``start``; its end, or None at the end of the file."""
        size_byte = read_up_to(self._file, 1)
        if not size_byte:
            return None
        size = size_byte[0]
        if size not in (1, 4, 8):
            raise self._corrupt(start, f"its length field size is {size} (must be 1, 4 or 8)")
        length_bytes = read_up_to(self._file, size)
        body = b""
        if len(length_bytes) == size:
            length = int.from_bytes(length_bytes, "little")
            body = read_up_to(self._file, length)
            if len(body) == length:
                end = start + 1 + size + length
                self._check_content(start, end, body)
                return end
        at = start + 1 + len(length_bytes) + len(body)
        self._layout.truncation = (
            f"file ends at byte {at} inside the chunk that starts at byte {start} "
            f"(truncated recording, or a corrupt chunk length)"
        )
        return None

    def _check_content(self, start: int, end: int, body: bytes) -> None:
        if len(body) < 2:
            raise self._corrupt(start, f"its length {len(body)} leaves no room for the tag")
        tag_value = struct.unpack_from("<H", body)[0]
        if tag_value not in Tag.__members__.values():
            self._layout.deviate(f"chunk with unknown tag {tag_value} (skipped)", start)
            return
        tag = Tag(tag_value)
        if tag == Tag.FILE_HEADER and self._layout.chunks:
            self._layout.deviate("FileHeader after other chunks (XDF 1.0: first only)", start)
        elif tag != Tag.FILE_HEADER and not self._layout.chunks:
            self._layout.deviate(f"{tag.name} chunk where the FileHeader should be first", start)
        content = body[2:]
        stream_id = None
        if tag in STREAM_TAGS:
            if len(content) < 4:
                raise self._corrupt(start, f"{tag.name} chunk too short for a StreamId")
            stream_id = struct.unpack_from("<I", content)[0]
        self._layout.chunks.append(XdfChunk(tag, start, end, stream_id))
        if tag == Tag.FILE_HEADER:
            self._xml(start, "FileHeader", content)
        elif tag == Tag.BOUNDARY:
            if content != BOUNDARY_UUID:
                self._layout.deviate("Boundary chunk without the spec's boundary UUID", start)
        elif tag == Tag.STREAM_HEADER:
            self._stream_header(start, stream_id, content)
        else:
            stream = self._known_stream(start, tag, stream_id)
            if tag == Tag.SAMPLES:
                self._samples(start, stream, content)
            elif tag == Tag.CLOCK_OFFSET:
                self._clock_offset(start, stream_id, content)
            else:
                self._footer(start, stream_id, content[4:])

    def _clock_offset(self, start: int, stream_id: int, content: bytes) -> None:
        """A non-finite time or offset would make every synchronised stamp of its stream NaN:
        refused here as the damage it is, not later as NaN timestamps."""
        if len(content) != CLOCK_OFFSET_CONTENT_BYTES:
            raise self._corrupt(
                start,
                f"ClockOffset chunk holds {len(content)} bytes, not {CLOCK_OFFSET_CONTENT_BYTES}",
            )
        time, offset = struct.unpack_from("<dd", content, 4)
        if not (math.isfinite(time) and math.isfinite(offset)):
            raise self._corrupt(
                start,
                f"ClockOffset chunk of stream {stream_id} holds offset {offset!r} at time "
                f"{time!r} (both must be finite)",
            )

    def _footer(self, start: int, stream_id: int, content: bytes) -> None:
        """A footer ends its stream even when its XML is unreadable (pyxdf ignores that XML)."""
        self._layout.footers.add(stream_id)
        try:
            ET.fromstring(content)
        except ET.ParseError:
            self._layout.deviate("StreamFooter that is not valid XML (ignored)", start)

    def _stream_header(self, start: int, stream_id: int, content: bytes) -> None:
        if stream_id in self._layout.streams:
            raise self._corrupt(start, f"second StreamHeader for stream {stream_id}")
        what = f"StreamHeader of stream {stream_id}"
        # pyxdf decodes header text leniently: a stray non-UTF-8 byte in a label is not damage
        header = self._xml(start, what, content[4:].decode("utf-8", "replace"))
        try:
            count = int(header.findtext("channel_count", ""))
            srate = float(header.findtext("nominal_srate", ""))
        except ValueError:
            count, srate = 0, -1.0
        channel_format = header.findtext("channel_format")
        name = header.findtext("name")
        if count < 1 or not srate >= 0 or channel_format not in CHANNEL_FORMATS or name is None:
            raise self._corrupt(
                start,
                f"{what} needs a name, channel_count >= 1, nominal_srate >= 0 and a "
                f"channel_format in {CHANNEL_FORMATS}",
            )
        self._layout.streams[stream_id] = XdfStream(
            stream_id=stream_id,
            header_xml=content[4:].decode("utf-8", "replace"),
            header=header,
            name=name,
            stream_type=header.findtext("type", ""),
            source_id=header.findtext("source_id", ""),
            channel_count=count,
            channel_format=channel_format,
            nominal_srate=srate,
        )

    def _known_stream(self, start: int, tag: Tag, stream_id: int) -> XdfStream:
        stream = self._layout.streams.get(stream_id)
        if stream is None:
            raise self._corrupt(
                start,
                f"{tag.name} chunk of stream {stream_id}, which has no StreamHeader before it",
            )
        return stream

    def _samples(self, start: int, stream: XdfStream, content: bytes) -> None:
        """Walk the samples' timestamp flags and value sizes, the way a reader will."""
        try:
            count, position = decode_varlen(content, 4)
            if stream.channel_format == "string":
                position = _walk_strings(content, position, count, stream.channel_count)
            else:
                value_bytes = (
                    stream.channel_count * np.dtype(VALUE_DTYPES[stream.channel_format]).itemsize
                )
                position = _walk_numeric(content, position, count, value_bytes)
            if position != len(content):
                raise ValueError(
                    f"its {count} samples end at offset {position} but the chunk holds "
                    f"{len(content)} bytes"
                )
        except ValueError as err:
            raise self._corrupt(start, f"Samples chunk of {stream.describe()}: {err}") from None

    def _xml(self, start: int, what: str, content: bytes | str) -> ET.Element:
        try:
            return ET.fromstring(content)
        except ET.ParseError as err:
            raise self._corrupt(start, f"{what} is not valid XML ({err})") from None

    def _missing_parts(self) -> str | None:
        layout = self._layout
        end = f"file ends at byte {layout.intact_end}"
        if not layout.chunks:
            return f"{end} before the FileHeader (truncated recording)"
        if not layout.streams:
            return f"{end} before any StreamHeader (truncated recording)"
        missing = sorted(set(layout.streams) - layout.footers)
        if missing:
            ids = ", ".join(map(str, missing))
            return f"{end} without the StreamFooter of stream(s) {ids} (truncated recording)"
        return None

    def _corrupt(self, start: int, problem: str) -> SessionFileError:
        return SessionFileError(f"{self._path}: corrupt chunk at byte {start}: {problem}")


def _walk_numeric(content: bytes, position: int, count: int, value_bytes: int) -> int:
    for _ in range(count):
        position = _skip_timestamp(content, position) + value_bytes
    return position


def _walk_strings(content: bytes, position: int, count: int, channel_count: int) -> int:
    for _ in range(count):
        position = _skip_timestamp(content, position)
        for _ in range(channel_count):
            length, position = decode_varlen(content, position)
            position += length
    return position


def _skip_timestamp(content: bytes, position: int) -> int:
    if position >= len(content):
        raise ValueError("the samples run past the end of the chunk")
    stamp_bytes = content[position]
    if stamp_bytes not in (0, 8):
        raise ValueError(f"TimestampBytes {stamp_bytes} at offset {position} (must be 0 or 8)")
    return position + 1 + stamp_bytes
