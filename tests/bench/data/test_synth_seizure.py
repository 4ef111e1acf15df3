"""Seizure-like episodes: flagged exactly where they are, growing, slowing, travelling."""

from __future__ import annotations

import numpy as np
import pytest

from bench.data.ground_truth import PATTERN_LABELS
from bench.data.synth import Background, Seizure, SynthConfig, generate_session

START_S, LENGTH_S = 0.5, 4.0


@pytest.fixture(scope="module")
def pure_seizure():
    episode = Seizure(start_s=START_S, duration_s=LENGTH_S, speed_mps=0.1, direction_deg=30.0)
    config = SynthConfig(duration_s=5.0, background=Background(rms_uv=0.0), episodes=(episode,))
    return episode, generate_session(config)


def _window(session, start_s: float, stop_s: float) -> np.ndarray:
    inside = (session.timestamps >= start_s) & (session.timestamps < stop_s)
    return session.frames[inside].astype(np.float64)


def _dominant_hz(segment: np.ndarray, sample_rate_hz: float) -> float:
    """Peak of the electrode-averaged, Hann-windowed power spectrum."""
    segment = segment - segment.mean(axis=0)
    taper = np.hanning(segment.shape[0])[:, None, None]
    power = (np.abs(np.fft.rfft(segment * taper, axis=0)) ** 2).mean(axis=(1, 2))
    return float(np.fft.rfftfreq(segment.shape[0], 1 / sample_rate_hz)[np.argmax(power)])


def test_seizure_flag_and_truth_exactly_inside_the_episode():
    episode = Seizure(start_s=1.0, duration_s=2.5, speed_mps=0.4, direction_deg=-120.0)
    session = generate_session(SynthConfig(duration_s=4.0, seed=3, episodes=(episode,)))
    t = session.timestamps
    inside = (t >= 1.0) & (t < 3.5)
    truth = session.truth

    np.testing.assert_array_equal(truth.seizure, inside)
    np.testing.assert_array_equal(truth.label == PATTERN_LABELS.index("seizure"), inside)
    np.testing.assert_array_equal(truth.label[~inside], PATTERN_LABELS.index("background"))
    expected = 0.4 * np.array([np.cos(np.radians(-120.0)), np.sin(np.radians(-120.0))])
    np.testing.assert_allclose(truth.velocity_mps[inside], np.tile(expected, (inside.sum(), 1)))
    np.testing.assert_array_equal(truth.speed_mps[inside], 0.4)
    assert np.all(np.isnan(truth.velocity_mps[~inside]))


def test_seizure_amplitude_grows(pure_seizure):
    _, session = pure_seizure
    edges = np.arange(START_S + 0.1, START_S + LENGTH_S - 0.1, 0.5)
    peaks = np.array([np.abs(_window(session, a, a + 0.5)).max() for a in edges])
    assert np.all(np.diff(peaks) > 0)
    assert peaks[-1] > 2.5 * peaks[0]


def test_seizure_dominant_frequency_falls(pure_seizure):
    episode, session = pure_seizure
    fs = session.sample_rate_hz
    early = _dominant_hz(_window(session, START_S + 0.2, START_S + 1.2), fs)
    late = _dominant_hz(_window(session, START_S + LENGTH_S - 1.0, START_S + LENGTH_S), fs)
    # Linear chirp 12 -> 3 Hz: the first second averages ~10.9 Hz, the last ~4.1 Hz.
    assert 9.0 <= early <= episode.start_freq_hz
    assert episode.end_freq_hz <= late <= 5.0


def test_seizure_travels_at_its_truth_velocity(pure_seizure):
    _, session = pure_seizure
    vx, vy = session.truth.velocity_mps[session.n_frames // 2]
    # Column 10 sees what column 0 saw, later by the travel time along the velocity.
    expected_s = 10 * session.grid.pitch_m * vx / (vx**2 + vy**2)
    upstream = session.frames[:, 9, 0].astype(np.float64)
    downstream = session.frames[:, 9, 10].astype(np.float64)
    max_lag = 40
    scores = [
        np.dot(upstream[max_lag:-max_lag], downstream[max_lag + k : downstream.size - max_lag + k])
        for k in range(-max_lag, max_lag + 1)
    ]
    lag_s = (int(np.argmax(scores)) - max_lag) / session.sample_rate_hz
    assert lag_s == pytest.approx(expected_s, abs=1.0 / session.sample_rate_hz)


def test_seizure_onset_sweeps_the_array_at_its_truth_velocity(pure_seizure):
    _, session = pure_seizure
    vx, vy = session.truth.velocity_mps[session.n_frames // 2]
    x, y = session.grid.positions_m()
    along = (x * vx + y * vy) / (vx**2 + vy**2)  # travel time from the origin, s
    expected = START_S + along - along.min()
    onset = session.timestamps[np.argmax(session.frames != 0, axis=0)]  # first nonzero frame
    np.testing.assert_allclose(onset, expected, atol=2.0 / session.sample_rate_hz)
