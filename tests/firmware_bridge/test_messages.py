"""Every message type survives encode -> frame -> decode unchanged; payloads that do not fit
their type are refused with BAD_PAYLOAD; each type's maximum length is what its layout allows."""

from __future__ import annotations

import struct

import pytest

from firmware_bridge.errors import BadPayloadError, ErrorCode
from firmware_bridge.frame_decoder import FrameDecoder
from firmware_bridge.messages import (
    Ack,
    Arm,
    DeviceStatus,
    Disarm,
    Heartbeat,
    Nack,
    StatusRequest,
    Stimulate,
    encode_message,
    max_payload,
    parse_message,
    type_of,
)
from firmware_bridge.wire import MAX_PAYLOAD, Frame, MessageType, encode_frame

EVERY_MESSAGE = [
    Arm(host_time_ms=0),
    Arm(host_time_ms=2**32 - 1),
    Disarm(),
    Heartbeat(host_time_ms=123_456),
    StatusRequest(),
    Stimulate((0, 17, 359), 50, 100, 130, 200, 2.0**-12, session=7, host_time_ms=99),
    Stimulate(tuple(range(360)), 65535, 65535, 65535, 65535, 1.5, 2**32 - 1, 2**32 - 1),
    Ack(MessageType.STIMULATE, True, 0xDEADBEEF),
    Ack(MessageType.DISARM, False, 0),
    Nack(MessageType.STIMULATE, ErrorCode.CHARGE_DENSITY, False),
    DeviceStatus(True, 2, 12, 5, 600, 2**32 - 1, 7, 123456),
]


@pytest.mark.parametrize("message", EVERY_MESSAGE, ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("datagram", [True, False])
def test_every_message_type_round_trips(message, datagram):
    data = encode_message(message, 0xDEADBEEF)
    (frame,) = FrameDecoder(datagram=datagram).feed(data)
    assert frame == Frame(type_of(message), 0xDEADBEEF, frame.payload)
    assert parse_message(frame) == message


def test_every_type_has_a_message():
    assert {type_of(m) for m in EVERY_MESSAGE} == set(MessageType)


def test_each_types_maximum_payload_is_the_longest_message_it_can_carry():
    longest = {type_of(m): len(encode_message(m, 1)) - 14 for m in EVERY_MESSAGE}
    for kind in MessageType:
        expected = MAX_PAYLOAD if kind == MessageType.DISARM else longest[kind]
        assert max_payload(kind) == expected, kind.name
    assert max_payload(MessageType.STIMULATE) == MAX_PAYLOAD == 22 + 2 * 360
    assert max_payload(0x42) is None


@pytest.mark.parametrize(
    "message",
    [
        Stimulate((1,), 70_000, 100, 100, 100, 1e-4, 1, 1),
        Stimulate((1,), 50, 100, 100, 100, 1e-4, 2**32, 1),
        Heartbeat(host_time_ms=-1),
    ],
)
def test_fields_that_do_not_fit_the_wire_are_refused_before_sending(message):
    with pytest.raises(ValueError, match=f"{type(message).__name__} does not fit the wire format"):
        encode_message(message, 1)


@pytest.mark.parametrize(
    ("kind", "payload", "message"),
    [
        (MessageType.ARM, b"\x00", r"ARM payload must be 4 bytes, got 1"),
        (MessageType.HEARTBEAT, b"", r"HEARTBEAT payload must be 4 bytes, got 0"),
        (MessageType.ACK, b"\x03", r"ACK payload must be 6 bytes, got 1"),
        (MessageType.ACK, b"\x03\x02" + bytes(4), r"ACK field 'armed' must be 0 or 1, got 2"),
        (MessageType.ACK, b"\x03\x01" + bytes(4), r"'session' must be 0 exactly when disarmed"),
        (MessageType.ACK, b"\x03\x00\x01\x00\x00\x00", r"'session' must be 0 exactly when"),
        (MessageType.NACK, b"\x03\x10\x07", r"NACK field 'armed' must be 0 or 1, got 7"),
        (MessageType.STATUS_REPLY, b"\x00" * 21, r"STATUS_REPLY payload must be 22 bytes"),
        (
            MessageType.STIMULATE,
            b"\x00" * 21,
            r"STIMULATE payload must be at least 22 bytes, got 21",
        ),
        (
            MessageType.STIMULATE,
            struct.pack("<IIHHHHfH", 7, 8, 1, 1, 1, 1, 1.0, 3) + b"\x00\x00",
            r"STIMULATE payload must be 28 bytes, got 24",
        ),
    ],
)
def test_payloads_that_do_not_fit_their_type_are_bad_payload(kind, payload, message):
    (frame,) = FrameDecoder().feed(encode_frame(kind, 42, payload))
    with pytest.raises(BadPayloadError, match=message) as raised:
        parse_message(frame)
    assert raised.value.code == ErrorCode.BAD_PAYLOAD
    assert (raised.value.sequence, raised.value.message_type) == (42, kind)


def test_stimulate_keeps_nonsense_values_for_the_device_to_refuse_precisely():
    nonsense = Stimulate((400, 400), 0, 0, 0, 0, float("nan"), 0, 0)
    (frame,) = FrameDecoder().feed(encode_message(nonsense, 5))
    parsed = parse_message(frame)
    assert parsed.channels == (400, 400) and parsed.amplitude_ua == 0
    assert parsed.electrode_area_cm2 != parsed.electrode_area_cm2  # NaN survives to be refused
