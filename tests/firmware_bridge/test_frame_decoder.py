"""Framing: the decoder returns frames that are whole and intact, and names the reason for
everything else: truncated, bit-flipped, garbage-prefixed, oversized, wrong version, unknown
type. It never raises and never buffers more than one frame."""

from __future__ import annotations

import random

import pytest

from firmware_bridge._messages import Heartbeat, StatusRequest, Stimulate, encode_message
from firmware_bridge._wire import (
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
    assert frame[:2] == SYNC and frame[2] == 2 and frame[3] == 0x04
    assert frame[4:8] == bytes([4, 3, 2, 1]) and frame[8:10] == b"\x04\x00"
    assert frame[10:14] == bytes([0x0D, 0x0C, 0x0B, 0x0A])
    assert int.from_bytes(frame[14:18], "little") == crc32(frame[2:14])
    stimulate = encode_message(Stimulate((7,), 40, 100, 130, 200, 0.5, 0xAABBCCDD, 9), 1)
    assert stimulate[10:14] == bytes([0xDD, 0xCC, 0xBB, 0xAA]) and stimulate[14] == 9
    assert stimulate[18:20] == (40).to_bytes(2, "little")
    assert stimulate[30:34] == (1).to_bytes(2, "little") + (7).to_bytes(2, "little")


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
        assert "payload length must be at most 1024 bytes, got 1025" in str(item)
        assert item.sequence == 9


@pytest.mark.parametrize("version", [0, 1, 3, 255])
def test_a_wrong_version_is_rejected_with_its_sequence(version):
    frame = encode_raw(MessageType.HEARTBEAT, 5, bytes(4), version=version)
    (item,) = FrameDecoder(datagram=True).feed(frame)
    assert isinstance(item, BadVersionError)
    assert str(item) == f"protocol version must be 2, got {version}"
    assert (item.sequence, item.message_type) == (5, MessageType.HEARTBEAT)


def test_an_unknown_type_is_rejected_after_its_crc_checks_out():
    (item,) = FrameDecoder(datagram=True).feed(encode_frame(0x42, 6, b"xy"))
    assert isinstance(item, UnknownTypeError)
    assert "type byte 0x42 names no message" in str(item)


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
    fake = SYNC + bytes([2, 0x04]) + (1).to_bytes(4, "little") + (60_000).to_bytes(2, "little")
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
