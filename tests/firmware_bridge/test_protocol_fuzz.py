"""The protocol fuzz bench, small enough for CI: thousands of random, truncated, bit-flipped,
oversized and hostile frames against the armed emulator; never a crash, never a pulse, every
datagram answered with a NACK or a logged error, every interleaved control still served. Plus
a hypothesis fuzz of the decoder and payload parser themselves."""

from __future__ import annotations

import contextlib

from hypothesis import given, settings
from hypothesis import strategies as st

from bench.protocol_fuzz import CATEGORIES, format_report, run_fuzz
from firmware_bridge._messages import parse_message
from firmware_bridge._wire import MAX_FRAME, SYNC, Frame, encode_frame
from firmware_bridge.errors import BadPayloadError, FrameError
from firmware_bridge.frame_decoder import FrameDecoder


def test_a_few_thousand_malformed_frames_neither_crash_nor_pulse():
    datagram, stream = run_fuzz(3000, seed=1234, stream_cases=1500)
    assert datagram.ok and stream.ok, format_report([datagram, stream])
    assert datagram.cases == 3000 and stream.cases == 1500
    assert set(datagram.by_category) == set(CATEGORIES)
    assert all(sum(c.values()) == 500 for c in datagram.by_category.values())
    assert datagram.nacked + datagram.logged_only == datagram.cases
    assert datagram.controls_sent == 3 and stream.controls_sent == 15
    assert "| datagram (UDP) | 3,000 |" in format_report([datagram, stream])


chunks = st.lists(
    st.one_of(st.binary(max_size=300), st.binary(max_size=40).map(lambda b: SYNC + b"\x01" + b)),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(chunks=chunks, datagram=st.booleans())
def test_the_decoder_never_raises_and_never_hoards(chunks, datagram):
    decoder = FrameDecoder(datagram=datagram)
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
