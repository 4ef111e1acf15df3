"""Payloads of each message type, and their encoding (see PROTOCOL.md, "Messages").

These are wire-level values: :class:`Stimulate` holds whatever the bytes said, valid or not,
so that the device can refuse a nonsensical train with a precise NACK code instead of a
generic "bad payload". Parsing checks only that the bytes fit the type's layout.

Times (``host_time_ms``) are the host's monotonic clock in whole milliseconds, wrapping at
2**32 (:func:`firmware_bridge.wire.clock_ms`): the device never compares them with its own
clock directly, only differences of them (PROTOCOL.md, "Sessions and deadlines").
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from firmware_bridge.errors import BadPayloadError
from firmware_bridge.wire import MAX_PAYLOAD, Frame, MessageType, encode_frame


class DisarmCause(IntEnum):
    """Why the device is disarmed, as reported in its STATUS reply."""

    BOOT = 0
    HOST = 1
    HEARTBEAT_TIMEOUT = 2
    FAULT = 3


@dataclass(frozen=True)
class Arm:
    """Host asks the device to open a new arm session (and to start its watchdog).

    ``host_time_ms`` is when the host sent it; the device opens the session, and says which in
    its ACK, only if the ARM is not older than its deadline.
    """

    host_time_ms: int


@dataclass(frozen=True)
class Disarm:
    """Host asks the device to close the session and refuse STIMULATE until the next ARM."""


@dataclass(frozen=True)
class Heartbeat:
    """Host is alive (the device disarms itself when these stop); ``host_time_ms`` is when
    the host sent it, which keeps the device's estimate of the host's clock fresh."""

    host_time_ms: int


@dataclass(frozen=True)
class StatusRequest:
    """Host asks for a STATUS reply."""


@dataclass(frozen=True)
class Stimulate:
    """One pulse train, as it travels: µA, µs, Hz, ms, cm² (float32) and electrode indices,
    plus the arm session it belongs to and when the host sent it."""

    channels: tuple[int, ...]
    amplitude_ua: int
    phase_width_us: int
    frequency_hz: int
    train_duration_ms: int
    electrode_area_cm2: float
    session: int
    host_time_ms: int


@dataclass(frozen=True)
class Ack:
    """Device executed the command of the same sequence number; ``armed`` is its state after,
    and ``session`` the arm session open after it (0 exactly when disarmed)."""

    acked_type: int
    armed: bool
    session: int


@dataclass(frozen=True)
class Nack:
    """Device refused the frame of the same sequence number, with an error code."""

    rejected_type: int
    code: int
    armed: bool


@dataclass(frozen=True)
class DeviceStatus:
    """The device's own view: armed state, why it last disarmed, counters and budgets left."""

    armed: bool
    disarm_cause: int
    trains_delivered: int
    minute_budget_left: int
    day_budget_left: int
    frames_ok: int
    frames_rejected: int
    uptime_ms: int


Message = Arm | Disarm | Heartbeat | StatusRequest | Stimulate | Ack | Nack | DeviceStatus

_STIMULATE = struct.Struct("<IIHHHHfH")  # session, host time, then the train
_CHANNEL = struct.Struct("<H")
_HOST_TIME = struct.Struct("<I")
_ACK = struct.Struct("<BBI")
_NACK = struct.Struct("<BBB")
_STATUS = struct.Struct("<BBIHHIII")

MAX_ELECTRODES = 360
"""Electrodes one STIMULATE can name: the whole 18x20 array."""

_EMPTY: dict[MessageType, type] = {
    MessageType.DISARM: Disarm,
    MessageType.STATUS_REQUEST: StatusRequest,
}
_TIMED: dict[MessageType, type] = {
    MessageType.ARM: Arm,
    MessageType.HEARTBEAT: Heartbeat,
}
_TYPE_OF: dict[type, MessageType] = {cls: t for t, cls in (_EMPTY | _TIMED).items()} | {
    Stimulate: MessageType.STIMULATE,
    Ack: MessageType.ACK,
    Nack: MessageType.NACK,
    DeviceStatus: MessageType.STATUS_REPLY,
}

_MAX_PAYLOAD: dict[MessageType, int] = {
    # A CRC-valid DISARM is obeyed whatever its payload, so its length may be anything.
    MessageType.DISARM: MAX_PAYLOAD,
    MessageType.STATUS_REQUEST: 0,
    MessageType.ARM: _HOST_TIME.size,
    MessageType.HEARTBEAT: _HOST_TIME.size,
    MessageType.STIMULATE: _STIMULATE.size + MAX_ELECTRODES * _CHANNEL.size,
    MessageType.ACK: _ACK.size,
    MessageType.NACK: _NACK.size,
    MessageType.STATUS_REPLY: _STATUS.size,
}


def max_payload(message_type: int) -> int | None:
    """The longest payload a frame of ``message_type`` can carry; None for an unknown type.

    The decoder rejects a header that declares more at once, without waiting for bytes that
    can only belong to other frames.
    """
    try:
        return _MAX_PAYLOAD[MessageType(message_type)]
    except ValueError:
        return None


def type_of(message: Message) -> MessageType:
    """The type byte a message travels under."""
    return _TYPE_OF[type(message)]


def encode_message(message: Message, sequence: int, *, key: bytes | None = None) -> bytes:
    """The frame carrying ``message`` under ``sequence`` (tagged with ``key`` on a keyed link).

    Raises
    ------
    ValueError
        If a field does not fit its wire type (e.g. an amplitude above 65535 µA).
    """
    try:
        payload = _payload(message)
    except struct.error as err:
        raise ValueError(f"{type(message).__name__} does not fit the wire format: {err}") from None
    return encode_frame(type_of(message), sequence, payload, key=key)


def _payload(message: Message) -> bytes:
    if isinstance(message, Arm | Heartbeat):
        return _HOST_TIME.pack(message.host_time_ms)
    if isinstance(message, Stimulate):
        head = _STIMULATE.pack(
            message.session,
            message.host_time_ms,
            message.amplitude_ua,
            message.phase_width_us,
            message.frequency_hz,
            message.train_duration_ms,
            message.electrode_area_cm2,
            len(message.channels),
        )
        return head + b"".join(_CHANNEL.pack(c) for c in message.channels)
    if isinstance(message, Ack):
        return _ACK.pack(message.acked_type, int(message.armed), message.session)
    if isinstance(message, Nack):
        return _NACK.pack(message.rejected_type, message.code, int(message.armed))
    if isinstance(message, DeviceStatus):
        return _STATUS.pack(
            int(message.armed),
            message.disarm_cause,
            message.trains_delivered,
            message.minute_budget_left,
            message.day_budget_left,
            message.frames_ok,
            message.frames_rejected,
            message.uptime_ms,
        )
    return b""


def parse_message(frame: Frame) -> Message:
    """The message a good frame carries.

    Raises
    ------
    BadPayloadError
        If the payload's length does not fit the type, a flag byte is neither 0 nor 1, or an
        ACK's session disagrees with its armed flag.
    """
    payload, kind = frame.payload, frame.message_type
    if kind in _EMPTY:
        _expect_length(frame, 0)
        return _EMPTY[kind]()
    if kind in _TIMED:
        _expect_length(frame, _HOST_TIME.size)
        return _TIMED[kind](*_HOST_TIME.unpack(payload))
    if kind == MessageType.STIMULATE:
        return _parse_stimulate(frame)
    if kind == MessageType.ACK:
        _expect_length(frame, _ACK.size)
        acked, armed, session = _ACK.unpack(payload)
        if _flag(frame, "armed", armed) != (session != 0):
            _bad(frame, f"ACK field 'session' must be 0 exactly when disarmed, got {session}")
        return Ack(acked, bool(armed), session)
    if kind == MessageType.NACK:
        _expect_length(frame, _NACK.size)
        rejected, code, armed = _NACK.unpack(payload)
        return Nack(rejected, code, _flag(frame, "armed", armed))
    _expect_length(frame, _STATUS.size)
    armed, cause, *counters = _STATUS.unpack(payload)
    return DeviceStatus(_flag(frame, "armed", armed), cause, *counters)


def _parse_stimulate(frame: Frame) -> Stimulate:
    payload = frame.payload
    if len(payload) < _STIMULATE.size:
        _bad(
            frame, f"STIMULATE payload must be at least {_STIMULATE.size} bytes, got {len(payload)}"
        )
    session, host_time, *train, count = _STIMULATE.unpack_from(payload, 0)
    _expect_length(frame, _STIMULATE.size + count * _CHANNEL.size)
    channels = tuple(c for (c,) in _CHANNEL.iter_unpack(payload[_STIMULATE.size :]))
    return Stimulate(channels, *train, session, host_time)  # train: amplitude .. area


def _expect_length(frame: Frame, length: int) -> None:
    if len(frame.payload) != length:
        _bad(
            frame,
            f"{frame.message_type.name} payload must be {length} bytes, got {len(frame.payload)}",
        )


def _flag(frame: Frame, name: str, value: int) -> bool:
    if value not in (0, 1):
        _bad(frame, f"{frame.message_type.name} field {name!r} must be 0 or 1, got {value}")
    return bool(value)


def _bad(frame: Frame, problem: str) -> None:
    shown = frame.payload[:16].hex() + ("..." if len(frame.payload) > 16 else "")
    raise BadPayloadError(
        f"{problem} (payload {shown or 'empty'})",
        sequence=frame.sequence,
        message_type=int(frame.message_type),
    )
