"""Every error the bridge, the wire protocol and the firmware can report, in one place.

A NACK carries a one-byte :class:`ErrorCode`; :func:`error_for_code` turns it into the
exception class that names the same rule, so host and device agree on what went wrong without
a second table anywhere else. Errors the host finds itself (no ACK in time, a broken socket, an
audit log that cannot be written) have no wire code and are plain :class:`BridgeError` s.
"""

from __future__ import annotations

from enum import IntEnum

from service.core.errors import CorticastError


class ErrorCode(IntEnum):
    """The error byte of a NACK (see PROTOCOL.md, "Error codes")."""

    # Framing: the bytes did not form an acceptable frame.
    CRC_MISMATCH = 0x01
    BAD_VERSION = 0x02
    UNKNOWN_TYPE = 0x03
    OVERSIZED = 0x04
    BAD_PAYLOAD = 0x05
    TRUNCATED = 0x06
    GARBAGE = 0x07
    UNEXPECTED_TYPE = 0x08
    UNAUTHENTICATED = 0x09
    # Device interlocks: a well-formed command that the device refuses to execute.
    NOT_ARMED = 0x10
    REFRACTORY = 0x11
    BUDGET_MINUTE = 0x12
    BUDGET_DAY = 0x13
    CHARGE_DENSITY = 0x14
    OUT_OF_BOUNDS = 0x15
    BAD_CHANNELS = 0x16
    ELECTRODE_AREA = 0x17
    DUPLICATE_SEQUENCE = 0x18
    SESSION_MISMATCH = 0x19
    EXPIRED = 0x1A
    DEVICE_FAULT = 0x7F


class BridgeError(CorticastError):
    """Base of every error raised by :mod:`firmware_bridge`."""


class FirmwareError(BridgeError):
    """An error that has a wire code: found by a decoder, or reported by the device in a NACK.

    Parameters
    ----------
    message
        What happened, for a human.
    sequence
        Sequence number of the offending frame when its header could be read, else None.
        A decoder NACKs only errors whose sequence it knows.
    message_type
        Type byte of the offending frame when its header could be read, else None.
    """

    code: ErrorCode = ErrorCode.DEVICE_FAULT

    def __init__(
        self, message: str, *, sequence: int | None = None, message_type: int | None = None
    ) -> None:
        super().__init__(message)
        self.sequence = sequence
        self.message_type = message_type


class FrameError(FirmwareError):
    """The bytes received do not form an acceptable frame; nothing in them was executed."""


class CrcMismatchError(FrameError):
    """The CRC-32 at the end of the frame does not match its header and payload."""

    code = ErrorCode.CRC_MISMATCH


class BadVersionError(FrameError):
    """The frame's protocol version is not the one this side speaks."""

    code = ErrorCode.BAD_VERSION


class UnknownTypeError(FrameError):
    """The frame's type byte names no message of this protocol version."""

    code = ErrorCode.UNKNOWN_TYPE


class OversizedFrameError(FrameError):
    """The frame declares, or a datagram carries, more bytes than the protocol allows."""

    code = ErrorCode.OVERSIZED


class BadPayloadError(FrameError):
    """The payload's length or contents do not fit the frame's message type."""

    code = ErrorCode.BAD_PAYLOAD


class TruncatedFrameError(FrameError):
    """A datagram ended before the frame it starts was complete."""

    code = ErrorCode.TRUNCATED


class GarbageBytesError(FrameError):
    """Bytes that do not start a frame were discarded while looking for the sync bytes."""

    code = ErrorCode.GARBAGE


class UnexpectedTypeError(FrameError):
    """A valid message that this side never accepts (e.g. an ACK sent to the device)."""

    code = ErrorCode.UNEXPECTED_TYPE


class UnauthenticatedFrameError(FrameError):
    """On a keyed link: the frame's HMAC tag is missing or wrong (not sent with the key)."""

    code = ErrorCode.UNAUTHENTICATED


class DeviceInterlockError(FirmwareError):
    """The device understood a command and refused it under one of its own interlocks."""


class NotArmedError(DeviceInterlockError):
    """STIMULATE while the device is disarmed (by the host, its watchdog, or at boot)."""

    code = ErrorCode.NOT_ARMED


class RefractoryError(DeviceInterlockError):
    """STIMULATE sooner than the device's refractory period after the previous train."""

    code = ErrorCode.REFRACTORY


class MinuteBudgetError(DeviceInterlockError):
    """The device's per-minute train budget is spent."""

    code = ErrorCode.BUDGET_MINUTE


class DayBudgetError(DeviceInterlockError):
    """The device's per-day train budget is spent."""

    code = ErrorCode.BUDGET_DAY


class ChargeDensityError(DeviceInterlockError):
    """Charge per phase per electrode area is above the device's limit (<= 25 µC/cm²)."""

    code = ErrorCode.CHARGE_DENSITY


class OutOfBoundsError(DeviceInterlockError):
    """Amplitude, phase width, frequency or train duration is outside the device's range."""

    code = ErrorCode.OUT_OF_BOUNDS


class BadChannelsError(DeviceInterlockError):
    """Empty, duplicated, too many, or non-existent electrode indices."""

    code = ErrorCode.BAD_CHANNELS


class ElectrodeAreaError(DeviceInterlockError):
    """The electrode area is not finite and positive, or larger than the real contacts."""

    code = ErrorCode.ELECTRODE_AREA


class DuplicateSequenceError(DeviceInterlockError):
    """STIMULATE whose sequence number is not after that of the train delivered last in its
    arm session (a replayed or held copy)."""

    code = ErrorCode.DUPLICATE_SEQUENCE


class SessionMismatchError(DeviceInterlockError):
    """STIMULATE of an arm session that is not the one open (a frame from before the latest
    ARM or DISARM, delivered late)."""

    code = ErrorCode.SESSION_MISMATCH


class ExpiredCommandError(DeviceInterlockError):
    """ARM or STIMULATE that reached the device later than its deadline after the host sent
    it (by then the host has given up on it), or whose age the device cannot judge."""

    code = ErrorCode.EXPIRED


class DeviceFaultError(FirmwareError):
    """The device reports an internal fault, or a NACK code this host does not know."""

    code = ErrorCode.DEVICE_FAULT


class AckTimeoutError(BridgeError):
    """No matching ACK/NACK arrived within the deadline; the bridge disarms."""


class TransportError(BridgeError):
    """The serial port or socket failed, or is closed."""


class BridgeClosedError(BridgeError, RuntimeError):
    """The bridge was closed (the daemon stopping, or its supervisor replacing a failed one):
    nothing was admitted, recorded or sent; a new bridge is needed."""


class AuditLogError(BridgeError):
    """A record could not be appended and fsync'd; nothing is sent without its record."""


_BY_CODE: dict[int, type[FirmwareError]] = {
    cls.code: cls
    for cls in (
        CrcMismatchError,
        BadVersionError,
        UnknownTypeError,
        OversizedFrameError,
        BadPayloadError,
        TruncatedFrameError,
        GarbageBytesError,
        UnexpectedTypeError,
        UnauthenticatedFrameError,
        NotArmedError,
        RefractoryError,
        MinuteBudgetError,
        DayBudgetError,
        ChargeDensityError,
        OutOfBoundsError,
        BadChannelsError,
        ElectrodeAreaError,
        DuplicateSequenceError,
        SessionMismatchError,
        ExpiredCommandError,
        DeviceFaultError,
    )
}


def error_for_code(code: int) -> type[FirmwareError]:
    """The exception class for a NACK's error byte; unknown codes are device faults."""
    return _BY_CODE.get(code, DeviceFaultError)


def describe_code(code: int) -> str:
    """``'NOT_ARMED (0x10)'``; a code this host does not know reads ``'UNKNOWN (0x42)'``."""
    try:
        name = ErrorCode(code).name
    except ValueError:
        name = "UNKNOWN"
    return f"{name} (0x{code:02X})"
