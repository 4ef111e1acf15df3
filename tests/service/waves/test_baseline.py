"""``Baseline``: the lower quartile of recent robust s.d.s, its refresh cadence, dead channels.

Frames are white noise whose gain changes over time (a quiet background, louder stretches),
written once into a real ring; the baseline at a frame must read the window ending there.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from bench.data.synth import Background, PlaneWave, SynthConfig, generate_session
from service.core.grid import DEFAULT_GRID, NOMINAL_RATE_HZ
from service.core.live_channels import (
    DEAD_CHANNEL_FRACTION,
    NOISY_CHANNEL_FACTOR,
    check_channels,
    live_channels,
    noisy_channels,
)
from service.ingest.ring_buffer import RingBuffer
from service.waves.baseline import Baseline
from service.waves.estimator import WaveEstimator

FS = NOMINAL_RATE_HZ
WINDOW_S, EVERY_S = 0.5, 0.25
WINDOW, EVERY = round(WINDOW_S * FS), round(EVERY_S * FS)
NOISE_UV = 20.0


@pytest.fixture(scope="module")
def estimator() -> WaveEstimator:
    return WaveEstimator()


def _frames(gain: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """(len(gain), rows, cols) float32 white noise, frame k scaled by ``gain[k]``."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((gain.size, *DEFAULT_GRID.shape)) * NOISE_UV
    return (noise * gain[:, None, None]).astype(np.float32)


def _ring(frames: np.ndarray, valid: np.ndarray | None = None) -> RingBuffer:
    ring = RingBuffer(len(frames))
    valid = np.ones(len(frames), dtype=bool) if valid is None else valid
    ring.write(frames, np.arange(len(frames)) / FS, valid, 0.0)
    return ring


def _baseline(ring: RingBuffer, estimator: WaveEstimator, history_s: float) -> Baseline:
    return Baseline(
        ring, estimator, sample_rate_hz=FS, window_s=WINDOW_S, every_s=EVERY_S, history_s=history_s
    )


def test_the_unit_is_the_lower_quartile_of_the_estimates_over_the_history(estimator):
    refreshes = 12
    gain = np.repeat(np.random.default_rng(1).uniform(1.0, 4.0, refreshes + 2), EVERY)
    frames = _frames(gain)
    baseline = _baseline(_ring(frames), estimator, history_s=4 * EVERY_S)  # 4 estimates
    estimates = []
    for k in range(refreshes):
        seq = WINDOW - 1 + k * EVERY
        background = baseline.at(seq)
        estimates.append(estimator.robust_sd(frames[seq - WINDOW + 1 : seq + 1]))
        assert background.robust_sd_uv == pytest.approx(
            np.percentile(estimates[-4:], 25), rel=1e-12
        )
    # Older estimates have left the history (their quartile would differ).
    assert background.robust_sd_uv != pytest.approx(np.percentile(estimates, 25), rel=1e-6)


def test_it_refreshes_every_every_s_and_not_before(estimator):
    due = WINDOW - 1 + EVERY
    valid = np.ones(3 * WINDOW, dtype=bool)
    valid[EVERY + 5 : EVERY + 81] = False  # 76 of the 139 frames in the window that is due
    baseline = _baseline(_ring(_frames(np.ones(valid.size)), valid), estimator, history_s=60.0)
    assert baseline.at(WINDOW - 2) is None  # less than ``window_s`` of stream
    first = baseline.at(WINDOW - 1)
    assert first is not None
    assert baseline.at(due - 1) is first
    # Due, but too few valid frames: skipped, the last baseline stands ...
    assert baseline.at(due) is first
    # ... and it is tried again at the next call (here 73 valid), not ``every_s`` later.
    again = baseline.at(due + 15)
    assert again is not first
    assert again.robust_sd_uv != first.robust_sd_uv
    assert baseline.at(due + 15 + EVERY - 1) is again
    assert baseline.at(due + 15 + EVERY) is not again


def test_it_is_none_until_a_window_with_enough_valid_frames(estimator):
    gain = np.ones(2 * WINDOW)
    valid = np.ones(gain.size, dtype=bool)
    valid[: WINDOW - WINDOW // 2 + 1] = False  # one frame short of half the window valid
    baseline = _baseline(_ring(_frames(gain), valid), estimator, history_s=60.0)
    assert baseline.at(WINDOW - 1) is None
    assert baseline.at(WINDOW) is not None  # half the window valid is enough


def test_a_seizure_lasting_many_seconds_does_not_become_its_own_baseline(estimator):
    quiet_s, seizure_s, history_s = 10.0, 5.0, 10.0
    gain = np.r_[np.ones(round(quiet_s * FS)), np.full(round(seizure_s * FS), 8.0)]
    frames = _frames(gain)
    baseline = _baseline(_ring(frames), estimator, history_s=history_s)
    for seq in range(WINDOW - 1, gain.size, EVERY):  # every refresh, as the loop makes them
        unit = baseline.at(seq).robust_sd_uv
    quiet = estimator.robust_sd(frames[: round(quiet_s * FS)])
    during = estimator.robust_sd(frames[-WINDOW:])
    assert during > 6 * quiet  # the data: a seizure, 5 s long, at the end
    # Half the history is the seizure: the unit is still the quiet background's.
    assert unit == pytest.approx(quiet, rel=0.1)


def test_dead_channels_are_found_and_left_out_of_the_estimate(estimator):
    frames = _frames(np.ones(WINDOW))
    dead = [(0, 0), (5, 7), (17, 19)]
    for row, col in dead[:2]:
        frames[:, row, col] = 0.0  # a broken contact: flat
    frames[:, 17, 19] *= 0.01  # or nearly
    frames[:, 9, 9] *= 0.2  # a weak contact is still live
    background = _baseline(_ring(frames), estimator, history_s=60.0).at(WINDOW - 1)
    live = np.ones(DEFAULT_GRID.shape, dtype=bool)
    for row, col in dead:
        live[row, col] = False
    np.testing.assert_array_equal(background.live, live)
    assert background.masked_channels == len(dead)
    assert background.robust_sd_uv == estimator.robust_sd(frames, live)
    assert background.robust_sd_uv != estimator.robust_sd(frames)


@pytest.mark.parametrize(
    ("frames_count", "with_nan"),
    [(555, False), (556, False), (556, True)],  # one middle value or two; a NaN sample
)
def test_dead_channels_are_those_of_numpys_median_absolute_deviation(frames_count, with_nan):
    """``live_channels`` sorts each channel's frames instead of calling ``np.median`` along
    time; it must find what numpy's medians find (a NaN sample makes numpy's NaN too)."""
    frames = _frames(np.linspace(0.5, 2.0, frames_count), seed=3)
    frames[:, 2, 3] *= 1e-3  # flat: dead
    if with_nan:
        frames[7, 8, 9] = np.nan
    spread = np.median(np.abs(frames - np.median(frames, axis=0)), axis=0)
    expected = spread > DEAD_CHANNEL_FRACTION * np.median(spread)
    np.testing.assert_array_equal(live_channels(frames), expected)
    if not with_nan:  # the comparison is not between two all-False masks
        assert not expected[2, 3] and expected.sum() == expected.size - 1


def test_a_window_partly_overwritten_reads_no_frame_after_the_decision_s_input(estimator):
    """The loop asks for the baseline of a decision on frames up to ``input_seq`` after the
    ingestor wrote on: in a ring no longer than the window (``[ingest] ring_seconds`` may
    equal ``[loop] robust_sd_seconds``) the oldest frames asked for are gone. The read
    started at the oldest frame held and ran ``window`` frames on, past ``input_seq``, into
    frames the decision is not on (here ten times louder). It reads the frames held up to
    ``input_seq``."""
    later = WINDOW // 3
    gain = np.concatenate([np.ones(WINDOW), np.full(later, 10.0)])
    frames = _frames(gain)
    ring = RingBuffer(WINDOW)
    ring.write(frames[:WINDOW], np.arange(WINDOW) / FS, np.ones(WINDOW, dtype=bool), 0.0)
    ring.write(frames[WINDOW:], np.arange(WINDOW, len(frames)) / FS, np.ones(later, bool), 0.0)
    baseline = _baseline(ring, estimator, history_s=EVERY_S)
    background = baseline.at(WINDOW - 1)
    assert background.robust_sd_uv == pytest.approx(
        estimator.robust_sd(frames[later:WINDOW]), rel=1e-12
    )


def test_a_short_window_with_too_few_valid_frames_for_an_estimate_is_skipped(estimator):
    """``window_s`` of 0.1 s is 28 frames, and the refresh's rule (at least half of them valid)
    lets 14 through, fewer than the 16 measured frames ``robust_sd`` needs: such a refresh is
    skipped like any other with too few valid frames, not a ValueError that ends the wave
    stage at every prediction."""
    window = round(0.1 * FS)
    valid = np.ones(window, dtype=bool)
    valid[: window - window // 2] = False  # 14 of 28 valid
    ring = _ring(_frames(np.ones(window)), valid)
    baseline = Baseline(ring, estimator, sample_rate_hz=FS, window_s=0.1, every_s=0.05, history_s=1)
    assert baseline.at(window - 1) is None


def _plane_wave_frames(seconds: float, direction_deg: float, *, seed: int) -> np.ndarray:
    """A 10 Hz, 0.2 m/s plane wave 10 dB over a spatially correlated 1/f background."""
    config = SynthConfig(
        duration_s=seconds,
        seed=seed,
        background=Background(rms_uv=NOISE_UV),
        episodes=(
            PlaneWave(
                start_s=0.0,
                duration_s=seconds,
                amplitude_uv=NOISE_UV * math.sqrt(2) * 10**0.5,
                frequency_hz=10.0,
                speed_mps=0.2,
                direction_deg=direction_deg,
            ),
        ),
    )
    return generate_session(config).frames


@pytest.mark.parametrize("noise_uv", [1e4, 1e6])
def test_a_loud_channel_unlike_its_neighbours_is_left_out_and_the_wave_keeps_its_direction(
    estimator, noise_uv
):
    """A contact that picks up noise hundreds of times the cortex's used to be kept: its
    products with every other electrode outweighed theirs. On these 10 blocks a tenth of
    the frames were 102° (1e4 µV) and 178° (1e6 µV) off in direction, the PGD fell from
    0.97 to 0.76-0.78, and at 1e6 µV the amplitude read 28 robust s.d.s: the policy's
    amplitude check passed on noise."""
    frames = _plane_wave_frames(2.0, 45.0, seed=4)
    frames[:, 6, 11] += np.random.default_rng(5).normal(0.0, noise_uv, len(frames))
    background = _baseline(_ring(frames), estimator, history_s=60.0).at(WINDOW - 1)
    expected = np.ones(DEFAULT_GRID.shape, dtype=bool)
    expected[6, 11] = False
    np.testing.assert_array_equal(background.live, expected)
    errors, pgd, amplitude = [], [], []
    for start in range(WINDOW, len(frames) - estimator.min_frames, 40):
        estimate = estimator.estimate(frames[start : start + estimator.min_frames], expected)
        tail = estimate.predicted
        errors.append(np.abs((estimate.direction_deg[tail] - 45.0 + 180.0) % 360.0 - 180.0))
        pgd.append(estimate.pgd[tail])
        amplitude.append(estimate.amplitude_uv[tail] / background.robust_sd_uv)
    assert len(errors) == 10
    assert np.percentile(errors, 90) < 10.0
    assert np.median(pgd) > 0.9
    assert np.median(amplitude) < 3.0


def test_noisy_and_dead_channels_are_counted_apart(estimator):
    frames = _plane_wave_frames(1.0, 0.0, seed=6)
    frames[:, 2, 3] = 0.0
    frames[:, 17, 0] += np.random.default_rng(7).normal(0.0, 1e4, len(frames))  # a corner
    baseline = _baseline(_ring(frames), estimator, history_s=60.0)
    background = baseline.at(WINDOW - 1)
    assert (baseline.dead_electrodes, baseline.noisy_electrodes) == (((2, 3),), ((17, 0),))
    assert (baseline.dead_channels, baseline.noisy_channels) == (1, 1)
    assert background.masked_channels == 2


@pytest.mark.parametrize("reach_sd", [1.2, 0.5])
def test_a_loud_source_its_neighbours_also_see_is_kept(reach_sd):
    """A seizure's focus is loud on a few electrodes and, at 0.5 mm pitch, seen by those
    around them: it is cortex, and the wave stage must see it. Here a source 30 times the
    background, fading over a millimetre or so (``reach_sd`` electrodes: at 0.5 its nearest
    neighbours see 14 % of it), is laid on a white background (no two electrodes alike but
    for it)."""
    frames = _frames(np.ones(WINDOW), seed=8)
    rows, cols = np.indices(DEFAULT_GRID.shape)
    reach = np.exp(-((rows - 9) ** 2 + (cols - 9) ** 2) / (2 * reach_sd**2))
    source = np.random.default_rng(9).standard_normal(WINDOW) * 30 * NOISE_UV
    frames += (source[:, None, None] * reach).astype(np.float32)
    check = check_channels(frames)
    spread = np.median(np.abs(frames - np.median(frames, axis=0)), axis=0)
    assert spread[9, 9] > NOISY_CHANNEL_FACTOR * np.median(spread)  # it is loud
    assert not check.noisy.any() and not check.dead.any()


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_a_channel_unlike_its_neighbours_is_noisy_only_when_loud(factor):
    """White noise: no electrode is like another. Only loudness beyond the factor makes
    one noisy."""
    frames = _frames(np.ones(WINDOW), seed=10)
    frames[:, 4, 4] *= factor * NOISY_CHANNEL_FACTOR
    check = check_channels(frames)
    expected = np.zeros(DEFAULT_GRID.shape, dtype=bool)
    expected[4, 4] = factor > 1
    np.testing.assert_array_equal(check.noisy, expected)


def test_a_loud_channel_whose_neighbours_are_all_dead_is_noisy():
    """Nothing around it vouches for it (the dead count as nothing, not as flat signals)."""
    frames = _frames(np.ones(WINDOW), seed=11)
    frames[:, 0, 1] = frames[:, 1, 0] = frames[:, 1, 1] = 0.0
    frames[:, 0, 0] *= 100
    check = check_channels(frames)
    assert check.noisy[0, 0] and check.noisy.sum() == 1 and check.dead.sum() == 3


def test_a_grid_mostly_flat_leaves_no_clean_channel_noisy():
    """With more than half the grid flat (a connector half off, under a ``min_live_fraction``
    below 0.5) the median channel is a flat one: every channel with signal was 'loud' against
    it, and a clean one among dead neighbours, unlike the few live ones left around it, was
    called noisy. Loud is against the median of the channels that are not dead."""
    session = generate_session(SynthConfig(duration_s=2.0, seed=0, episodes=[]))
    frames = session.frames.astype(np.float32)
    rng = np.random.default_rng(2)
    flat = rng.choice(frames[0].size, round(0.7 * frames[0].size), replace=False)
    frames.reshape(len(frames), -1)[:, flat] = 5.0
    for window in (frames, frames[-48:]):  # a baseline refresh's, a block's
        check = check_channels(window)
        assert check.dead.sum() == flat.size
        assert not check.noisy.any(), np.argwhere(check.noisy).tolist()


def test_a_focal_discharge_is_kept_and_bridged_noise_is_left_out():
    """A loud focal discharge (spike-and-wave 500 times the background's robust spread at the
    centre of a Gaussian profile of 0.5 pitch, its neighbours seeing 14 % of it) is like its
    neighbours: kept, in the 2 s of a refresh and in every 48-frame block. The same noise on
    two bridged contacts is unlike the rest of their neighbours: both left out."""
    frames = generate_session(SynthConfig(duration_s=2.0, seed=0, episodes=[])).frames
    frames = frames.astype(np.float32)
    spread = np.median(np.abs(frames - np.median(frames, axis=0)))
    rows, cols = np.mgrid[: frames.shape[1], : frames.shape[2]]
    profile = np.exp(-((rows - 9) ** 2 + (cols - 10) ** 2) / (2 * 0.5**2))
    phase = (np.arange(len(frames)) / FS * 3.0) % 1.0
    shape = np.exp(-((phase / 0.03) ** 2)) - 0.3 * np.sin(
        np.pi * np.clip((phase - 0.3) / 0.7, 0, 1)
    )
    focal = frames + (500 * spread * profile)[None] * shape[:, None, None].astype(np.float32)
    for start in [None, *range(0, len(frames) - 48, 48)]:
        window = focal if start is None else focal[start : start + 48]
        assert not check_channels(window).noisy.any(), start
    bridged = frames.copy()
    bridged[:, 5, 5] += 100 * spread * np.random.default_rng(3).standard_normal(len(frames))
    bridged[:, 5, 6] = bridged[:, 5, 5]
    assert np.argwhere(check_channels(bridged).noisy).tolist() == [[5, 5], [5, 6]]


@pytest.mark.parametrize("drift_uv_per_s", [300.0, 3000.0])
def test_a_drifting_channel_is_not_noisy(drift_uv_per_s):
    """An electrode settling drifts slowly, or sits at an offset: the wave estimate's band-pass
    removes both, so the channel is as good as its neighbours. Judged on the frames
    themselves, a drift of 3000 µV/s over 2 s here (300 µV/s on a quieter background) read as
    a loud channel unlike its neighbours."""
    frames = _plane_wave_frames(2.0, 30.0, seed=12)
    t = np.arange(len(frames)) / FS
    frames[:, 7, 7] += (drift_uv_per_s * t).astype(np.float32)
    frames[:, 3, 3] += 1e5  # an offset
    check = check_channels(frames)
    assert not check.noisy.any() and not check.dead.any()


def test_a_flat_channel_judged_live_counts_as_nothing_beside_a_noisy_one():
    """Before the first refresh a decision judges every channel live, a flat one too: it has
    no spread to be measured in, and dividing by it warned and spread NaN into its noisy
    neighbour's correlation."""
    frames = _frames(np.ones(48), seed=13)
    frames[:, 5, 5] = 0.0
    frames[:, 5, 6] *= 100
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        noisy = noisy_channels(frames, np.ones(DEFAULT_GRID.shape, dtype=bool))
    assert noisy[5, 6] and noisy.sum() == 1
