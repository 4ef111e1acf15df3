"""Framing: the decoder returns frames that are whole and intact, and names the reason for
everything else: truncated, bit-flipped, garbage-prefixed, oversized, wrong version, unknown
type. It never raises, never buffers more than one frame, drops what a dead connection left,
and a corrupted header costs only the frames it overlaps."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.errors import (
    BadVersionError,
    CrcMismatchError,
    FrameError,
    GarbageBytesError,
    OversizedFrameError,
    TruncatedFrameError,
    UnknownTypeError,
)
from firmware_bridge.frame_decoder import FrameDecoder
from firmware_bridge.messages import (
    Ack,
    Arm,
    Disarm,
    Heartbeat,
    Nack,
    StatusRequest,
    Stimulate,
    encode_message,
)
from firmware_bridge.wire import (
    MAX_FRAME,
    MAX_PAYLOAD,
    SYNC,
    VERSION,
    Frame,
    MessageType,
    crc32,
    encode_frame,
    encode_raw,
)

STIM = encode_message(Stimulate((3, 4, 5), 40, 100, 100, 100, 2.5e-4, 0x1234, 5000), 77)
BEAT = encode_message(Heartbeat(5001), 78)


def _frames(items):
    return [i for i in items if isinstance(i, Frame)]


def _errors(items):
    return [type(i) for i in items if isinstance(i, FrameError)]


def test_crc_is_the_standard_crc32():
    assert crc32(b"123456789") == 0xCBF43926


def test_layout_matches_protocol_md():
    frame = encode_message(Heartbeat(0x0A0B0C0D), 0x01020304)
    assert frame[:2] == SYNC and frame[2] == 3 and frame[3] == 0x04
    assert frame[4:8] == bytes([4, 3, 2, 1]) and frame[8:10] == b"\x04\x00"
    assert frame[10:14] == bytes([0x0D, 0x0C, 0x0B, 0x0A])
    assert int.from_bytes(frame[14:18], "little") == crc32(frame[2:14])
    stimulate = encode_message(Stimulate((7,), 40, 100, 130, 200, 0.5, 0xAABBCCDD, 9), 1)
    assert stimulate[10:14] == bytes([0xDD, 0xCC, 0xBB, 0xAA]) and stimulate[14] == 9
    assert stimulate[18:20] == (40).to_bytes(2, "little")
    assert stimulate[30:34] == (1).to_bytes(2, "little") + (7).to_bytes(2, "little")
    # A keyed link: 16 bytes of HMAC-SHA256 over version..payload, then the CRC over it all.
    key = bytes(range(32))
    keyed = encode_message(Heartbeat(0x0A0B0C0D), 0x01020304, key=key)
    assert keyed[:14] == frame[:14] and len(keyed) == len(frame) + 16
    assert keyed[14:30] == hmac.new(key, frame[2:14], hashlib.sha256).digest()[:16]
    assert int.from_bytes(keyed[30:34], "little") == crc32(keyed[2:30])


# ------------------------------------------------------------------ datagram mode
@pytest.mark.parametrize("cut", [1, 2, 9, 10, 11, len(STIM) - 1])
def test_a_truncated_datagram_is_rejected(cut):
    (item,) = FrameDecoder(datagram=True).feed(STIM[:cut])
    assert isinstance(item, TruncatedFrameError)
    # Once the header is in, the sequence is known and the device can NACK it.
    assert item.sequence == (77 if cut >= 10 else None)


def test_every_single_bit_flip_of_a_datagram_is_rejected():
    decoder = FrameDecoder(datagram=True)
    for bit in range(len(STIM) * 8):
        flipped = bytearray(STIM)
        flipped[bit // 8] ^= 1 << (bit % 8)
        (item,) = decoder.feed(bytes(flipped))
        assert isinstance(item, FrameError), f"bit {bit} flipped went unnoticed"


def test_a_garbage_prefixed_datagram_is_rejected_whole():
    (item,) = FrameDecoder(datagram=True).feed(b"\x00junk" + STIM)
    assert isinstance(item, GarbageBytesError)


def test_trailing_bytes_make_a_datagram_oversized():
    (item,) = FrameDecoder(datagram=True).feed(STIM + b"\x00")
    assert isinstance(item, OversizedFrameError)
    assert "carries 1 bytes after its" in str(item)


def test_a_declared_length_over_the_maximum_is_rejected_without_reading_it():
    frame = encode_raw(MessageType.STIMULATE, 9, b"", version=VERSION, length=MAX_PAYLOAD + 1)
    for datagram in (True, False):
        item = FrameDecoder(datagram=datagram).feed(frame)[0]
        assert isinstance(item, OversizedFrameError)
        assert "STIMULATE payload length must be at most 742 bytes, got 743" in str(item)
        assert item.sequence == 9


@pytest.mark.parametrize("version", [0, 1, 2, 4, 255])
def test_a_wrong_version_is_rejected_with_its_sequence(version):
    frame = encode_raw(MessageType.HEARTBEAT, 5, bytes(4), version=version)
    (item,) = FrameDecoder(datagram=True).feed(frame)
    assert isinstance(item, BadVersionError)
    assert str(item) == f"protocol version must be 3, got {version}"
    assert (item.sequence, item.message_type) == (5, MessageType.HEARTBEAT)


def test_an_unknown_type_is_rejected_as_soon_as_the_header_is_in():
    frame = encode_frame(0x42, 6, b"xy")
    for datagram, data in ((True, frame), (False, frame[:10])):
        item = FrameDecoder(datagram=datagram).feed(data)[0]
        assert isinstance(item, UnknownTypeError)
        assert "type byte 0x42 names no message" in str(item) and item.sequence == 6


def test_a_bad_crc_is_rejected():
    bad = STIM[:-4] + bytes(4)
    (item,) = FrameDecoder(datagram=True).feed(bad)
    assert isinstance(item, CrcMismatchError)


# ------------------------------------------------------------------ stream mode
def test_frames_split_at_every_byte_boundary_are_reassembled():
    decoder = FrameDecoder()
    out = []
    for byte in STIM + BEAT:
        out += decoder.feed(bytes([byte]))
    assert [f.sequence for f in _frames(out)] == [77, 78]
    assert not _errors(out) and decoder.pending == 0


def test_garbage_before_a_frame_is_skipped_and_reported():
    out = FrameDecoder().feed(b"\x00\x01\xa5\x02garbage" + STIM)
    assert [f.sequence for f in _frames(out)] == [77]
    assert _errors(out) == [GarbageBytesError]


def test_a_truncated_frame_followed_by_a_good_one_costs_only_the_truncated_one():
    out = FrameDecoder().feed(STIM[:25] + BEAT + STIM)
    # The cut frame swallows the heartbeat while its CRC is pending; after the CRC fails the
    # search restarts one byte in and finds both genuine frames.
    assert [f.sequence for f in _frames(out)] == [78, 77]
    assert CrcMismatchError in _errors(out)


def test_a_bit_flipped_frame_is_rejected_and_the_next_one_decoded():
    flipped = bytearray(STIM)
    flipped[20] ^= 0x10
    out = FrameDecoder().feed(bytes(flipped) + BEAT)
    assert [f.sequence for f in _frames(out)] == [78]
    assert _errors(out)[0] is CrcMismatchError


def test_a_false_sync_with_a_huge_length_does_not_delay_resync():
    fake = (
        SYNC + bytes([VERSION, 0x04]) + (1).to_bytes(4, "little") + (60_000).to_bytes(2, "little")
    )
    out = FrameDecoder().feed(fake + BEAT)
    assert _errors(out) == [OversizedFrameError, GarbageBytesError]
    assert [f.sequence for f in _frames(out)] == [78]


def test_flush_reports_a_stream_that_ends_inside_a_frame():
    decoder = FrameDecoder()
    assert decoder.feed(STIM[:20]) == []
    (item,) = decoder.flush()
    assert isinstance(item, TruncatedFrameError) and item.sequence == 77
    assert decoder.pending == 0 and decoder.flush() == []


def test_the_buffer_never_holds_more_than_one_frame_whatever_arrives():
    rng = random.Random(3)
    decoder = FrameDecoder()
    for _ in range(300):
        chunk = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 400)))
        if rng.random() < 0.3:
            chunk += SYNC + bytes([2, 3]) + rng.randbytes(6)
        decoder.feed(chunk)
        assert decoder.pending < MAX_FRAME


def test_a_status_request_survives_random_noise_around_it():
    rng = random.Random(11)
    request = encode_message(StatusRequest(), 1234)
    stream = rng.randbytes(3000) + request + rng.randbytes(3000)
    out = []
    decoder = FrameDecoder()
    for start in range(0, len(stream), 97):
        out += decoder.feed(stream[start : start + 97])
    out += decoder.flush()
    assert 1234 in [f.sequence for f in _frames(out)]


def test_a_flipped_length_bit_costs_only_its_own_frame():
    corrupted = bytearray(STIM)
    corrupted[9] ^= 0x02  # length 512 bytes longer: still within the STIMULATE maximum
    decoder = FrameDecoder()
    out = decoder.feed(bytes(corrupted))
    assert _frames(out) == []
    out = decoder.feed(BEAT)  # the next frame is decoded as soon as its bytes are in
    assert [f.sequence for f in _frames(out)] == [78], _errors(out)
    assert decoder.pending == 0


def test_a_length_above_its_types_maximum_is_rejected_as_soon_as_the_header_is_in():
    header = encode_raw(MessageType.HEARTBEAT, 5, b"", version=VERSION, length=100)[:10]
    decoder = FrameDecoder()
    assert _errors(decoder.feed(header)) == [OversizedFrameError, GarbageBytesError]
    assert decoder.pending == 0


def test_bytes_a_dead_connection_left_are_dropped_when_a_new_one_starts():
    decoder = FrameDecoder()
    assert decoder.feed(STIM[:20], connection=1) == []
    assert decoder.feed(STIM[20:25], connection=1) == []  # the same connection: kept
    out = decoder.feed(BEAT, connection=2)
    (dropped, frame) = out
    assert isinstance(dropped, TruncatedFrameError) and dropped.sequence is None
    assert "dropped 25 bytes that a previous connection left" in str(dropped)
    assert frame.sequence == 78 and decoder.pending == 0


def test_a_sync_word_inside_a_payload_does_not_cut_its_frame_short():
    # The session's bytes read A5 5A 02 04: a HEARTBEAT header, whose "frame" fits inside this
    # one's payload but fails its CRC. Fed a byte at a time, the outer frame must survive.
    session = int.from_bytes(SYNC + bytes([2, MessageType.HEARTBEAT]), "little")
    outer = encode_message(Stimulate((1, 2), 4, 100, 100, 100, 2.5e-4, session, 0), 41)
    assert outer.find(SYNC, 1) == 10
    decoder = FrameDecoder()
    out = []
    for byte in outer:
        out += decoder.feed(bytes([byte]))
    assert [f.sequence for f in _frames(out)] == [41] and not _errors(out)


messages = st.one_of(
    st.builds(Heartbeat, st.integers(0, 2**32 - 1)),
    st.builds(Arm, st.integers(0, 2**32 - 1)),
    st.sampled_from([Disarm(), StatusRequest()]),
    st.builds(
        Stimulate,
        st.lists(st.integers(0, 359), max_size=40).map(tuple),
        st.integers(0, 65535),
        st.integers(0, 65535),
        st.integers(0, 65535),
        st.integers(0, 65535),
        st.floats(width=32, allow_nan=False),
        st.integers(0, 2**32 - 1),
        st.integers(0, 2**32 - 1),
    ),
    st.builds(Ack, st.integers(0, 255), st.just(True), st.integers(1, 2**32 - 1)),
    st.builds(Nack, st.integers(0, 255), st.integers(0, 255), st.booleans()),
)


@settings(max_examples=300, deadline=None)
@given(
    sent=st.lists(messages, min_size=2, max_size=8),
    victim_and_bit=st.data(),
    chunk_sizes=st.lists(st.integers(1, 80), min_size=1, max_size=20),
)
def test_one_flipped_bit_costs_only_its_own_frame(sent, victim_and_bit, chunk_sizes):
    """Whatever bit of whichever frame flips (its length field most of all), every other frame
    is decoded as soon as its last byte has been fed."""
    frames = [encode_message(m, sequence) for sequence, m in enumerate(sent)]
    victim = victim_and_bit.draw(st.integers(0, len(frames) - 1), label="victim")
    bits = len(frames[victim]) * 8
    bit = victim_and_bit.draw(st.one_of(st.integers(64, 79), st.integers(0, bits - 1)))
    corrupted = bytearray(frames[victim])
    corrupted[bit // 8] ^= 1 << (bit % 8)
    frames[victim] = bytes(corrupted)
    ends = list(itertools.accumulate(len(f) for f in frames))
    stream = b"".join(frames)
    decoder = FrameDecoder()
    decoded: list[int] = []
    fed, sizes = 0, itertools.cycle(chunk_sizes)
    while fed < len(stream):
        chunk = stream[fed : fed + next(sizes)]
        fed += len(chunk)
        decoded += [f.sequence for f in _frames(decoder.feed(chunk))]
        due = [i for i in range(len(frames)) if i != victim and ends[i] <= fed]
        assert decoded == due, f"after {fed} of {len(stream)} bytes"
        assert decoder.pending < MAX_FRAME
