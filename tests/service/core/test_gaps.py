import numpy as np
import pytest

from service.core.gaps import (
    MAX_GAP_FRAMES,
    fill_gaps,
    find_gaps,
    is_regular,
    placed_at,
    timestamp_steps,
)

PERIOD = 1 / 277.78


def _steps(previous, timestamps):
    return timestamp_steps(previous, timestamps, PERIOD, np.empty(len(timestamps)))


@pytest.mark.parametrize(
    ("previous", "timestamps", "regular"),
    [
        (None, [0.0, PERIOD, 2 * PERIOD], True),
        (-PERIOD, [0.0, 1.4 * PERIOD], True),  # jitter below the 1.5-period threshold
        (-PERIOD, [0.0, 1.6 * PERIOD], False),  # a gap
        (0.0, [0.0, PERIOD], False),  # no advance
        (None, [0.0, -PERIOD], False),  # backwards
        (-3 * PERIOD, [0.0], False),  # gap from the previous chunk
    ],
)
def test_is_regular_matches_the_vectorised_check(previous, timestamps, regular):
    assert is_regular(previous, timestamps, PERIOD) is regular
    steps = _steps(previous, np.array(timestamps))
    assert bool(np.all((steps > 0) & (steps <= 1.5 * PERIOD))) is regular


def test_find_gaps_counts_missing_frames_from_the_nominal_rate_despite_jitter():
    # samples 0,1,2 then 5 (2 missing), then 6, then 10 (3 missing), with jitter
    t = np.array([0, 1, 2, 5, 6, 10], dtype=float) * PERIOD
    t += np.array([0, 0.1, -0.2, 0.2, -0.1, 0.3]) * PERIOD
    positions, missing = find_gaps(_steps(None, t), PERIOD)
    np.testing.assert_array_equal(positions, [3, 5])
    np.testing.assert_array_equal(missing, [2, 3])


@pytest.mark.parametrize("jump_s", [1e6, 1e300])
def test_a_clock_jump_past_int64_counts_as_the_most_frames_not_a_wrapped_number(jump_s):
    """A source's clock stepped forward by days (or garbage, 1e300 s): the count is capped
    (the ring is flushed, as by any gap longer than it) rather than cast past int64, which
    warned and, wrapped, counted 9223372036854775807 frames missing."""
    positions, missing = find_gaps(_steps(0.0, np.array([jump_s])), PERIOD)
    np.testing.assert_array_equal(positions, [0])
    assert 0 < missing[0] <= MAX_GAP_FRAMES
    assert missing[0] == min(round(jump_s / PERIOD) - 1, MAX_GAP_FRAMES)


def test_gap_across_chunk_boundary_is_at_position_zero():
    positions, missing = find_gaps(_steps(0.0, np.array([4 * PERIOD, 5 * PERIOD])), PERIOD)
    np.testing.assert_array_equal(positions, [0])
    np.testing.assert_array_equal(missing, [3])


def _filled(frames, t, *, previous_frame, previous_timestamp, max_fill=100, valid=None):
    """One chunk's gaps found and filled, as the ingestor does: ``fill_gaps``'s (frames,
    times, validity), and each gap's missing count."""
    positions, missing = find_gaps(_steps(previous_timestamp, t), PERIOD)
    filled = fill_gaps(
        frames, t, positions, missing,
        previous_frame=previous_frame, previous_timestamp=previous_timestamp, period=PERIOD,
        max_fill=max_fill, valid=valid,
    )  # fmt: skip
    return filled, missing


def test_fill_gaps_inserts_invalid_held_frames_at_nominal_times():
    frames = np.arange(4, dtype=np.float32).reshape(4, 1, 1) + 10
    t = np.array([0, 1, 4, 5], dtype=float) * PERIOD
    (out_frames, out_t, valid), _ = _filled(
        frames, t, previous_frame=np.full((1, 1), 9, np.float32), previous_timestamp=-PERIOD
    )
    np.testing.assert_array_equal(out_frames[:, 0, 0], [10, 11, 11, 11, 12, 13])
    np.testing.assert_allclose(out_t / PERIOD, [0, 1, 2, 3, 4, 5])
    np.testing.assert_array_equal(valid, [True, True, False, False, True, True])


def test_fill_gaps_keeps_only_the_newest_placeholders_of_a_long_gap():
    frames = np.zeros((2, 1, 1), np.float32)
    t = np.array([0.0, 100 * PERIOD])
    (_, out_t, valid), missing = _filled(
        frames, t, previous_frame=frames[0], previous_timestamp=None, max_fill=5
    )
    assert missing.tolist() == [99]
    np.testing.assert_allclose(out_t / PERIOD, [0, 95, 96, 97, 98, 99, 100])
    np.testing.assert_array_equal(valid, [True] + [False] * 5 + [True])


def test_fill_gaps_keeps_the_validity_of_the_frames_it_is_given():
    """A frame already missing (a non-finite sample, held over by the ingestor) stays missing
    on either side of a gap's placeholders."""
    frames = np.arange(4, dtype=np.float32).reshape(4, 1, 1)
    t = np.array([0, 1, 4, 5], dtype=float) * PERIOD
    (_, _, valid), _ = _filled(
        frames, t, previous_frame=frames[0], previous_timestamp=-PERIOD,
        valid=np.array([True, False, True, False]),
    )  # fmt: skip
    np.testing.assert_array_equal(valid, [True, False, False, False, True, False])


@pytest.mark.parametrize("max_fill", [1, 2, 8])
def test_placed_at_is_where_fill_gaps_puts_each_frame_it_was_given(max_fill):
    """A gap at the chunk's start, one in the middle and one longer than ``max_fill``."""
    t = np.array([3, 4, 7, 8, 9, 20], dtype=float) * PERIOD
    positions, missing = find_gaps(_steps(0.0, t), PERIOD)
    given = np.arange(10.0, 16.0)[:, None]
    frames, _, valid = fill_gaps(
        given,
        t,
        positions,
        missing,
        previous_frame=np.array([-1.0]),
        previous_timestamp=0.0,
        period=PERIOD,
        max_fill=max_fill,
    )
    placed = placed_at(len(t), positions, missing, max_fill)
    np.testing.assert_array_equal(frames[placed], given)
    assert valid[placed].all() and valid.sum() == len(t)
