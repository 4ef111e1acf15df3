"""The protocol fuzz bench, small enough for CI: thousands of random, truncated, bit-flipped,
oversized and hostile frames against the armed emulator; never a crash, never a pulse, every
datagram answered with a NACK or a logged error, every interleaved control still served. Plus
a hypothesis fuzz of the decoder and payload parser themselves, and of the round trip: every
frame that parses re-encodes to the very same bytes."""

from __future__ import annotations

import contextlib
import math
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.benchmarks import protocol_fuzz
from bench.benchmarks.protocol_fuzz import CATEGORIES, format_report, reassembled_trains, run_fuzz
from firmware_bridge.config import BridgeSettings
from firmware_bridge.emulator import FirmwareEmulator
from firmware_bridge.errors import BadPayloadError, FrameError, UnauthenticatedFrameError
from firmware_bridge.frame_decoder import FrameDecoder
from firmware_bridge.messages import Arm, Heartbeat, Stimulate, encode_message, parse_message
from firmware_bridge.wire import (
    CRC_SIZE,
    HOST_COMMANDS,
    MAX_FRAME,
    SYNC,
    TAG_SIZE,
    VERSION,
    Frame,
    MessageType,
    crc32,
    encode_frame,
)


def test_a_few_thousand_malformed_frames_neither_crash_nor_pulse():
    datagram, stream = run_fuzz(3000, seed=1234, stream_cases=1500)
    assert datagram.ok and stream.ok, format_report([datagram, stream])
    assert datagram.cases == 3000 and stream.cases == 1500
    assert set(datagram.by_category) == set(CATEGORIES)
    assert all(sum(c.values()) == 500 for c in datagram.by_category.values())
    assert datagram.nacked + datagram.logged_only == datagram.cases
    assert datagram.controls_sent == 3 and stream.controls_sent == 15
    assert "| datagram (UDP) | 3,000 |" in format_report([datagram, stream])


def test_a_train_cut_short_and_completed_by_the_next_bytes_is_not_a_pulse_from_fuzz():
    """A byte stream has no boundaries: a train cut one byte short, followed by a case that
    starts with that byte, is the intact train on the wire, and the device delivers it."""
    device = FirmwareEmulator(BridgeSettings(transport="tcp"), protocol_fuzz._DEVICE)
    device.process(encode_message(Arm(0), 1) + encode_message(Heartbeat(0), 2))
    train = encode_message(Stimulate((3, 4), 10, 100, 50, 200, 2.0**-12, device.session, 0), 3)
    cut_short, next_case = train[:-1], train[-1:] + bytes(7)
    device.process(cut_short + next_case)
    assert len(device.pulses) == 1
    assert reassembled_trains(device.pulses, cut_short + next_case, [train]) == 1
    assert reassembled_trains(device.pulses, cut_short + bytes(8), [train]) == 0
    assert reassembled_trains(device.pulses, cut_short + next_case, []) == 0


def test_the_stream_run_that_failed_ci_counts_its_reassembled_train_apart(monkeypatch):
    """The emulator's arm sessions are random, so a train's CRC, and whether the next case's
    first byte completes it, change from run to run: about 1 run in 150 delivered one."""
    monkeypatch.setattr("firmware_bridge.emulator.secrets.randbits", random.Random(88).getrandbits)
    stream = protocol_fuzz._stream(1500, 1235)
    assert (stream.reassembled_trains, stream.fuzz_pulses) == (1, 0)
    assert stream.ok
    assert "1 train(s) cut short were completed" in format_report([stream])


chunks = st.lists(
    st.one_of(
        st.binary(max_size=300), st.binary(max_size=40).map(lambda b: SYNC + bytes([VERSION]) + b)
    ),
    max_size=30,
)


KEYS = st.one_of(st.none(), st.binary(min_size=16, max_size=64))
"""No key (an unkeyed link), or a link key of any length the key file allows."""


@settings(max_examples=300, deadline=None)
@given(chunks=chunks, datagram=st.booleans(), key=KEYS)
def test_the_decoder_never_raises_and_never_hoards(chunks, datagram, key):
    decoder = FrameDecoder(datagram=datagram, key=key)
    for chunk in chunks:
        items = decoder.feed(chunk)
        assert all(isinstance(i, Frame | FrameError) for i in items)
        assert decoder.pending < MAX_FRAME
        for frame in (i for i in items if isinstance(i, Frame)):
            with contextlib.suppress(BadPayloadError):
                parse_message(frame)
    decoder.flush()
    assert decoder.pending == 0


@settings(max_examples=300, deadline=None)
@given(kind=st.integers(0, 255), payload=st.binary(max_size=100))
def test_any_crc_valid_frame_parses_or_is_a_bad_payload(kind, payload):
    (item,) = FrameDecoder(datagram=True).feed(encode_frame(kind, 7, payload))
    if isinstance(item, Frame):
        try:
            parse_message(item)
        except BadPayloadError as err:
            assert err.sequence == 7


def _u32(nonzero: bool = False) -> st.SearchStrategy[bytes]:
    return st.integers(1 if nonzero else 0, 2**32 - 1).map(lambda v: struct.pack("<I", v))


_FLAG = st.sampled_from([b"\x00", b"\x01"])
_ACK = st.tuples(st.binary(min_size=1, max_size=1), _FLAG, _u32(nonzero=True)).map(
    lambda f: f[0] + f[1] + (f[2] if f[1] == b"\x01" else bytes(4))
)
_STIMULATE = st.tuples(st.binary(min_size=20, max_size=20), st.integers(0, 360)).flatmap(
    lambda f: st.binary(min_size=2 * f[1], max_size=2 * f[1]).map(
        lambda channels: f[0] + struct.pack("<H", f[1]) + channels
    )
)
PAYLOADS_THAT_FIT = {
    MessageType.ARM: st.binary(min_size=4, max_size=4),
    MessageType.DISARM: st.just(b""),
    MessageType.STIMULATE: _STIMULATE,
    MessageType.HEARTBEAT: st.binary(min_size=4, max_size=4),
    MessageType.STATUS_REQUEST: st.just(b""),
    MessageType.ACK: _ACK,
    MessageType.NACK: st.tuples(st.binary(min_size=2, max_size=2), _FLAG).map(b"".join),
    MessageType.STATUS_REPLY: st.tuples(_FLAG, st.binary(min_size=21, max_size=21)).map(b"".join),
}
"""Any bytes that fit each type's layout: every field of every type, the new session and
host-time fields included, takes every value its width allows."""


def test_every_type_is_fuzzed_for_the_round_trip():
    assert set(PAYLOADS_THAT_FIT) == set(MessageType)


@pytest.mark.parametrize("kind", list(MessageType), ids=lambda k: k.name)
@settings(max_examples=150, deadline=None)
@given(data=st.data(), sequence=st.integers(0, 2**32 - 1), datagram=st.booleans(), key=KEYS)
def test_a_frame_that_parses_re_encodes_to_the_same_bytes(kind, data, sequence, datagram, key):
    sent = encode_frame(
        kind, sequence, data.draw(PAYLOADS_THAT_FIT[kind], label="payload"), key=key
    )
    (frame,) = FrameDecoder(datagram=datagram, key=key).feed(sent)
    message = parse_message(frame)
    again = encode_message(message, sequence, key=key)
    if isinstance(message, Stimulate) and math.isnan(message.electrode_area_cm2):
        # The one exception: Python makes a signalling-NaN float32 quiet on its way through a
        # float, so the area's quiet bit (payload byte 18, bit 6) may come back set. The device
        # refuses a NaN area whatever its bits.
        end = len(sent) - CRC_SIZE - (TAG_SIZE if key is not None else 0)
        quieted = bytearray(sent[:end])
        quieted[10 + 18] |= 0x40
        assert again[:end] == bytes(quieted)
        return
    assert again == sent


@pytest.mark.parametrize("kind", sorted(HOST_COMMANDS), ids=lambda k: k.name)
@settings(max_examples=100, deadline=None)
@given(
    data=st.data(),
    key=st.binary(min_size=16, max_size=64),
    forger_key=KEYS,
    datagram=st.booleans(),
)
def test_no_frame_a_forger_can_build_gets_through_a_keyed_decoder(
    kind, data, key, forger_key, datagram
):
    """Whatever the forger does short of holding the key: send a command unkeyed or under
    another key, or take a genuine keyed frame, flip any bit of header, payload or tag and
    fix the CRC (anyone can compute it), nothing decodes to a frame."""
    payload = data.draw(PAYLOADS_THAT_FIT[kind], label="payload")
    # HMAC pads keys of up to 64 bytes with zeros: keys that differ only in trailing zeros
    # are one key (hypothesis found that), so those count as the forger holding the key.
    holds_key = forger_key is not None and forger_key.rstrip(b"\0") == key.rstrip(b"\0")
    if not holds_key:
        forged = encode_frame(kind, 9, payload, key=forger_key)
    else:
        genuine = bytearray(encode_frame(kind, 9, payload, key=key))
        bit = data.draw(st.integers(2 * 8, (len(genuine) - CRC_SIZE) * 8 - 1), label="bit")
        genuine[bit // 8] ^= 1 << (bit % 8)
        body = bytes(genuine[len(SYNC) : -CRC_SIZE])
        forged = SYNC + body + crc32(body).to_bytes(4, "little")
    out = FrameDecoder(datagram=datagram, key=key).feed(forged)
    assert not any(isinstance(item, Frame) for item in out), out
    if not holds_key and datagram:
        assert [type(item) for item in out] == [UnauthenticatedFrameError]
