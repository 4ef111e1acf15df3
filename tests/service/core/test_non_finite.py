"""The rule for NaN and infinite values: held per channel while few, a missing frame when many."""

import numpy as np
import pytest

from service.core import non_finite
from service.core.non_finite import hold_non_finite, kept_as_data


def _frames(n: int, rows: int = 3, cols: int = 4) -> np.ndarray:
    """Distinct finite values: frame k, cell c holds 100 k + c."""
    cells = np.arange(rows * cols, dtype=np.float32).reshape(rows, cols)
    return np.arange(n, dtype=np.float32)[:, None, None] * 100 + cells


def test_a_channel_that_never_sends_a_finite_value_is_held_flat_and_the_frames_stay_data():
    frames = _frames(5)
    frames[:, 1, 2] = np.nan
    expected = _frames(5)
    expected[:, 1, 2] = 0.0  # nothing finite before it: zeros, as with no previous frame
    result = hold_non_finite(frames, None, 0.1)
    np.testing.assert_array_equal(frames, expected)
    assert result.valid.all()
    assert result.held[1, 2] == 5 and result.held.sum() == 5
    assert np.argwhere(result.newest).tolist() == [[1, 2]]


def test_a_value_is_held_at_its_channels_last_finite_value_from_the_previous_frame_on():
    frames = _frames(4)
    previous = np.full((3, 4), -7.0, dtype=np.float32)
    frames[0:2, 0, 0] = np.inf
    frames[2, 2, 3] = -np.inf
    frames[3, 2, 3] = np.nan
    result = hold_non_finite(frames, previous, 0.1)
    assert frames[0, 0, 0] == frames[1, 0, 0] == -7.0
    assert frames[2, 2, 3] == frames[3, 2, 3] == _frames(2)[1, 2, 3]
    assert result.valid.all() and result.held.sum() == 4
    assert np.argwhere(result.newest).tolist() == [[2, 3]]


def test_a_frame_with_more_non_finite_channels_than_the_fraction_is_missing_and_held_whole():
    """2 of 12 channels is over 0.1: that frame is missing and repeats the frame before it,
    its finite values included, as a gap's placeholder does; the frame after holds its one
    bad channel at the value from before the missing frame."""
    frames = _frames(4)
    frames[2, 0, :2] = np.nan
    frames[3, 0, 1] = np.nan
    result = hold_non_finite(frames, None, 0.1)
    np.testing.assert_array_equal(result.valid, [True, True, False, True])
    np.testing.assert_array_equal(frames[2], _frames(2)[1])
    assert frames[3, 0, 1] == _frames(2)[1, 0, 1]
    assert frames[3, 0, 0] == _frames(4)[3, 0, 0]
    assert result.held.sum() == 1  # values of the missing frame are not counted as held


def test_a_last_frame_kept_as_missing_holds_no_electrode():
    """A connector off: most channels NaN, the frame missing. /status's held electrodes and
    their gauge (the newest frame's) name none, rather than every electrode it lost, and the
    electrodes-held alert does not fire for what is a stream of missing frames."""
    frames = _frames(3)
    frames[1, 1, 2] = np.nan  # one channel held in a frame kept as data
    frames[2, 0, :2] = np.nan  # 2 of 12: the last frame is missing
    result = hold_non_finite(frames, None, 0.1)
    np.testing.assert_array_equal(result.valid, [True, True, False])
    assert not result.newest.any()
    assert result.held.sum() == 1


def test_at_most_the_fraction_stays_data_and_zero_makes_any_non_finite_value_missing():
    bad = np.zeros((3, 2, 5), dtype=np.bool_)
    bad[1, 0, 0] = True  # 1 of 10 = 0.1 exactly
    bad[2, 0, :2] = True  # 0.2
    np.testing.assert_array_equal(kept_as_data(bad, 0.1), [True, True, False])
    np.testing.assert_array_equal(kept_as_data(bad, 0.0), [True, False, False])


def test_a_long_recording_holds_across_the_blocks_it_is_processed_in(monkeypatch):
    monkeypatch.setattr(non_finite, "_BLOCK_FRAMES", 3)
    frames = _frames(8)
    frames[1:, 2, 1] = np.nan  # from frame 1 on, across two block boundaries
    frames[5] = np.nan  # a missing frame inside the second block
    result = hold_non_finite(frames, None, 0.1)
    assert np.isfinite(frames).all()
    np.testing.assert_array_equal(frames[1:, 2, 1], np.full(7, _frames(1)[0, 2, 1]))
    np.testing.assert_array_equal(frames[5], frames[4])
    np.testing.assert_array_equal(result.valid, [k != 5 for k in range(8)])
    assert result.held[2, 1] == 6
    assert result.newest[2, 1] and result.newest.sum() == 1


def _held_frame_by_frame(frames: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The rule as written, one frame after another: a kept frame's bad values are the frame
    before's (as held), a missing frame is the frame before whole."""
    out, valid = frames.copy(), np.ones(len(frames), dtype=np.bool_)
    before = np.zeros(frames.shape[1:], dtype=frames.dtype)
    for k, frame in enumerate(out):
        bad = ~np.isfinite(frame)
        valid[k] = bad.sum() <= fraction * bad.size
        frame[...] = np.where(bad | ~valid[k], before, frame)
        before = frame
    return out, valid


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("block", [3, 4096])
def test_the_held_frames_are_the_rule_applied_one_frame_after_another(fraction, block, monkeypatch):
    monkeypatch.setattr(non_finite, "_BLOCK_FRAMES", block)
    rng = np.random.default_rng(0)
    frames = _frames(60)
    frames[rng.random(frames.shape) < 0.08] = np.nan
    frames[:, 0, 3] = np.inf  # a broken contact throughout
    frames[rng.random(60) < 0.2] = np.nan  # whole frames lost
    expected, valid = _held_frame_by_frame(frames, fraction)
    result = hold_non_finite(frames, None, fraction)
    assert np.isfinite(frames).all()
    np.testing.assert_array_equal(frames, expected)
    np.testing.assert_array_equal(result.valid, valid)
