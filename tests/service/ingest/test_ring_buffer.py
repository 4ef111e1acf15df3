import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.core.grid import ElectrodeGrid
from service.ingest.ring_buffer import NotEnoughFramesError, RingBuffer

GRID = ElectrodeGrid(rows=2, cols=3)


def _chunk(first: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames whose every value is the frame's global index, so copies can be checked."""
    index = np.arange(first, first + n)
    frames = np.broadcast_to(index[:, None, None], (n, *GRID.shape)).astype(np.float32)
    return frames, index * 0.01, index % 3 != 0


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(1, 40),
    sizes=st.lists(st.integers(0, 60), max_size=25),
    want=st.integers(1, 40),
)
def test_latest_is_the_newest_frames_of_everything_written(capacity, sizes, want):
    ring = RingBuffer(capacity, GRID)
    written = 0
    for size in sizes:
        ring.write(*_chunk(written, size), arrival=float(written))
        written += size
    assert ring.next_seq == written
    if want > capacity:
        with pytest.raises(ValueError, match="'n' must be an integer in 1"):
            ring.latest(want)
        return
    if written < want:
        with pytest.raises(NotEnoughFramesError, match=f"only {written} have arrived"):
            ring.latest(want)
        return
    window = ring.latest(want)
    expected = np.arange(written - want, written)
    np.testing.assert_array_equal(window.seq, expected)
    np.testing.assert_array_equal(window.frames[:, 0, 0], expected.astype(np.float32))
    assert np.all(window.frames == window.frames[:, :1, :1])
    np.testing.assert_array_equal(window.timestamps, expected * 0.01)
    np.testing.assert_array_equal(window.valid, expected % 3 != 0)


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(1, 30),
    sizes=st.lists(st.integers(0, 40), max_size=20),
    since=st.integers(0, 400),
    limit=st.none() | st.integers(0, 50),
)
def test_read_since_returns_every_frame_still_held_in_order(capacity, sizes, since, limit):
    ring = RingBuffer(capacity, GRID)
    written = 0
    for size in sizes:
        ring.write(*_chunk(written, size), arrival=0.0)
        written += size
    window = ring.read_since(since, limit)
    first = max(since, written - capacity)
    count = max(0, written - first)
    if limit is not None:
        count = min(count, limit)
    np.testing.assert_array_equal(window.seq, np.arange(first, first + count))
    np.testing.assert_array_equal(window.frames[:, 1, 2], window.seq.astype(np.float32))


def test_window_is_a_copy_not_a_view():
    ring = RingBuffer(4, GRID)
    ring.write(*_chunk(0, 4), arrival=1.0)
    window = ring.latest(2)
    ring.write(*_chunk(4, 4), arrival=2.0)
    np.testing.assert_array_equal(window.seq, [2, 3])
    assert window.frames[0, 0, 0] == 2.0
    assert window.newest_arrival == 1.0


@pytest.mark.parametrize(("available", "expected"), [(None, 5.0), (3.5, 3.5), (7.0, 5.0)])
def test_a_write_keeps_its_arrival_and_its_data_time_never_after_it(available, expected):
    """The data time a window's age counts from is the one given (a chunk stamped before it
    arrived), but never later than the arrival, which is kept beside it for the latency
    breakdown."""
    ring = RingBuffer(4, GRID)
    ring.write(*_chunk(0, 2), arrival=5.0, available=available)
    window = ring.latest(2)
    assert (window.newest_arrival, window.newest_available) == (5.0, expected)
    assert (ring.newest_arrival, ring.newest_available) == (5.0, expected)


def test_write_rejects_wrong_shape_and_dtype_naming_the_argument():
    ring = RingBuffer(4, GRID)
    frames, timestamps, valid = _chunk(0, 2)
    with pytest.raises(ValueError, match=r"'frames' must have shape \(\*, 2, 3\), got \(2, 3, 2\)"):
        ring.write(np.zeros((2, 3, 2), np.float32), timestamps, valid, 0.0)
    with pytest.raises(TypeError, match="'frames' must have dtype float32, got float64"):
        ring.write(frames.astype(np.float64), timestamps, valid, 0.0)
    with pytest.raises(ValueError, match=r"'valid' must have shape \(2\), got \(3,\)"):
        ring.write(frames, timestamps, np.ones(3, bool), 0.0)
    assert ring.next_seq == 0


@pytest.mark.parametrize(
    ("times", "message"),
    [
        ({"arrival": float("nan")}, "'arrival' must be a finite time, got nan"),
        ({"arrival": float("inf")}, "'arrival' must be a finite time, got inf"),
        ({"arrival": 1.0, "available": float("nan")}, "'available' must be a finite time"),
    ],
)
def test_write_refuses_a_time_that_is_not_finite_naming_it(times, message):
    """The ring is public: a NaN arrival written made every later data age (what the
    interlocks judge) NaN; the ingestor's come from the local clock."""
    ring = RingBuffer(4, GRID)
    with pytest.raises(ValueError, match=f"^{message}"):
        ring.write(*_chunk(0, 2), **times)
    assert ring.next_seq == 0 and np.isnan(ring.newest_available)


@pytest.mark.parametrize("max_frames", [-1, -5, 1.5])
def test_read_since_refuses_a_max_frames_that_is_no_count(max_frames):
    """A negative count read as an empty window, as if nothing had been written."""
    ring = RingBuffer(4, GRID)
    ring.write(*_chunk(0, 3), arrival=1.0)
    with pytest.raises(
        ValueError, match=rf"^'max_frames' must be an integer >= 0 or None, got {max_frames}$"
    ):
        ring.read_since(0, max_frames)
    assert len(ring.read_since(0, np.int64(2))) == 2


def test_capacity_must_be_a_positive_integer():
    with pytest.raises(ValueError, match="'capacity' must be an integer >= 1, got 0"):
        RingBuffer(0, GRID)


def test_wait_for_wakes_when_the_frame_arrives():
    ring = RingBuffer(8, GRID)
    assert not ring.wait_for(0, timeout=0.01)
    writer = threading.Timer(0.05, lambda: ring.write(*_chunk(0, 3), arrival=0.0))
    writer.start()
    assert ring.wait_for(2, timeout=5.0)
    writer.join()


def test_concurrent_readers_always_see_consistent_windows():
    """One writer, several readers: every window is consecutive frames with matching data."""
    ring = RingBuffer(64, GRID)
    stop = threading.Event()
    problems: list[str] = []

    def read() -> None:
        while not stop.is_set():
            try:
                window = ring.latest(16)
            except NotEnoughFramesError:
                continue
            if not np.array_equal(np.diff(window.seq), np.ones(15)) or not np.array_equal(
                window.frames[:, 0, 0], window.seq.astype(np.float32)
            ):
                problems.append(f"torn window {window.seq}")

    readers = [threading.Thread(target=read) for _ in range(3)]
    for reader in readers:
        reader.start()
    written = 0
    for size in [1, 5, 7, 3, 64, 2, 11] * 60:
        ring.write(*_chunk(written, size), arrival=0.0)
        written += size
    stop.set()
    for reader in readers:
        reader.join()
    assert problems == []


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 30), max_size=12),
    blanks=st.lists(
        st.tuples(st.integers(0, 12), st.integers(-5, 300), st.integers(0, 40)), max_size=4
    ),
)
def test_frames_stamped_in_a_blanking_interval_are_missing_whenever_they_were_written(
    sizes, blanks
):
    """Blanked before or after they arrive, the frames in an interval are marked missing and
    hold the nearest frame before them that is not blanked; every other frame is as written.
    The measured frames blanked are counted once, in overlapping intervals too."""
    written = sum(sizes)
    ring = RingBuffer(max(written, 1), GRID)
    intervals = [
        (first * 0.01 - 0.004, (first + length) * 0.01 + 0.004) for _, first, length in blanks
    ]
    position = 0
    for chunk, size in enumerate([*sizes, 0]):
        for (at, _, _), interval in zip(blanks, intervals, strict=True):
            if min(at, len(sizes)) == chunk:
                ring.blank(*interval)
        ring.write(*_chunk(position, size), arrival=float(position))
        position += size
    index = np.arange(written)
    blanked = np.zeros(written, dtype=np.bool_)
    for start, end in intervals:
        blanked |= (index * 0.01 >= start) & (index * 0.01 <= end)
    held = np.maximum.accumulate(np.where(blanked, -1, index))
    expected_values = np.where(held < 0, 0.0, held).astype(np.float32)
    assert ring.blanked_frames == np.count_nonzero(blanked & (index % 3 != 0))
    if written == 0:
        return
    window = ring.read_since(0)
    np.testing.assert_array_equal(window.valid, (index % 3 != 0) & ~blanked)
    np.testing.assert_array_equal(window.frames[:, 0, 0], expected_values)
    assert np.all(window.frames == window.frames[:, :1, :1])
    np.testing.assert_array_equal(window.timestamps, index * 0.01)


class _ScanningRing(RingBuffer):
    """The ring as it blanked before it bisected: every blank reads every frame held."""

    def _first_stamped_from(self, start: float) -> int:
        return self._oldest_seq()


_ODD_STAMPS = st.sampled_from([np.nan, np.inf, -np.inf, 0.0])  # 0.0: far back


class _WritesExtendTheCeilingRing(RingBuffer):
    """The ring whose writes extend the stamps' running maximum (as one does once in
    ``ceiling_backlog`` frames) every few frames, not only its blanks."""

    ceiling_backlog = 3


@settings(max_examples=300, deadline=None)
@given(
    capacity=st.integers(1, 25),
    steps=st.lists(
        st.tuples(
            st.integers(0, 60),  # frames in the chunk written (may be more than the ring holds)
            st.integers(-30, 5),  # its first stamp's step from the last, in frame periods
            st.booleans(),  # whether its stamps come out of order
            st.lists(st.tuples(st.integers(0, 59), _ODD_STAMPS), max_size=3),  # odd stamps
            st.integers(-1, 80),  # a blank's start, in frame periods before the newest
            st.integers(0, 30),  # its length (0: open, until ended later)
        ),
        max_size=30,
    ),
    seed=st.integers(0, 2**16),
    bisecting=st.sampled_from([RingBuffer, _WritesExtendTheCeilingRing]),
)
def test_a_blank_covers_what_reading_every_frame_did_whatever_the_stamps(
    capacity, steps, seed, bisecting
):
    """Infinite, NaN and far-back stamps, stamps out of order within a chunk and chunks
    larger than the ring (whose first frames are never held) leave the stamps' running
    maximum rising, so the bisection finds every frame a scan of the ring found; the held
    values (the frame before the first newly blanked, where the ring still holds it) and
    counts agree too; whether a blank or a write extended the maximum."""
    rng = np.random.default_rng(seed)
    rings = bisecting(capacity, GRID), _ScanningRing(capacity, GRID)
    stamp, open_blanks = 0, []
    for size, step, shuffled, odd, back, length in steps:
        stamps = (stamp + step + np.arange(size)) * 0.01
        stamps = rng.permutation(stamps) if shuffled else stamps
        for index, value in odd if size else ():
            stamps[index % size] = value
        frames = rng.normal(size=(size, *GRID.shape)).astype(np.float32)
        valid = rng.random(size) > 0.2
        for ring in rings:
            ring.write(frames.copy(), stamps.copy(), valid.copy(), arrival=float(stamp))
        stamp += step + size
        if back >= 0:
            start = (stamp - back) * 0.01 - 0.004 * (back % 2)
            end = start + length * 0.01 if length else float("inf")
            assert len({ring.blank(start, end) for ring in rings}) == 1
            open_blanks += [] if length else [start]
        elif open_blanks:
            opened = open_blanks.pop(0)
            for ring in rings:
                ring.end_blank(opened, stamp * 0.01)
    bisecting, scanning = (ring.read_since(0) for ring in rings)
    assert rings[0].blanked_frames == rings[1].blanked_frames
    for field in ("frames", "timestamps", "valid", "seq"):
        np.testing.assert_array_equal(getattr(bisecting, field), getattr(scanning, field))


def test_blanking_written_frames_holds_the_frame_before_and_counts_them():
    ring = RingBuffer(20, GRID)
    ring.write(*_chunk(0, 10), arrival=1.0)
    assert ring.blank(0.035, 0.065) == 2  # frames 4, 5, 6; 6 was missing already
    window = ring.read_since(0)
    np.testing.assert_array_equal(window.frames[:, 0, 0], [0, 1, 2, 3, 3, 3, 3, 7, 8, 9])
    assert not window.valid[4:7].any()
    assert ring.blank(0.045, 0.085) == 2  # overlapping: 7 and 8 are new
    ring.write(*_chunk(10, 2), arrival=2.0)  # after both intervals: nothing more blanked
    assert ring.blanked_frames == 4


def test_a_late_blank_re_holds_the_values_later_frames_carried_over_from_its_frames():
    """Frames 2-3 carry a train's artefact (1000 up); electrode (0, 1) sends NaN from frame 3
    on, held at its last value, frame 5 never came (a placeholder holding frame 4 whole).
    All were written before the train's blank (a marker a link's latency late): the frames
    after it had carried the artefact on, measured frames on (0, 1) and the placeholder
    whole. Now each value written as held takes its channel's last value still measured."""
    ring = RingBuffer(10, GRID)
    index = np.arange(8)
    frames = (index[:, None, None] * 10 + np.arange(6).reshape(GRID.shape)).astype(np.float32)
    frames[2:4] += 1000.0
    held = np.zeros(frames.shape, dtype=np.bool_)
    held[3:, 0, 1] = True
    held[5] = True
    frames[3:, 0, 1] = frames[2, 0, 1]
    frames[5] = frames[4]
    ring.write(frames, index * 0.01, index != 5, arrival=1.0, held=held)
    assert ring.blank(0.015, 0.035) == 2
    window = ring.read_since(0)
    expected = (index[:, None, None] * 10 + np.arange(6).reshape(GRID.shape)).astype(np.float32)
    expected[2:4] = expected[1]
    expected[2:, 0, 1] = expected[1, 0, 1]
    expected[5] = expected[4]
    np.testing.assert_array_equal(window.frames, expected)
    np.testing.assert_array_equal(window.valid, [True, True, False, False, True, False, True, True])


def test_only_a_blank_that_changes_frames_already_written_counts_as_a_rewrite():
    """Stream mode's state starts over on a rewrite (it was fed what the frames were);
    frames blanked as they are written, or a blank that changes nothing, leave it."""
    ring = RingBuffer(20, GRID)
    ring.write(*_chunk(0, 10), arrival=1.0)
    assert ring.rewrites == 0
    ring.blank(0.2, 0.3)  # frames to come only
    ring.write(*_chunk(10, 12), arrival=2.0)
    assert ring.rewrites == 0 and ring.blanked_frames > 0
    ring.blank(0.035, 0.045)
    assert ring.rewrites == 1
    ring.blank(0.035, 0.045)  # blanked already: nothing changes
    assert ring.rewrites == 1


def test_a_blank_reaching_past_the_oldest_frame_held_holds_zeros():
    ring = RingBuffer(4, GRID)
    ring.write(*_chunk(0, 10), arrival=1.0)  # holds frames 6-9
    assert ring.blank(0.0, 0.075) == 1  # 6 and 7; 6 was missing already
    np.testing.assert_array_equal(ring.latest(4).frames[:, 0, 0], [0, 0, 8, 9])


@pytest.mark.parametrize(
    ("start", "end"),
    [(1.0, 0.5), (float("nan"), 1.0), (float("inf"), float("inf")), (0.0, float("nan"))],
)
def test_a_blanking_interval_that_is_not_one_is_refused(start, end):
    with pytest.raises(ValueError, match="must start at a finite time no later than its end"):
        RingBuffer(4, GRID).blank(start, end)


def test_an_open_blank_covers_every_frame_until_it_is_given_an_end():
    """Opened when a train may start, before it is known whether it did: frames arriving
    meanwhile are blanked as they come; once ended, frames after its end are measured."""
    ring = RingBuffer(40, GRID)
    ring.write(*_chunk(0, 10), arrival=1.0)
    assert not ring.blanking
    assert ring.blank(0.075) == 1  # frames 8 and 9 (9 was missing already); the end is open
    ring.write(*_chunk(10, 10), arrival=2.0)  # all blanked: no end yet
    assert not ring.latest(12).valid.any()
    ring.end_blank(0.075, 0.245)  # frames 8-24
    assert ring.blanking
    ring.write(*_chunk(20, 10), arrival=3.0)
    assert not ring.blanking  # a frame stamped after its end has been written
    window = ring.read_since(0)
    blanked = (window.seq >= 8) & (window.seq <= 24)
    assert not window.valid[blanked].any()
    np.testing.assert_array_equal(window.valid[~blanked], window.seq[~blanked] % 3 != 0)
    np.testing.assert_array_equal(window.frames[blanked, 0, 0], np.full(17, 7.0))
    with pytest.raises(ValueError, match="end must be finite"):
        ring.end_blank(0.075, float("inf"))


def test_a_slot_blanked_once_is_measured_again_when_a_later_frame_overwrites_it():
    """The ring reuses its slots: a frame written over one blanked a lap earlier is as it was
    written, and a later blank re-holds only what it blanks."""
    ring = RingBuffer(8, GRID)
    ring.blank(0.115, 0.135)  # frames 12-13, blanked as they arrive
    ring.write(*_chunk(0, 20), arrival=1.0)
    assert ring.blanked_frames == 1  # 12 was missing already
    ring.write(*_chunk(20, 6), arrival=2.0)  # 20 and 21 now in the slots of 12 and 13
    assert ring.blank(0.185, 0.195) == 1  # frame 19
    window = ring.latest(8)
    np.testing.assert_array_equal(window.seq, np.arange(18, 26))
    np.testing.assert_array_equal(window.frames[:, 0, 0], [18, 18, 20, 21, 22, 23, 24, 25])
    np.testing.assert_array_equal(window.valid, (np.arange(18, 26) % 3 != 0) & (window.seq != 19))
    assert ring.blanked_frames == 2


def test_the_frames_blanked_among_a_range_count_whenever_they_were_blanked():
    """What the artefact interlock is told: frames of a decision's range blanked before or
    after they were read, those missing for another reason not, those overwritten as
    unknown."""
    ring = RingBuffer(20, GRID)
    ring.write(*_chunk(0, 20), arrival=1.0)  # every third frame missing (a dropped sample)
    assert ring.blanked_among(0, 19) == 0
    ring.blank(0.035, 0.065)  # frames 4, 5, 6 (6 was missing already: blanked all the same)
    assert ring.blanked_among(0, 19) == 3
    assert ring.blanked_among(5, 5) == 1 and ring.blanked_among(7, 19) == 0
    ring.write(*_chunk(20, 5), arrival=2.0)  # frames 0-4 overwritten
    assert ring.blanked_among(0, 9) == 5 + 2  # five unknown, 5 and 6 still held blanked
    assert ring.blanked_among(10, 24) == 0


def test_the_values_read_as_held_are_those_written_held_and_still_their_frame_s():
    """``read_since(held=True)`` marks the values a write marked held, frame by frame; a slot
    overwritten by a write that held nothing reads as measured, not as its old frame's."""
    ring = RingBuffer(4, GRID)
    frames, stamps, _ = _chunk(0, 4)
    held = np.zeros((4, *GRID.shape), dtype=bool)
    held[1, 0, 2] = held[3, 1, 1] = True
    ring.write(frames, stamps, np.ones(4, bool), 0.0, held=held)
    np.testing.assert_array_equal(ring.read_since(0, held=True).held, held)
    np.testing.assert_array_equal(ring.read_since(2, max_frames=1, held=True).held, held[2:3])
    frames, stamps, _ = _chunk(4, 2)
    ring.write(frames, stamps, np.ones(2, bool), 1.0)  # over slots 0 and 1
    window = ring.read_since(0, held=True)
    np.testing.assert_array_equal(window.seq, [2, 3, 4, 5])
    np.testing.assert_array_equal(window.held, np.concatenate([held[2:], np.zeros_like(held[:2])]))
