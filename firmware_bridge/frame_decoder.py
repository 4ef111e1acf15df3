"""Turn received bytes into frames, or into errors that say exactly why they were not frames.

The decoder never raises on what it is fed and never lets its buffer grow past one maximal
frame, whatever arrives: the device side runs it on bytes anyone on the wire could send.
"""

from __future__ import annotations

import hmac

from firmware_bridge.errors import (
    BadVersionError,
    CrcMismatchError,
    FrameError,
    GarbageBytesError,
    OversizedFrameError,
    TruncatedFrameError,
    UnauthenticatedFrameError,
    UnknownTypeError,
)
from firmware_bridge.messages import max_payload
from firmware_bridge.wire import (
    CRC_SIZE,
    HEADER_SIZE,
    MAX_FRAME,
    SYNC,
    TAG_SIZE,
    VERSION,
    Frame,
    Header,
    MessageType,
    crc32,
    frame_size,
    read_crc,
    read_header,
    tag,
)

Decoded = Frame | FrameError
"""What :meth:`FrameDecoder.feed` yields: a good frame, or the error that replaced one."""


class FrameDecoder:
    """Decoder for one byte stream (serial, TCP) or one datagram socket (UDP).

    Parameters
    ----------
    datagram
        True when every :meth:`feed` is one whole datagram (UDP). A datagram must be exactly
        one frame: anything else is rejected whole, because a datagram boundary is a frame
        boundary and there is nothing to resynchronise on. False for byte streams, where frames
        may arrive split or glued together, and garbage is skipped by searching for the next
        sync bytes.
    key
        The link's shared key, or None on an unkeyed link. With a key every frame must carry
        the HMAC tag of its header and payload; one whose tag is missing or wrong becomes an
        :class:`UnauthenticatedFrameError` and is dropped whole, never parsed. Whether frames
        carry tags is the link's configuration, not something a frame may claim.

    Notes
    -----
    Stream resynchronisation: a candidate frame (bytes from a sync word on) is rejected as
    soon as it cannot be valid: at once when its header names another version, an unknown
    type, or a length above its type's maximum; when a complete, CRC-valid frame starts at a
    later sync word inside the bytes it is still waiting for (its length field was corrupted
    within bounds); or when its CRC fails. Only its first sync byte is then dropped and the
    search restarts right after it, so a genuine frame inside the rejected candidate's bytes is
    still found. A corrupted header therefore costs the frames it overlaps, never the ones
    that arrive after it.
    """

    def __init__(self, *, datagram: bool = False, key: bytes | None = None) -> None:
        self.datagram = datagram
        self._key = key
        self._tag_size = TAG_SIZE if key is not None else 0
        self._buffer = bytearray()
        self._connection = 0
        self._checked = 0  # later candidates ending within this many bytes were CRC-checked

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the rest of a frame (always < one maximal frame)."""
        return len(self._buffer)

    def reset(self) -> None:
        """Forget buffered bytes (a new connection starts a new stream)."""
        self._buffer.clear()
        self._checked = 0

    def feed(self, data: bytes | bytearray | memoryview, *, connection: int = 0) -> list[Decoded]:
        """Decode what ``data`` completes, in order of arrival.

        ``connection`` names the byte stream ``data`` came from (a transport's
        :attr:`~firmware_bridge.transport.Transport.connection_id`): when it differs from the
        previous feed's, the bytes a dead connection left half a frame into are dropped first,
        reported as one truncated frame without a sequence number, as nobody is left to NACK.
        """
        out: list[Decoded] = []
        if connection != self._connection:
            self._connection = connection
            if self._buffer:
                out.append(
                    TruncatedFrameError(
                        f"dropped {len(self._buffer)} bytes that a previous connection left "
                        "inside a frame"
                    )
                )
                self.reset()
        if self.datagram:
            return [*out, self._decode_datagram(bytes(data))]
        self._buffer += data
        while self._next(out):
            pass
        return out

    def flush(self) -> list[Decoded]:
        """End of stream: report bytes still buffered as a truncated frame, then forget them."""
        if self.datagram or not self._buffer:
            return []
        buffered = bytes(self._buffer)
        self.reset()
        sequence = message_type = None
        if len(buffered) >= HEADER_SIZE:
            header = read_header(buffered)
            sequence, message_type = header.sequence, header.message_type
        return [
            TruncatedFrameError(
                f"stream ended {len(buffered)} bytes into a frame",
                sequence=sequence,
                message_type=message_type,
            )
        ]

    def _next(self, out: list[Decoded]) -> bool:
        """Consume one frame or one rejected candidate; False when more bytes are needed."""
        buffer = self._buffer
        start = buffer.find(SYNC)
        if start < 0:
            # Keep a trailing first sync byte: its partner may be in the next chunk.
            keep = 1 if buffer[-1:] == SYNC[:1] else 0
            dropped = len(buffer) - keep
            if dropped:
                out.append(GarbageBytesError(f"discarded {dropped} bytes before any sync bytes"))
                self._drop(dropped)
            return False
        if start:
            out.append(GarbageBytesError(f"discarded {start} bytes before the sync bytes"))
            self._drop(start)
        if len(buffer) < HEADER_SIZE:
            return False
        header = read_header(buffer)
        where = {"sequence": header.sequence, "message_type": header.message_type}
        error = _header_error(header, where)
        if error is None:
            total = frame_size(header.length, self._tag_size)
            if len(buffer) < total:
                later = self._complete_frame_after_start()
                if later is None:
                    return False
                error = TruncatedFrameError(
                    f"a complete frame starts {later} bytes into the {total}-byte frame this "
                    "header declares: its length is corrupt, or the frame was cut short",
                    **where,
                )
            elif not _crc_ok(buffer, 0, total):
                error = CrcMismatchError("CRC-32 does not match header and payload", **where)
            else:
                item = self._authenticated(bytes(buffer[:total]), header, where)
                self._drop(total)  # CRC-valid: a whole frame, authentic or not
                out.append(item)
                return True
        out.append(error)
        self._drop(1)
        return True

    def _complete_frame_after_start(self) -> int | None:
        """Where the first complete, CRC-valid frame after the buffer's first byte starts."""
        buffer = self._buffer
        position = buffer.find(SYNC, 1)
        while 0 < position <= len(buffer) - HEADER_SIZE:
            header = read_header(buffer, position)
            end = position + frame_size(header.length, self._tag_size)
            # Candidates that ended within the bytes already checked failed their CRC then.
            if (
                _header_error(header, {}) is None
                and self._checked < end <= len(buffer)
                and _crc_ok(buffer, position, end)
            ):
                return position
            position = buffer.find(SYNC, position + 1)
        self._checked = len(buffer)
        return None

    def _drop(self, count: int) -> None:
        del self._buffer[:count]
        self._checked = max(0, self._checked - count)

    def _authenticated(self, frame: bytes, header: Header, where: dict) -> Decoded:
        """The frame of these CRC-valid bytes, or why its tag does not vouch for it."""
        end = len(frame) - CRC_SIZE - self._tag_size
        if self._key is not None:
            expected = tag(self._key, frame[len(SYNC) : end])
            if not hmac.compare_digest(expected, frame[end : end + self._tag_size]):
                return UnauthenticatedFrameError(
                    "HMAC tag does not match: the frame was not sent with this link's key",
                    **where,
                )
        return Frame(MessageType(header.message_type), header.sequence, frame[HEADER_SIZE:end])

    def _decode_datagram(self, data: bytes) -> Decoded:
        if data[: len(SYNC)] != SYNC[: len(data)]:
            return GarbageBytesError(
                f"datagram of {len(data)} bytes does not start with sync bytes"
            )
        if len(data) < HEADER_SIZE:  # including b"" and a lone first sync byte
            return TruncatedFrameError(
                f"datagram of {len(data)} bytes is shorter than a {HEADER_SIZE}-byte header"
            )
        header = read_header(data)
        where = {"sequence": header.sequence, "message_type": header.message_type}
        error = _header_error(header, where)
        if error is not None:
            return error
        total = frame_size(header.length, self._tag_size)
        if (
            self._tag_size
            and len(data) == frame_size(header.length)
            and _crc_ok(data, 0, len(data))
        ):
            return UnauthenticatedFrameError("frame carries no HMAC tag (keyed link)", **where)
        if len(data) < total:
            return TruncatedFrameError(
                f"datagram of {len(data)} bytes ends inside a {total}-byte frame", **where
            )
        if len(data) > total:
            return OversizedFrameError(
                f"datagram carries {len(data) - total} bytes after its {total}-byte frame "
                f"(at most {MAX_FRAME} bytes, one frame per datagram)",
                **where,
            )
        if not _crc_ok(data, 0, total):
            return CrcMismatchError("CRC-32 does not match header and payload", **where)
        return self._authenticated(data, header, where)


def _header_error(header: Header, where: dict) -> FrameError | None:
    """Why a frame with this header cannot be valid, or None: checked before waiting for it."""
    if header.version != VERSION:
        return BadVersionError(f"protocol version must be {VERSION}, got {header.version}", **where)
    limit = max_payload(header.message_type)
    if limit is None:
        return UnknownTypeError(f"type byte 0x{header.message_type:02X} names no message", **where)
    if header.length > limit:
        return OversizedFrameError(
            f"{MessageType(header.message_type).name} payload length must be at most {limit} "
            f"bytes, got {header.length}",
            **where,
        )
    return None


def _crc_ok(buffer: bytes | bytearray, start: int, end: int) -> bool:
    body = memoryview(buffer)[start + len(SYNC) : end - CRC_SIZE]
    return crc32(body) == read_crc(buffer, end - CRC_SIZE)
