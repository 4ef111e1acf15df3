"""Robust per-electrode statistics: what they are, what they ignore, and that the causal
schedule training and replay use never looks ahead."""

import numpy as np
import pytest

from service.core.robust_scale import (
    MAD_TO_SIGMA,
    MAX_STAT_FRAMES,
    SCALE_FLOOR_FRACTION,
    SCALE_SIGMAS,
    RobustScale,
    causal_stats,
    normalisation_kind,
    refresh_boundary,
    robust_stats,
)


def _frames(n=300, seed=0):
    rng = np.random.default_rng(seed)
    gains = rng.uniform(0.5, 20.0, size=(1, 4, 5))
    offsets = rng.uniform(-100, 100, size=(1, 4, 5))
    return (rng.standard_t(3, size=(n, 4, 5)) * gains + offsets).astype(np.float32)


def test_stats_are_numpys_median_and_scaled_mad():
    frames = _frames()
    centre, scale = robust_stats(frames)
    median = np.median(frames, axis=0)
    mad = np.median(np.abs(frames - median), axis=0)
    np.testing.assert_allclose(centre, median, rtol=1e-6)
    np.testing.assert_allclose(scale, SCALE_SIGMAS * MAD_TO_SIGMA * mad, rtol=1e-5)
    assert centre.dtype == scale.dtype == np.float32 and centre.shape == (4, 5)


def test_on_gaussian_data_the_scale_is_four_standard_deviations():
    frames = np.random.default_rng(1).normal(3.0, 7.0, size=(2000, 4, 5)).astype(np.float32)
    _, scale = robust_stats(frames)
    np.testing.assert_allclose(scale, 4 * 7.0, rtol=0.1)


def test_nans_and_invalid_frames_are_ignored():
    frames = _frames()
    want = robust_stats(frames)
    garbage = np.full((50, 4, 5), 1e6, dtype=np.float32)
    mixed = np.concatenate([frames[:100], garbage, frames[100:]])
    valid = np.ones(len(mixed), dtype=bool)
    valid[100:150] = False
    for got in (robust_stats(mixed, valid),):
        np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
        np.testing.assert_allclose(got[1], want[1], rtol=1e-6)
    holes = frames.copy()
    holes[::7, 1, 2] = np.nan
    centre, scale = robust_stats(holes)
    kept = frames[np.arange(len(frames)) % 7 != 0, 1, 2]
    assert centre[1, 2] == pytest.approx(np.median(kept), rel=1e-6)
    assert np.isfinite(scale).all()


def test_dead_and_missing_channels_are_floored_not_divided_by_zero():
    frames = _frames()
    frames[:, 0, 0] = 5.0  # flat
    frames[:, 0, 1] = np.nan  # never delivered a value
    centre, scale = robust_stats(frames)
    others = frames.reshape(len(frames), -1)[:, 2:]
    live = np.median(np.abs(others - np.median(others, axis=0)), axis=0)
    floor = SCALE_SIGMAS * MAD_TO_SIGMA * SCALE_FLOOR_FRACTION * np.median(live)
    assert scale[0, 0] == pytest.approx(floor, rel=1e-5) and centre[0, 0] == 5.0
    assert scale[0, 1] == pytest.approx(floor, rel=1e-5) and centre[0, 1] == 0.0
    assert (scale > 0).all()


def test_too_few_frames_or_nothing_varying_gives_no_stats():
    frames = _frames(10)
    assert robust_stats(frames, min_frames=11) is None
    assert robust_stats(frames, np.arange(10) < 3, min_frames=4) is None
    assert robust_stats(np.ones((50, 4, 5), dtype=np.float32)) is None
    assert robust_stats(frames, min_frames=10) is not None


def test_a_long_window_is_thinned_from_its_newest_frame():
    frames = _frames(MAX_STAT_FRAMES * 2 + 1)
    thinned = frames[::-3]
    for got, want in zip(robust_stats(frames), robust_stats(thinned), strict=True):
        np.testing.assert_array_equal(got, want)


def test_causal_stats_follow_the_refresh_schedule_and_never_look_ahead():
    frames, window, update, least = _frames(400), 64, 16, 20
    valid = np.ones(len(frames), dtype=bool)
    valid[100:130] = False
    stats = causal_stats(frames, valid, window=window, update=update, min_frames=least)
    assert (stats.index[:31] == -1).all() and stats.index[31] == 0  # 32 frames >= 20
    for t in (31, 47, 100, 140, 399):
        b = refresh_boundary(t, update)
        assert b <= t + 1 and b % update == 0
        lo = max(0, b - window)
        want = robust_stats(frames[lo:b], valid[lo:b], least)
        got = stats.at(t)
        if want is None:  # kept the previous refresh's
            assert stats.index[t] == stats.index[b - update - 1]
            continue
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        # Whatever comes after frame t changes nothing about the statistics at t.
        future = frames.copy()
        future[t + 1 :] *= 1000.0
        again = causal_stats(future, valid, window=window, update=update, min_frames=least)
        np.testing.assert_array_equal(again.at(t)[1], got[1])


def test_schedule_round_trips_and_bad_ones_are_refused():
    scale = RobustScale(window_s=20.0, update_s=0.5, min_s=2.0)
    assert RobustScale.from_dict(scale.to_dict()) == scale
    assert normalisation_kind({"mean": [], "scale": []}) == "fixed"
    assert scale.frames(277.78) == (5556, 139, 556)
    with pytest.raises(ValueError, match="normalisation kind must be one of"):
        normalisation_kind({"kind": "zscore"})
    with pytest.raises(ValueError, match="must be <= 'window_s'"):
        RobustScale(window_s=1.0, update_s=2.0)
    with pytest.raises(ValueError, match="exactly the keys"):
        RobustScale.from_dict({"kind": "robust-online", "window_s": 30.0})
    with pytest.raises(ValueError, match="'window_s' must be a finite number > 0"):
        RobustScale.from_dict({**scale.to_dict(), "window_s": -1.0})
