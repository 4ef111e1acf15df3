"""Turn received bytes into frames, or into errors that say exactly why they were not frames.

The decoder never raises on what it is fed and never lets its buffer grow past one maximal
frame, whatever arrives: the device side runs it on bytes anyone on the wire could send.
"""

from __future__ import annotations

from firmware_bridge._wire import (
    CRC_SIZE,
    HEADER_SIZE,
    KNOWN_TYPES,
    MAX_FRAME,
    MAX_PAYLOAD,
    SYNC,
    VERSION,
    Frame,
    MessageType,
    crc32,
    read_crc,
    read_header,
)
from firmware_bridge.errors import (
    BadVersionError,
    CrcMismatchError,
    FrameError,
    GarbageBytesError,
    OversizedFrameError,
    TruncatedFrameError,
    UnknownTypeError,
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

    Notes
    -----
    Stream resynchronisation: when a candidate frame fails a check (version, declared length,
    CRC), only its first sync byte is dropped and the search restarts right after it, so a real
    frame hidden inside the rejected candidate's bytes is still found. A bad version or an
    oversized length is rejected as soon as the header is in, without waiting for a length
    that may itself be garbage.
    """

    def __init__(self, *, datagram: bool = False) -> None:
        self.datagram = datagram
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the rest of a frame (always < one maximal frame)."""
        return len(self._buffer)

    def reset(self) -> None:
        """Forget buffered bytes (a new connection starts a new stream)."""
        self._buffer.clear()

    def feed(self, data: bytes | bytearray | memoryview) -> list[Decoded]:
        """Decode what ``data`` completes, in order of arrival."""
        if self.datagram:
            return [_decode_datagram(bytes(data))]
        self._buffer += data
        out: list[Decoded] = []
        while self._next(out):
            pass
        return out

    def flush(self) -> list[Decoded]:
        """End of stream: report bytes still buffered as a truncated frame, then forget them."""
        if self.datagram or not self._buffer:
            return []
        buffered = bytes(self._buffer)
        self._buffer.clear()
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
                del buffer[:dropped]
            return False
        if start:
            out.append(GarbageBytesError(f"discarded {start} bytes before the sync bytes"))
            del buffer[:start]
        if len(buffer) < HEADER_SIZE:
            return False
        header = read_header(buffer)
        where = {"sequence": header.sequence, "message_type": header.message_type}
        if header.version != VERSION:
            out.append(_bad_version(header.version, where))
            del buffer[:1]
            return True
        if header.length > MAX_PAYLOAD:
            out.append(_oversized(header.length, where))
            del buffer[:1]
            return True
        total = HEADER_SIZE + header.length + CRC_SIZE
        if len(buffer) < total:
            return False
        if crc32(memoryview(buffer)[len(SYNC) : total - CRC_SIZE]) != read_crc(
            buffer, total - CRC_SIZE
        ):
            out.append(CrcMismatchError("CRC-32 does not match header and payload", **where))
            del buffer[:1]
            return True
        payload = bytes(buffer[HEADER_SIZE : total - CRC_SIZE])
        del buffer[:total]
        out.append(_typed(header.message_type, header.sequence, payload, where))
        return True


def _decode_datagram(data: bytes) -> Decoded:
    if data[: len(SYNC)] != SYNC[: len(data)]:
        return GarbageBytesError(f"datagram of {len(data)} bytes does not start with sync bytes")
    if len(data) < HEADER_SIZE:  # including b"" and a lone first sync byte
        return TruncatedFrameError(
            f"datagram of {len(data)} bytes is shorter than a {HEADER_SIZE}-byte header"
        )
    header = read_header(data)
    where = {"sequence": header.sequence, "message_type": header.message_type}
    if header.version != VERSION:
        return _bad_version(header.version, where)
    if header.length > MAX_PAYLOAD:
        return _oversized(header.length, where)
    total = HEADER_SIZE + header.length + CRC_SIZE
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
    if crc32(memoryview(data)[len(SYNC) : total - CRC_SIZE]) != read_crc(data, total - CRC_SIZE):
        return CrcMismatchError("CRC-32 does not match header and payload", **where)
    return _typed(header.message_type, header.sequence, data[HEADER_SIZE : total - CRC_SIZE], where)


def _typed(message_type: int, sequence: int, payload: bytes, where: dict) -> Decoded:
    if message_type not in KNOWN_TYPES:
        return UnknownTypeError(f"type byte 0x{message_type:02X} names no message", **where)
    return Frame(MessageType(message_type), sequence, payload)


def _bad_version(version: int, where: dict) -> BadVersionError:
    return BadVersionError(f"protocol version must be {VERSION}, got {version}", **where)


def _oversized(length: int, where: dict) -> OversizedFrameError:
    return OversizedFrameError(
        f"payload length must be at most {MAX_PAYLOAD} bytes, got {length}", **where
    )
