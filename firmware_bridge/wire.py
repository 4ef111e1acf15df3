"""Frame layout shared by host and device: sync, header, payload, [tag,] CRC-32 (PROTOCOL.md).

Little-endian throughout, as on every Cortex-M the firmware runs on. The CRC is zlib's CRC-32
(IEEE 802.3): it is in the standard library (C speed, no dependency to keep alive), most
microcontrollers compute it in hardware, and it detects every burst of up to 32 bits and every
1-, 2- and 3-bit error in frames of this size. It catches noise, not forgery: anyone can
compute it. On a keyed link each frame also carries an HMAC-SHA256 tag (standard library;
the firmware's crypto library or hardware has SHA-256), cut to :data:`TAG_SIZE` bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum

SYNC = b"\xa5\x5a"
"""Two bytes that start every frame; 0xA5 0x5A alternates bits, so it is rare in idle lines."""

VERSION = 3
"""Protocol version this code speaks; frames of any other version are rejected. Version 2
added the arm session and the host's send time (PROTOCOL.md, "Sessions and deadlines");
version 3 the HMAC tag of keyed links (PROTOCOL.md, "Trust boundary")."""

TAG_SIZE = 16
"""Bytes of HMAC-SHA256 a keyed frame carries between payload and CRC: 128 bits, as
RFC 2104 allows (at least half the hash); a forger's chance per frame is 2**-128."""

MAX_PAYLOAD = 742
"""Largest payload of any type: a STIMULATE on all 360 electrodes. Each type has its own, lower
or equal, maximum (:func:`firmware_bridge.messages.max_payload`)."""

_HEADER = struct.Struct("<2sBBIH")  # sync, version, type, sequence, payload length
_CRC = struct.Struct("<I")

HEADER_SIZE = _HEADER.size
CRC_SIZE = _CRC.size
MAX_FRAME = HEADER_SIZE + MAX_PAYLOAD + TAG_SIZE + CRC_SIZE
"""The largest frame of either kind (a keyed one): what a decoder may have to buffer."""
SEQUENCE_MODULUS = 1 << 32
CLOCK_MODULUS = 1 << 32
"""Send and receive times travel as milliseconds modulo 2**32 (they wrap every 49.7 days)."""


class MessageType(IntEnum):
    """The type byte. Host-to-device commands are below 0x80, device replies above."""

    ARM = 0x01
    DISARM = 0x02
    STIMULATE = 0x03
    HEARTBEAT = 0x04
    STATUS_REQUEST = 0x05
    ACK = 0x81
    NACK = 0x82
    STATUS_REPLY = 0x83


KNOWN_TYPES = frozenset(int(t) for t in MessageType)
HOST_COMMANDS = frozenset(t for t in MessageType if t < 0x80)
DEVICE_REPLIES = frozenset(t for t in MessageType if t >= 0x80)


@dataclass(frozen=True)
class Frame:
    """One frame whose sync, version, length and CRC were all good and whose type is known."""

    message_type: MessageType
    sequence: int
    payload: bytes


@dataclass(frozen=True)
class Header:
    """The fields of a header, before anything but its layout has been checked."""

    version: int
    message_type: int
    sequence: int
    length: int


def crc32(data: bytes | bytearray | memoryview) -> int:
    """CRC-32/ISO-HDLC (zlib), as carried in every frame's last four bytes."""
    return zlib.crc32(data) & 0xFFFFFFFF


def tag(key: bytes, body: bytes | bytearray | memoryview) -> bytes:
    """The HMAC tag of a frame's ``body`` (version through the end of the payload)."""
    return hmac.new(key, body, hashlib.sha256).digest()[:TAG_SIZE]


def encode_frame(
    message_type: int, sequence: int, payload: bytes = b"", *, key: bytes | None = None
) -> bytes:
    """Build the bytes of one frame; with ``key`` it carries the tag of version through the
    end of the payload, and the CRC covers version through the end of the tag.

    Raises
    ------
    ValueError
        If the payload is longer than :data:`MAX_PAYLOAD`, or the type or sequence do not fit
        their one- and four-byte fields.
    """
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"'payload' must be at most {MAX_PAYLOAD} bytes, got {len(payload)} bytes")
    if not 0 <= message_type <= 0xFF:
        raise ValueError(f"'message_type' must be in [0, 255], got {message_type!r}")
    if not 0 <= sequence < SEQUENCE_MODULUS:
        raise ValueError(f"'sequence' must be in [0, 2**32 - 1], got {sequence!r}")
    return encode_raw(message_type, sequence, payload, version=VERSION, key=key)


def encode_raw(
    message_type: int,
    sequence: int,
    payload: bytes,
    *,
    version: int,
    length: int | None = None,
    key: bytes | None = None,
) -> bytes:
    """Frame with any version and declared length, CRC valid: for tests and the fuzz bench."""
    declared = len(payload) if length is None else length
    body = _HEADER.pack(SYNC, version, message_type, sequence, declared)[len(SYNC) :] + payload
    if key is not None:
        body += tag(key, body)
    return SYNC + body + _CRC.pack(crc32(body))


def read_header(buffer: bytes | bytearray | memoryview, offset: int = 0) -> Header:
    """Unpack the :data:`HEADER_SIZE` bytes at ``offset`` (which must start with :data:`SYNC`)."""
    _sync, version, message_type, sequence, length = _HEADER.unpack_from(buffer, offset)
    return Header(version, message_type, sequence, length)


def frame_size(length: int, tag_size: int = 0) -> int:
    """Bytes in a frame whose header declares ``length`` payload bytes (and a tag of
    ``tag_size`` bytes: :data:`TAG_SIZE` on a keyed link)."""
    return HEADER_SIZE + length + tag_size + CRC_SIZE


def clock_ms(seconds: float) -> int:
    """A monotonic clock reading in seconds as it travels: whole milliseconds, wrapping."""
    return int(seconds * 1000) % CLOCK_MODULUS


def signed_ms(difference: int) -> int:
    """A difference of two wrapping millisecond readings as a signed number of ms.

    Exact while the true difference is within ±2**31 ms (24.8 days), which is why readings
    are only ever compared with recent ones.
    """
    return (difference + CLOCK_MODULUS // 2) % CLOCK_MODULUS - CLOCK_MODULUS // 2


def read_crc(buffer: bytes | bytearray | memoryview, offset: int) -> int:
    """The CRC stored at ``offset``."""
    return _CRC.unpack_from(buffer, offset)[0]
