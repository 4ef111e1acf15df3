"""Another tool's stimulation markers, read over real LSL on loopback, blank the ring's frames of
each train it announces: those written before the marker arrived and those written after."""

from __future__ import annotations

import logging
import math
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import numpy as np
import pylsl
import pytest
from prometheus_client import CollectorRegistry

from service.core.grid import DEFAULT_GRID, NOMINAL_RATE_HZ
from service.core.stimulation_markers import (
    DEFAULT_MARKER_UNHEARD_S,
    LONGEST_BLANK_KEY,
    MAX_ANNOUNCEMENT_CHARS,
    AnnouncedTrain,
    StimulationMarker,
)
from service.ingest import stimulation_marker_inlet
from service.ingest.ring_buffer import RingBuffer
from service.ingest.stimulation_marker_inlet import (
    _FORGET_AFTER_S,
    UNHEARD,
    StimulationMarkerInlet,
    marker_metrics,
)
from service.loop.marker_outlet import VERDICT_MARGIN_S, MarkerOutlet, longest_marker_blank_s
from tests.service._loop_harness import wait_until

PERIOD = 1 / NOMINAL_RATE_HZ
FRAMES = 200


def _outlet(name: str, channel_format: int = pylsl.cf_string) -> pylsl.StreamOutlet:
    info = pylsl.StreamInfo(name, "Markers", 1, pylsl.IRREGULAR_RATE, channel_format, name)
    return pylsl.StreamOutlet(info)


@pytest.fixture
def name() -> str:
    """A stream name no other test (in this process or another worker) uses."""
    return f"lab-stimulator-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def ring_and_start() -> tuple[RingBuffer, float]:
    """A ring of 200 frames, each holding its own index, stamped on this host's LSL clock a
    second and more ago; and the first frame's stamp."""
    ring = RingBuffer(1000, DEFAULT_GRID)
    start = pylsl.local_clock() - 2.0
    _write(ring, start, 0, FRAMES)
    return ring, start


def _write(ring: RingBuffer, start: float, first: int, end: int) -> None:
    index = np.arange(first, end)
    frames = np.broadcast_to(index[:, None, None], (index.size, *DEFAULT_GRID.shape))
    ring.write(
        np.ascontiguousarray(frames, dtype=np.float32),
        start + index * PERIOD,
        np.ones(index.size, dtype=np.bool_),
        arrival=pylsl.local_clock(),
    )


@pytest.fixture
def inlet_of(
    ring_and_start: tuple[RingBuffer, float],
) -> Iterator[callable]:
    started: list[StimulationMarkerInlet] = []

    def make(
        name: str,
        blank_frames: int,
        registry: CollectorRegistry | None = None,
        announce=None,
        ignore_source_id: str | None = None,
        unheard_s: float = DEFAULT_MARKER_UNHEARD_S,
    ):
        inlet = StimulationMarkerInlet(
            name,
            ring_and_start[0],
            blank_s=blank_frames * PERIOD,
            metrics=marker_metrics(registry) if registry is not None else None,
            announce=announce,
            **({"ignore_source_id": ignore_source_id} if ignore_source_id else {}),
            unheard_s=unheard_s,
        )
        started.append(inlet.start())
        return inlet

    yield make
    for inlet in started:
        inlet.stop()


def _blanked(ring: RingBuffer, count: int) -> np.ndarray:
    """Indices of the frames marked missing among the newest ``count``."""
    return np.flatnonzero(~ring.latest(count).valid)


def test_a_marker_blanks_its_train_s_frames_written_before_and_after_it(
    name, ring_and_start, inlet_of
):
    ring, start = ring_and_start
    outlet = _outlet(name)
    registry = CollectorRegistry()
    inlet = inlet_of(name, blank_frames=60, registry=registry)
    wait_until(lambda: inlet.connected, 30, f"the inlet to find {name}")
    assert inlet.not_connected_reason() is None
    # Half a period before frame 150: the train runs from 150 to 209; 50 frames are written.
    outlet.push_sample(["train"], start + 149.5 * PERIOD)
    wait_until(lambda: inlet.status()["markers"] == 1, 30, "the marker to be read")
    _write(ring, start, FRAMES, FRAMES + 40)  # 200..239, of which 200..209 in the train
    window = ring.latest(FRAMES + 40)
    np.testing.assert_array_equal(np.flatnonzero(~window.valid), np.arange(150, 210))
    # Held at the last frame before the train, as any blanked frame is.
    np.testing.assert_array_equal(window.frames[150:210, 0, 0], np.full(60, 149.0))
    np.testing.assert_array_equal(window.frames[210:, 0, 0], np.arange(210, 240))
    assert ring.blanked_frames == 60
    sample = registry.get_sample_value
    assert sample("corticast_ingest_stimulation_markers_total", {"stream": name}) == 1
    assert sample("corticast_ingest_stimulation_marker_stream_connected", {"stream": name}) == 1
    assert inlet.status()["last_marker_timestamp"] == pytest.approx(
        start + 149.5 * PERIOD, abs=1e-3
    )


def test_a_corticast_marker_is_blanked_for_its_own_time_any_other_for_the_default(
    name, ring_and_start, inlet_of
):
    ring, start = ring_and_start
    outlet = _outlet(name)
    announced = []
    inlet = inlet_of(name, blank_frames=5, announce=lambda *train: announced.append(train))
    wait_until(lambda: inlet.connected, 30, f"the inlet to find {name}")
    theirs = StimulationMarker(
        request_id=1, sequence=7, outcome="sent", blank_s=3 * PERIOD, channels=(4,),
        amplitude_ua=10, phase_width_us=100, frequency_hz=100, train_duration_ms=10,
    )  # fmt: skip
    outlet.push_sample(["stimulation on"], start + 9.5 * PERIOD)
    outlet.push_sample([theirs.to_text()], start + 29.5 * PERIOD)
    outlet.push_sample(['{"not": "a corticast marker"}'], start + 99.5 * PERIOD)
    # Already announced by another daemon that read a third tool: blanked, not passed on.
    relayed = AnnouncedTrain(source="third-tool", blank_s=2 * PERIOD, announcement="x")
    outlet.push_sample([relayed.to_text()], start + 149.5 * PERIOD)
    wait_until(lambda: inlet.status()["markers"] == 4, 30, "the four markers to be read")
    expected = np.r_[np.arange(10, 15), np.arange(30, 33), np.arange(100, 105), np.arange(150, 152)]
    np.testing.assert_array_equal(_blanked(ring, FRAMES), expected)
    # The blank around the opening first; then each train read is passed on once, as blanked,
    # naming the stream it came on.
    assert [t.announcement for t, _ in announced[:2]] == [UNHEARD] * 2
    assert [(t.source, round(t.blank_s / PERIOD), t.announcement) for t, _ in announced[2:]] == [
        (name, 5, "stimulation on"),
        (name, 3, theirs.to_text()[:MAX_ANNOUNCEMENT_CHARS]),  # kept short
        (name, 5, '{"not": "a corticast marker"}'),
    ]
    stamps = [stamp for _, stamp in announced[2:]]
    np.testing.assert_allclose(stamps, start + np.array([9.5, 29.5, 99.5]) * PERIOD, atol=1e-3)


def test_a_numeric_marker_stream_announces_trains_too(name, ring_and_start, inlet_of):
    ring, start = ring_and_start
    outlet = _outlet(name, pylsl.cf_int32)
    inlet = inlet_of(name, blank_frames=4)
    wait_until(lambda: inlet.connected, 30, f"the inlet to find {name}")
    outlet.push_sample([3], start + 39.5 * PERIOD)
    wait_until(lambda: inlet.status()["markers"] == 1, 30, "the marker to be read")
    np.testing.assert_array_equal(_blanked(ring, FRAMES), np.arange(40, 44))


def test_a_stream_not_found_then_lost_says_why_and_is_found_again(
    name, ring_and_start, inlet_of, monkeypatch
):
    ring, start = ring_and_start
    inlet = inlet_of(name, blank_frames=2)
    wait_until(lambda: "not found" in (inlet.not_connected_reason() or ""), 30, "a look")
    reason = inlet.not_connected_reason()
    assert name in reason and "would be read as cortex" in reason
    outlet = _outlet(name)
    wait_until(lambda: inlet.connected, 30, f"the inlet to find {name}")
    close = inlet._close_inlet

    def slow_close() -> None:
        """Closing takes a while: the inlet is said not to be read from its start."""
        close()
        time.sleep(0.3)

    monkeypatch.setattr(inlet, "_close_inlet", slow_close)
    del outlet  # the tool stops: its outlet goes
    wait_until(lambda: not inlet.connected, 30, "the loss to be seen")
    # Lost, and why (its stale entry in the resolver is not opened again).
    assert "(lost: its outlet went away)" in inlet.not_connected_reason()
    assert inlet.running  # it looks for the stream again
    outlet = _outlet(name)
    wait_until(lambda: inlet.connected, 30, f"the inlet to find {name} again")
    outlet.push_sample(["train"], start + 19.5 * PERIOD)
    wait_until(lambda: inlet.status()["markers"] == 1, 30, "the marker to be read")
    np.testing.assert_array_equal(_blanked(ring, FRAMES), np.arange(20, 22))


def test_a_stream_whose_outlet_went_away_is_not_opened_again_while_the_resolver_lists_it(
    name, ring_and_start, inlet_of, monkeypatch
):
    """The resolver lists a stream for a while after its outlet goes: opening it then waited
    out the open's timeouts for nothing (a stop waited with it) and said "found, then gone" in
    place of why it was lost. A new outlet of that name is read as soon as it comes."""
    ring, start = ring_and_start
    opened: list[str] = []
    real_inlet = pylsl.StreamInlet

    def counted(info: pylsl.StreamInfo, *args, **kwargs) -> pylsl.StreamInlet:
        opened.append(info.uid())
        return real_inlet(info, *args, **kwargs)

    monkeypatch.setattr(stimulation_marker_inlet.pylsl, "StreamInlet", counted)
    inlet = inlet_of(name, blank_frames=2)
    outlet = _outlet(name)
    wait_until(lambda: inlet.connected, 30, f"the inlet to find {name}")
    del outlet  # the tool stops: its outlet goes
    wait_until(lambda: not inlet.connected, 30, "the loss to be seen")
    time.sleep(0.8 * _FORGET_AFTER_S)  # most of the while the resolver may list it
    assert "(lost: its outlet went away)" in inlet.not_connected_reason()
    assert len(opened) == 1, f"the stream whose outlet went away was opened again: {opened}"
    first = opened[0]
    outlet = _outlet(name)
    wait_until(lambda: inlet.connected, 30, f"the inlet to find {name} again")
    outlet.push_sample(["train"], start + 19.5 * PERIOD)
    wait_until(lambda: inlet.status()["markers"] == 1, 30, "the marker to be read")
    np.testing.assert_array_equal(_blanked(ring, FRAMES), np.arange(20, 22))
    assert opened[-1] != first


def test_a_stop_during_an_opening_waits_it_out(name, inlet_of, monkeypatch):
    """The opening's liblsl calls (clock offset, open, description; up to 1 s each) do not
    return for a stop request: a stop that gave up after the worker's 2 s left the inlet
    running, and it went on recording to the daemon's marker stream after that was closed."""
    opening = threading.Event()

    def slowly(call, seconds):
        def slow(self, *args, **kwargs):
            opening.set()
            time.sleep(seconds)  # as a busy host or a slow network may take, within _OPEN_S
            return call(self, *args, **kwargs)

        return slow

    for method, seconds in (("time_correction", 0.9), ("open_stream", 0.9), ("info", 0.5)):
        monkeypatch.setattr(
            pylsl.StreamInlet, method, slowly(getattr(pylsl.StreamInlet, method), seconds)
        )
    inlet = inlet_of(name, blank_frames=2)
    outlet = _outlet(name)
    assert opening.wait(30), "the inlet did not begin to open the stream"
    assert inlet.stop(), "the stop gave up while the opening was under way"
    assert not inlet.running
    del outlet


def test_frames_a_train_announced_before_the_stream_was_read_may_be_on_are_blanked(name):
    """The tool announced a train a moment before the inlet opened (at the daemon's start, or
    while its stream was lost): an outlet sends an inlet only what it pushes after the inlet
    opens, so that marker never comes. The frames from one blank before the opening to one
    blank after are blanked, as that train's would have been; the others stay measured. Each
    opening does it again, for what was announced while the stream was lost."""
    ring = RingBuffer(2000, DEFAULT_GRID)
    blank_s = 60 * PERIOD
    recorded: list[tuple[AnnouncedTrain, float]] = []

    def slow_announce(*train: object) -> None:
        """The daemon's marker outlet, slow to take a record: it is taken all the same
        before the stream is said to be read."""
        time.sleep(0.2)
        recorded.append(train)

    inlet = StimulationMarkerInlet(name, ring, blank_s=blank_s, announce=slow_announce).start()
    try:
        outlet = _outlet(name)
        wait_until(lambda: inlet.connected, 30, f"the inlet to find {name}")
        opened = inlet.status()["blanked_until"] - blank_s
        # Recorded as the daemon's marker stream records its blanks, for a replay to blank:
        # the blank before the opening and the one after.
        assert [(t.source, t.announcement, t.blank_s) for t, _ in recorded] == [
            (name, UNHEARD, blank_s)
        ] * 2
        assert [stamp for _, stamp in recorded] == pytest.approx([opened - blank_s, opened])
        # Stamped from 500 frames before the opening on, half a period off the blank's ends:
        # a frame on an end would be in or out by the rounding of the two sums.
        start = opened - 499.5 * PERIOD
        _write(ring, start, 0, 1000)
        stamps = start + np.arange(1000) * PERIOD
        expected = np.flatnonzero((stamps >= opened - blank_s) & (stamps <= opened + blank_s))
        np.testing.assert_array_equal(_blanked(ring, 1000), expected)
        assert expected.size == 120 and inlet.status()["markers"] == 0
        del outlet  # lost, and found again: blanked again around the new opening
        wait_until(lambda: not inlet.connected, 30, "the loss to be seen")
        again = _outlet(name)
        wait_until(lambda: inlet.connected, 30, f"the inlet to find {name} again")
        assert again.have_consumers()
        assert inlet.status()["blanked_until"] - blank_s > opened
        assert len(recorded) == 4
    finally:
        inlet.stop()


@pytest.mark.parametrize(
    ("described", "blanked_s"),
    [("1.500", 1.5), ("soon", 0.2), (None, 0.2), ("1e9", 3600.0)],
)
def test_frames_another_daemon_s_train_announced_before_the_stream_was_read_is_on_are_blanked(
    name, described, blanked_s
):
    """Another daemon's marker stream (its format and its longest blank in the stream's
    description, as MarkerOutlet writes them) says each train's blank in its marker: its
    trains and ``[loop] blank_after_train_ms`` may outlast this daemon's
    ``stimulation_marker_blank_ms``. One it announced just before the inlet opened is never
    heard of; the frames its artefact is on are blanked all the same, for the longest blank
    the stream describes. A description that is no number, or none, leaves the configured
    blank; one past a marker's longest is cut to it."""
    ring = RingBuffer(2000, DEFAULT_GRID)
    info = pylsl.StreamInfo(name, "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, name)
    info.desc().append_child_value("format", StimulationMarker.model_fields["format"].default)
    if described is not None:
        info.desc().append_child_value(LONGEST_BLANK_KEY, described)
    outlet = pylsl.StreamOutlet(info)
    theirs = StimulationMarker(
        request_id=1, sequence=0, outcome="sent", blank_s=1.5, channels=(4,),
        amplitude_ua=10, phase_width_us=100, frequency_hz=100, train_duration_ms=1000,
    )  # fmt: skip
    sent = pylsl.local_clock()
    outlet.push_sample([theirs.to_text()], sent)  # no inlet yet: never delivered
    inlet = StimulationMarkerInlet(name, ring, blank_s=0.2).start()
    try:
        wait_until(lambda: inlet.connected, 30, f"the inlet to find {name}")
        opened = inlet.status()["blanked_until"] - blanked_s
        _write(ring, sent - 0.5, 0, 800)  # to 2.4 s after the train's marker
        stamps = sent - 0.5 + np.arange(800) * PERIOD
        if blanked_s >= theirs.blank_s:
            on_artefact = np.flatnonzero((stamps >= sent) & (stamps <= sent + theirs.blank_s))
            unblanked = np.setdiff1d(on_artefact, _blanked(ring, 800))
            assert unblanked.size == 0, (
                f"{unblanked.size} frames of the train's artefact read as cortex, stamped "
                f"{stamps[unblanked[0]] - sent:.3f}-{stamps[unblanked[-1]] - sent:.3f} s after it"
            )
        expected = (stamps >= opened - blanked_s) & (stamps <= opened + blanked_s)
        np.testing.assert_array_equal(_blanked(ring, 800), np.flatnonzero(expected))
    finally:
        inlet.stop()


def test_a_described_blank_beyond_a_marker_s_longest_is_cut_and_said(name, caplog):
    """A stream describing its markers' longest blank as 1e9 s (no corticast daemon can: its
    markers blank a minute at most, and none more than an hour): the opening is blanked for a
    marker's longest, an hour before and after, and the log says so, naming the description,
    rather than the daemon sitting an hour on blanked frames with nothing said."""
    info = pylsl.StreamInfo(name, "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, name)
    info.desc().append_child_value(LONGEST_BLANK_KEY, "1e9")
    outlet = pylsl.StreamOutlet(info)
    inlet = StimulationMarkerInlet(name, RingBuffer(100, DEFAULT_GRID), blank_s=0.2).start()
    try:
        with caplog.at_level(logging.INFO, logger="corticast.ingest"):
            wait_until(lambda: inlet.connected, 30, f"the inlet to find {name}")
        assert inlet.status()["blanked_until"] - pylsl.local_clock() > 3000
        warned = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert any("'1e9'" in r.getMessage() and "3600" in r.getMessage() for r in warned), (
            f"an hour blanked, nothing warned: {[r.getMessage() for r in caplog.records]}"
        )
    finally:
        inlet.stop()
        del outlet


def test_another_daemon_s_record_of_a_long_opening_blank_is_blanked_where_it_says(name, caplog):
    """Daemon A blanks 15 s around its opening of a tool's stream (its configured blank: up to
    60 s) and records it on its marker stream as two announced blanks, the first stamped 15 s
    before it pushes it. Daemon B, which learns of that tool's trains only from A's stream,
    blanks the frames A blanked, as stamped: not from now, as for a tool stamping on another
    clock, and without saying that A does."""
    blank_s = 15.0
    ours = f"daemon-a-{uuid.uuid4().hex[:8]}"
    info = pylsl.StreamInfo(ours, "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, ours)
    info.desc().append_child_value("format", StimulationMarker.model_fields["format"].default)
    a_stream = pylsl.StreamOutlet(info)  # as MarkerOutlet.push pushes: the text, stamped
    ring_a, ring_b = RingBuffer(1000, DEFAULT_GRID), RingBuffer(1000, DEFAULT_GRID)
    b = StimulationMarkerInlet(ours, ring_b, blank_s=0.2).start()
    a = None
    try:
        wait_until(lambda: b.connected, 30, f"daemon B to read {ours}")
        tool = _outlet(name)
        a = StimulationMarkerInlet(
            name, ring_a, blank_s=blank_s,
            announce=lambda train, stamp: a_stream.push_sample([train.to_text()], stamp),
        ).start()  # fmt: skip
        wait_until(lambda: a.connected, 30, f"daemon A to read {name}")
        wait_until(lambda: b.status()["markers"] == 2, 30, "daemon B to read A's two records")
        opened = a.status()["blanked_until"] - blank_s
        # From 20 s before A's opening to 20 after, none on a blank's edge (B's clock
        # correction of A's stamps moves them by µs).
        stamps = opened - 20.025 + 0.05 * np.arange(800)
        for ring in (ring_a, ring_b):
            ring.write(
                np.zeros((800, *DEFAULT_GRID.shape), np.float32), stamps,
                np.ones(800, np.bool_), arrival=pylsl.local_clock(),
            )  # fmt: skip
        blanked_a, blanked_b = _blanked(ring_a, 800), _blanked(ring_b, 800)
        assert blanked_a.size > 500  # 30 s of 40
        missed = np.setdiff1d(blanked_a, blanked_b)
        assert missed.size == 0, (
            f"{missed.size} frames daemon A blanked around its opening read as cortex by B, "
            f"stamped {stamps[missed[0]] - opened:.2f} to {stamps[missed[-1]] - opened:.2f} s "
            f"from the opening"
        )
        assert "LSL clock" not in caplog.text
    finally:
        b.stop()
        if a is not None:
            a.stop()
        del tool


def test_the_daemon_s_marker_stream_describes_the_longest_blank_its_markers_say():
    """What another daemon reading it blanks around its opening: the daemon's own train from
    its sending to the verdict (a failed one: the STIMULATE's ACK deadline, the DISARM's, and
    a margin), the train and the recovery after
    it; or a train it passes on from another tool, if that is blanked longer."""
    longest = longest_marker_blank_s(
        ack_timeout_s=0.1, max_train_duration_ms=1000, blank_after_train_ms=100,
        announced_blank_ms=1100,
    )  # fmt: skip
    assert longest == pytest.approx(2 * 0.1 + VERDICT_MARGIN_S + 1.1)
    passed_on = longest_marker_blank_s(
        ack_timeout_s=0.1, max_train_duration_ms=10, blank_after_train_ms=0,
        announced_blank_ms=60_000,
    )  # fmt: skip
    assert passed_on == 60.0
    markers = MarkerOutlet(f"described-{uuid.uuid4().hex[:8]}", longest, rig_name="rig")
    try:
        (info,) = pylsl.resolve_byprop("source_id", markers.source_id, minimum=1, timeout=30)
        inlet = pylsl.StreamInlet(info)
        described = inlet.info(30).desc().child_value(LONGEST_BLANK_KEY)
    finally:
        markers.close()
    assert float(described) == pytest.approx(longest, abs=1e-3)


def test_an_inlet_that_was_stopped_says_so(name, ring_and_start):
    inlet = StimulationMarkerInlet(name, ring_and_start[0], blank_s=0.1)
    assert "inlet stopped" in inlet.not_connected_reason()
    with pytest.raises(ValueError, match="blank_s must be a positive"):
        StimulationMarkerInlet(name, ring_and_start[0], blank_s=float("nan"))


def test_an_inlet_stopping_or_just_started_again_says_why_it_is_not_read(
    name, ring_and_start, inlet_of, monkeypatch
):
    """Its stream closed as the thread ends, or not looked for yet after a restart, an inlet
    that read its stream said it was 'not connected (None)'."""
    inlet = inlet_of(name, blank_frames=2)
    outlet = _outlet(name)
    wait_until(lambda: inlet.connected, 30, f"the inlet to find {name}")
    close, found = inlet._close_inlet, inlet._found

    def slow_close() -> None:
        """The thread ends a while after it has closed the stream."""
        close()
        time.sleep(0.3)

    def slow_look() -> list[pylsl.StreamInfo]:
        """The first look after a restart takes a while."""
        time.sleep(0.3)
        return found()

    monkeypatch.setattr(inlet, "_close_inlet", slow_close)
    stopping = threading.Thread(target=inlet.stop)
    stopping.start()
    wait_until(lambda: not inlet.connected, 30, "the stream to be closed")
    assert "(not read (inlet stopped))" in inlet.not_connected_reason()
    stopping.join(30)
    monkeypatch.setattr(inlet, "_found", slow_look)
    inlet.start()
    assert "(not found yet)" in inlet.not_connected_reason()
    wait_until(lambda: inlet.connected, 30, f"the inlet to find {name} again")
    del outlet


def test_a_marker_stamped_on_another_clock_blanks_from_now_and_says_so(
    name, ring_and_start, inlet_of, caplog
):
    """A tool stamping its own time base (an hour off here): its train is happening about now,
    so the frames from now are blanked too, and the log names the offset."""
    ring, _ = ring_and_start
    outlet = _outlet(name)
    inlet = inlet_of(name, blank_frames=200)
    wait_until(lambda: inlet.connected, 30, f"the inlet to find {name}")
    outlet.push_sample(["train"], pylsl.local_clock() - 3600.0)
    wait_until(lambda: inlet.status()["markers"] == 1, 30, "the marker to be read")
    _write(ring, pylsl.local_clock() - FRAMES * PERIOD, FRAMES, FRAMES + 40)  # stamped now
    assert not ring.latest(40).valid.any()
    assert ring.latest(FRAMES + 40).valid[:FRAMES].sum() > 100  # the old frames stay
    assert "stamped -3600" in caplog.text and "LSL clock" in caplog.text


def test_a_burst_of_markers_is_blanked_whole_even_while_the_ring_is_busy(
    name, ring_and_start, inlet_of
):
    """A tool announcing each pulse (100 a second) while the inlet waits on the ring's lock
    (held by the ingestor's write): every marker queued meanwhile is still blanked."""
    ring, start = ring_and_start
    outlet = _outlet(name)
    inlet = inlet_of(name, blank_frames=1)
    wait_until(lambda: inlet.connected, 30, f"the inlet to find {name}")
    with ring._lock:  # the inlet blocks in ring.blank on the first marker
        for k in range(FRAMES):
            outlet.push_sample([f"pulse {k}"], start + (k + 0.5) * PERIOD)
        time.sleep(1.0)  # for the burst to reach the inlet's queue
    wait_until(
        lambda: (
            inlet.status()["last_marker_timestamp"]
            == pytest.approx(start + (FRAMES - 0.5) * PERIOD, abs=1e-3)
        ),
        30,
        "the last marker to be read",
    )
    assert inlet.status()["markers"] == FRAMES
    np.testing.assert_array_equal(_blanked(ring, FRAMES), np.arange(1, FRAMES))


def test_a_marker_that_is_not_utf8_text_is_blanked_all_the_same(name, ring_and_start, inlet_of):
    """A tool sending raw bytes (a Latin-1 label, a binary code): still a train, blanked, and
    the inlet reads on."""
    ring, start = ring_and_start
    outlet = _outlet(name)
    announced = []
    inlet = inlet_of(name, blank_frames=3, announce=lambda *train: announced.append(train))
    wait_until(lambda: inlet.connected, 30, f"the inlet to find {name}")
    outlet.push_sample([b"stimulation \xe9\xff\x00 on"], start + 9.5 * PERIOD)
    outlet.push_sample(["train"], start + 49.5 * PERIOD)
    wait_until(lambda: inlet.status()["markers"] == 2, 30, "the two markers to be read")
    np.testing.assert_array_equal(_blanked(ring, FRAMES), np.r_[10:13, 50:53])
    assert inlet.connected
    text = announced[2][0].announcement  # after the blank around the opening
    assert text.startswith("stimulation ") and text.endswith(" on")
    text.encode("utf-8")  # passed on as text that can be logged and recorded


def test_two_streams_of_the_same_name_are_not_taken_for_one(name, ring_and_start, inlet_of):
    """Two tools (or a restarted one beside its old outlet) on one name: reading either alone
    would leave the other's trains unblanked while saying the stream is read."""
    outlets = [
        pylsl.StreamOutlet(
            pylsl.StreamInfo(name, "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, uid)
        )
        for uid in (f"{name}-a", f"{name}-b")
    ]
    inlet = inlet_of(name, blank_frames=2)
    wait_until(
        lambda: "2 streams" in (inlet.not_connected_reason() or ""), 30, "the two to be seen"
    )
    assert not inlet.connected
    assert f'{{name = "{name}", source_id = "..."}}' in inlet.not_connected_reason()
    del outlets[1]  # one left: read
    wait_until(lambda: inlet.connected, 30, f"the inlet to read the one {name} left")


def test_of_two_streams_of_one_name_the_one_named_by_its_source_id_is_read(name, ring_and_start):
    """Two rigs on one network running the same protocol software: both announce on one name.
    The config names the one of this rig by its source id: it is read, its markers blank the
    ring; the other's do not. What is said of it, its status and its metrics name both, and
    so does each train it passes on to the daemon's record (a recording's reader tells the
    two apart by it)."""
    ring, start = ring_and_start
    outlets = {
        rig: pylsl.StreamOutlet(
            pylsl.StreamInfo(name, "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, rig)
        )
        for rig in (f"{name}-rig1", f"{name}-rig2")
    }
    registry = CollectorRegistry()
    ours = f"{name}-rig2"
    announced = []
    inlet = StimulationMarkerInlet(
        name, ring, source_id=ours, blank_s=10 * PERIOD, metrics=marker_metrics(registry),
        announce=lambda train, stamp: announced.append(train),
    ).start()  # fmt: skip
    try:
        wait_until(lambda: inlet.connected, 30, f"the inlet to read {name} of {ours}")
        outlets[f"{name}-rig1"].push_sample(["theirs"], start + 19.5 * PERIOD)
        outlets[ours].push_sample(["ours"], start + 49.5 * PERIOD)
        wait_until(lambda: inlet.status()["markers"] == 1, 30, "our marker to be read")
        time.sleep(0.5)  # time for theirs to arrive too, were it read
        status = inlet.status()
    finally:
        inlet.stop()
    np.testing.assert_array_equal(_blanked(ring, FRAMES), np.arange(50, 60))
    assert status["markers"] == 1 and status["source_id"] == ours
    # The blank around its opening (twice) and our train.
    assert [(t.announcement, t.source, t.source_id) for t in announced][-1] == ("ours", name, ours)
    assert {(t.source, t.source_id) for t in announced} == {(name, ours)} and len(announced) == 3
    label = f"{name} (source id {ours})"
    assert (
        registry.get_sample_value("corticast_ingest_stimulation_markers_total", {"stream": label})
        == 1
    )


def test_the_daemon_s_own_marker_stream_is_not_read_as_another_tool_s(ring_and_start, inlet_of):
    """Two daemons reading each other's corticast-stimulation: each skips its own outlet of
    that name (by source id) and reads the other's."""
    ring, start = ring_and_start
    name = f"corticast-stimulation-{uuid.uuid4().hex[:8]}"
    own, other = (
        pylsl.StreamOutlet(
            pylsl.StreamInfo(name, "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, uid)
        )
        for uid in (f"{name}-own", f"{name}-other")
    )
    inlet = inlet_of(name, blank_frames=2, ignore_source_id=f"{name}-own")
    wait_until(lambda: inlet.connected, 30, f"the inlet to read the other {name}")
    other.push_sample(["train"], start + 19.5 * PERIOD)
    wait_until(lambda: inlet.status()["markers"] == 1, 30, "the other's marker to be read")
    np.testing.assert_array_equal(_blanked(ring, FRAMES), np.arange(20, 22))
    del own


def test_markers_stamped_on_another_clock_far_ahead_leave_no_blank_behind(
    name, ring_and_start, inlet_of
):
    """A tool stamping with time.time() (decades ahead of the LSL clock): each train is blanked
    from now, and no interval waits in the ring for a time that never comes (every chunk after
    would be written frame by frame, testing each of them)."""
    ring, _ = ring_and_start
    outlet = _outlet(name)
    inlet = inlet_of(name, blank_frames=2)
    wait_until(lambda: inlet.connected, 30, f"the inlet to find {name}")
    outlet.push_sample(["train"], pylsl.local_clock() + 1.7e9)
    wait_until(lambda: inlet.status()["markers"] == 1, 30, "the marker to be read")
    time.sleep(2 * PERIOD)
    _write(ring, pylsl.local_clock() - FRAMES * PERIOD, FRAMES, FRAMES + 40)  # stamped now
    assert not ring.blanking


def test_a_stream_at_a_regular_rate_is_refused_as_no_marker_stream(name, ring_and_start, inlet_of):
    """The rig's own stream, or a trigger channel sampled at a rate (0 but at a train), named
    by mistake: every sample is not a train, so it is not read, and the reason says why."""
    ring, start = ring_and_start
    info = pylsl.StreamInfo(name, "EEG", 2, NOMINAL_RATE_HZ, pylsl.cf_float32, name)
    outlet = pylsl.StreamOutlet(info)
    inlet = inlet_of(name, blank_frames=2)
    wait_until(lambda: "nominal rate" in (inlet.not_connected_reason() or ""), 30, "the refusal")
    outlet.push_chunk(np.zeros((20, 2), dtype=np.float32), start + 10 * PERIOD)
    assert not inlet.connected
    assert inlet.status()["markers"] == 0
    assert ring.blanked_frames == 0


def test_a_tool_s_own_json_markers_unstamped_do_not_flood_the_log(name, inlet_of, caplog):
    """A tool announcing each pulse with JSON of its own and no time stamp of use (NaN): each
    is blanked from now for the default time; what is wrong with them is said, not 200 times."""
    outlet = _outlet(name)
    inlet = inlet_of(name, blank_frames=2)
    wait_until(lambda: inlet.connected, 30, f"the inlet to find {name}")
    caplog.set_level(logging.INFO, logger="corticast.ingest")
    for k in range(200):
        outlet.push_sample([f'{{"pulse": {k}}}'], math.nan)
    wait_until(lambda: inlet.status()["markers"] == 200, 60, "the markers to be read")
    lines = [r for r in caplog.records if r.name == "corticast.ingest" and name in r.getMessage()]
    assert any("not a corticast marker" in r.getMessage() for r in lines)
    assert any("timestamp nan" in r.getMessage() for r in lines)
    assert len(lines) < 20, f"{len(lines)} lines for 200 markers"


def test_the_status_says_until_when_a_marker_blanks(name, ring_and_start, inlet_of):
    """Another daemon's marker saying 3600 s blanks an hour (every decision is refused on the
    artefact interlock meanwhile): /status says until when, not only the configured time."""
    ring, start = ring_and_start
    outlet = _outlet(name)
    inlet = inlet_of(name, blank_frames=2)
    wait_until(lambda: inlet.connected, 30, f"the inlet to find {name}")
    theirs = StimulationMarker(
        request_id=1, sequence=0, outcome="sent", blank_s=3600, channels=(4,),
        amplitude_ua=10, phase_width_us=100, frequency_hz=100, train_duration_ms=10,
    )  # fmt: skip
    outlet.push_sample([theirs.to_text()], start + 9.5 * PERIOD)
    wait_until(lambda: inlet.status()["markers"] == 1, 30, "the marker to be read")
    assert inlet.status()["blanked_until"] == pytest.approx(start + 9.5 * PERIOD + 3600, abs=1e-3)
    outlet.push_sample(["short"], start + 19.5 * PERIOD)  # a shorter one ends no sooner
    wait_until(lambda: inlet.status()["markers"] == 2, 30, "the second marker to be read")
    assert inlet.status()["blanked_until"] == pytest.approx(start + 9.5 * PERIOD + 3600, abs=1e-3)
    np.testing.assert_array_equal(_blanked(ring, FRAMES), np.arange(10, FRAMES))


def test_a_stream_whose_outlet_stops_answering_is_not_said_to_be_read(
    name, ring_and_start, inlet_of
):
    """The tool's program frozen (or its host off the network): no connection closes, so no
    pull ever fails, and no marker comes whatever it delivers. The resolver no longer hears
    from it: the stream is then not read, and the daemon not ready, rather than connected
    to a silence that may be trains."""
    script = (
        "import sys, time, pylsl\n"
        "info = pylsl.StreamInfo(sys.argv[1], 'Markers', 1, 0, pylsl.cf_string, sys.argv[1])\n"
        "outlet = pylsl.StreamOutlet(info)\n"
        "print('up', flush=True)\n"
        "time.sleep(600)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script, name], stdout=subprocess.PIPE, text=True
    ) as tool:
        try:
            assert tool.stdout.readline().strip() == "up"
            # Unheard for 2 s, the setting's least (5 s by default), is gone.
            inlet = inlet_of(name, blank_frames=2, unheard_s=2.0)
            wait_until(lambda: inlet.connected, 30, f"the inlet to find {name}")
            tool.send_signal(signal.SIGSTOP)
            wait_until(lambda: not inlet.connected, 60, "the silence to be seen")
            assert "not answered" in inlet.not_connected_reason()
            tool.send_signal(signal.SIGCONT)
            wait_until(lambda: inlet.connected, 60, f"the inlet to read {name} again")
        finally:
            tool.kill()


def test_a_marker_later_than_the_latency_allowed_is_counted_and_said(name, ring_and_start, caplog):
    """A marker that comes later after its timestamp than ``latency_s`` blanks frames the live
    scores may already have read (they wait only that long): it is counted, in ``/status`` and
    the metric, and said. One on time is not, though it too blanks frames already written."""
    ring, start = ring_and_start
    registry = CollectorRegistry()
    late = []  # the daemon forgets its live scores here
    inlet = StimulationMarkerInlet(
        name,
        ring,
        blank_s=20 * PERIOD,
        latency_s=1.0,
        metrics=marker_metrics(registry),
        on_late=lambda: late.append(ring.blanked_frames),
    ).start()
    try:
        outlet = _outlet(name)
        wait_until(lambda: inlet.connected, 30, f"the inlet to find {name}")
        caplog.set_level(logging.WARNING, logger="corticast.ingest")
        outlet.push_sample(["late"], start + 150.5 * PERIOD)  # 1.46 s before now, and more
        wait_until(lambda: inlet.status()["markers"] == 1, 30, "the late marker to be read")
        now = pylsl.local_clock()
        recent = np.arange(round((now - 0.3 - start) / PERIOD), round((now - start) / PERIOD))
        _write(ring, start, int(recent[0]), int(recent[-1]) + 1)
        outlet.push_sample(["on time"], start + (recent[-1] - 10.5) * PERIOD)
        wait_until(lambda: inlet.status()["markers"] == 2, 30, "the marker on time to be read")
    finally:
        inlet.stop()
    assert inlet.status()["late_markers"] == 1
    assert inlet.status()["latency_ms"] == pytest.approx(1000)
    assert late == [20]  # told once, for the late one, once its 20 frames were blanked
    sample = registry.get_sample_value
    assert sample("corticast_ingest_late_stimulation_markers_total", {"stream": name}) == 1
    said = [r.getMessage() for r in caplog.records if "marker_latency_ms" in r.getMessage()]
    assert len(said) == 1 and "20 frames of its train were written before it" in said[0], said
    # Both were blanked all the same: the late one's 20 frames and the other's 10 written.
    valid = ring.latest(ring.next_seq).valid
    assert not valid[151:171].any() and valid[[150, 171]].all()
    assert not valid[-10:].any()


def test_another_daemon_s_record_of_its_opening_blank_is_not_a_late_marker(
    name, ring_and_start, caplog
):
    """Another daemon, opening a tool's stream, records the blank before the opening stamped
    that blank (here 1.1 s) before it pushes it: stamped in the past by design, and no train
    (``UNHEARD``). Read from its stream, it blanks the frames written in that second, but it
    is not a marker that came late: counted as one, every opening of the other daemon's
    streams would count a late marker and warn that a train's artefact may be in the scores."""
    ring, start = ring_and_start
    registry = CollectorRegistry()
    inlet = StimulationMarkerInlet(name, ring, blank_s=0.2,
                                   metrics=marker_metrics(registry)).start()  # fmt: skip
    try:
        outlet = _outlet(name)
        wait_until(lambda: inlet.connected, 30, f"the inlet to find {name}")
        caplog.set_level(logging.WARNING, logger="corticast.ingest")
        now = pylsl.local_clock()
        _write(ring, start, FRAMES, round((now - start) / PERIOD))  # up to now
        record = AnnouncedTrain(source="lab", blank_s=1.1, announcement=UNHEARD)
        outlet.push_sample([record.to_text()], now - 1.1)  # as MarkerOutlet pushes it
        wait_until(lambda: inlet.status()["markers"] == 1, 30, "the record to be read")
    finally:
        inlet.stop()
    assert ring.blanked_frames > 100  # the second before the opening, written before it came
    sample = registry.get_sample_value
    late = sample("corticast_ingest_late_stimulation_markers_total", {"stream": name})
    said = [r.getMessage() for r in caplog.records if "marker_latency_ms" in r.getMessage()]
    assert (inlet.status()["late_markers"], late, said) == (0, 0, [])


def test_a_stream_of_a_source_id_longer_than_a_record_keeps_is_read_all_the_same(
    name, ring_and_start, inlet_of
):
    """LSL bounds no source id; the record of a train keeps at most 200 characters of one. A
    stream named by name alone whose tool gives it a longer one is read, its trains blanked
    and passed on, recorded with no source id (matched by name alone, as records made before
    source ids were kept), not the inlet failing at the opening, the stream never read and
    the daemon never ready."""
    ring, start = ring_and_start
    long_id = f"{name}-" + "x" * 300
    info = pylsl.StreamInfo(name, "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, long_id)
    outlet = pylsl.StreamOutlet(info)
    announced: list[AnnouncedTrain] = []

    def slow_announce(train: AnnouncedTrain, stamp: float) -> None:
        """The daemon's marker outlet, slow to take a record: a marker is counted as read
        once its train is passed on."""
        time.sleep(0.2)
        announced.append(train)

    inlet = inlet_of(name, blank_frames=10, announce=slow_announce)
    wait_until(lambda: inlet.connected, 30, f"the inlet to read {name}")
    outlet.push_sample(["train"], start + 49.5 * PERIOD)
    wait_until(lambda: inlet.status()["markers"] == 1, 30, "the marker to be read")
    inlet.raise_if_failed()
    np.testing.assert_array_equal(_blanked(ring, FRAMES), np.arange(50, 60))
    assert [t.announcement for t in announced] == [UNHEARD, UNHEARD, "train"]
    assert {t.source_id for t in announced} == {None}
