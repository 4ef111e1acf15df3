"""The replay's wave comparison: estimates on the frames that really followed a window."""

import numpy as np
import pytest

from bench.data.synth import PlaneWave, SynthConfig, generate_session
from bench.replay._waves import block_summary, live_channels, true_frame_waves, truth_per_window
from bench.replay.timeline import Timeline, lay_out
from service.waves.settings import WaveSettings

RATE = 277.78


def _timeline(n: int, placeholders: slice) -> Timeline:
    """``n`` slots of a 10 Hz plane wave, the slots ``placeholders`` held (the frame before
    repeated, marked invalid) as a dropped sample leaves them."""
    t = np.arange(n) / RATE
    rows, cols = np.meshgrid(np.arange(18), np.arange(20), indexing="ij")
    phase = 2 * np.pi * (10.0 * t[:, None, None] - 0.1 * (rows + cols)[None])
    frames = (50.0 * np.sin(phase)).astype(np.float32)
    valid = np.ones(n, dtype=bool)
    valid[placeholders] = False
    for slot in range(n)[placeholders]:
        frames[slot] = frames[slot - 1]
    return Timeline(
        frames=frames,
        times_s=t,
        valid=valid,
        source_index=np.where(valid, np.arange(n), -1),
        sample_rate_hz=RATE,
        truth=None,
        held=np.zeros((18, 20), dtype=np.int64),
        blanked=np.zeros(n, dtype=bool),
        trains=0,
    )


def test_true_frame_estimates_skip_windows_whose_future_holds_a_placeholder():
    """A placeholder is not the truth (as the prediction scorer says): a window whose 16
    following slots hold one has no true frames to estimate on, and the next window with all
    16 measured takes its place."""
    timeline = _timeline(400, slice(205, 208))
    true = true_frame_waves(
        timeline, np.array([199, 300, 301]), WaveSettings(), live=live_channels(timeline)
    )
    assert 199 not in true.seq
    assert true.seq.tolist() == [300]
    assert np.isfinite(true.speed_mps).all()


def test_a_windows_mean_direction_leaves_out_frames_that_have_none():
    """The report's wave figures plot each window's median speed and mean direction. A frame
    with no phase gradient (infinite speed) has no direction (the estimator's angle of a zero
    vector, -180, is not a heading), and neither has a window where no frame travels."""
    speed = np.array([[0.3, 0.3, np.inf, np.inf], [np.inf, np.inf, np.inf, np.inf]])
    direction = np.array([[80.0, 100.0, -180.0, -180.0], [-180.0, -180.0, -180.0, -180.0]])
    median, mean = block_summary(speed, direction)
    assert median[0] == pytest.approx(0.3) and np.isnan(median[1])
    assert mean[0] == pytest.approx(90.0)
    assert np.isnan(mean[1])


def test_the_ground_truth_ends_with_the_session():
    """A window near the session's end predicts frames the session never recorded: they have
    no ground truth (NaN, label -1), not the last recorded frame's, which the predictions past
    the end were scored against."""
    wave = PlaneWave(start_s=0.0, duration_s=0.5, amplitude_uv=50.0, frequency_hz=10.0,
                     speed_mps=0.3, direction_deg=45.0)  # fmt: skip
    session = generate_session(SynthConfig(duration_s=0.5, seed=1, episodes=(wave,)))
    timeline = lay_out(session, session.sample_rate_hz, len(session.frames))
    n = len(timeline)
    speed, direction, label = truth_per_window(timeline, np.array([n - 17, n - 5]))
    assert np.isfinite(speed[0]).all() and (label[0] >= 0).all()
    np.testing.assert_allclose(speed[1, :4], 0.3, rtol=1e-6)
    assert np.isnan(speed[1, 4:]).all() and np.isnan(direction[1, 4:]).all()
    assert (label[1, 4:] == -1).all()


def test_a_windows_summary_leaves_out_frames_that_carry_no_wave():
    """The report plots each window's speed and direction; for the estimates they are taken
    over the frames that carry a wave, as the daemon's summary takes them
    (``service.waves.summary.carries_wave``). A plane wave (45°, 0.3 m/s) for 1 s, then the
    background alone: the background's windows read headings of noise (21°, 8°, -120°, -31°
    here), plotted as if a wave took them; they have none."""
    wave = PlaneWave(start_s=0.0, duration_s=1.0, amplitude_uv=80.0, frequency_hz=8.0,
                     speed_mps=0.3, direction_deg=45.0)  # fmt: skip
    session = generate_session(SynthConfig(duration_s=2.5, seed=1, episodes=(wave,)))
    timeline = lay_out(session, session.sample_rate_hz, len(session.frames))
    true = true_frame_waves(
        timeline, np.arange(0, len(timeline), 8), WaveSettings(), live=live_channels(timeline)
    )
    speed, direction = block_summary(true.speed_mps, true.direction_deg, true.wave)
    in_wave = true.seq + 16 < 0.9 * session.sample_rate_hz
    background = (true.seq > 1.1 * session.sample_rate_hz) & (true.seq < 2.1 * RATE)
    assert in_wave.sum() >= 3 and background.sum() >= 3
    np.testing.assert_allclose(direction[in_wave], 45.0, atol=10.0)
    np.testing.assert_allclose(speed[in_wave], 0.3, rtol=0.2)
    assert np.isnan(direction[background]).all() and np.isnan(speed[background]).all()
