"""The neural field makes travelling, sustained, bounded activity."""

from __future__ import annotations

import numpy as np
import pytest

from bench.data.ground_truth import PATTERN_LABELS
from bench.data.synth import Background, NeuralField, SynthConfig, generate_session

AMPLITUDE_UV = 40.0


@pytest.fixture(scope="module", params=[0, 1])
def field_frames(request):
    episode = NeuralField(start_s=0.0, duration_s=2.5, amplitude_uv=AMPLITUDE_UV)
    config = SynthConfig(
        duration_s=2.5, seed=request.param, background=Background(rms_uv=0.0), episodes=(episode,)
    )
    session = generate_session(config)
    assert np.all(session.truth.label == PATTERN_LABELS.index("neural_field"))
    assert np.all(np.isnan(session.truth.velocity_mps))
    inside = (session.timestamps >= 0.2) & (session.timestamps < 2.3)  # clear of the tapers
    return session.frames[inside].astype(np.float64)


def _standardise(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=0)) / x.std(axis=0)


def _peak_lags(a: np.ndarray, b: np.ndarray, max_lag: int = 10) -> np.ndarray:
    """Per series (axis 0 is time), the lag in samples at which ``b`` best matches ``a``.

    Pearson correlation per lag (each window standardised, so no lag is favoured), sub-sample
    by a parabola through the peak; > 0 means ``b`` comes later.
    """
    n = a.shape[0]
    core = _standardise(a[max_lag : n - max_lag])
    lags = range(-max_lag, max_lag + 1)
    scores = np.stack(
        [np.mean(core * _standardise(b[max_lag + k : n - max_lag + k]), axis=0) for k in lags]
    )
    i = np.clip(np.argmax(scores, axis=0), 1, 2 * max_lag - 1)
    left, mid, right = (np.take_along_axis(scores, (i + d)[None], axis=0)[0] for d in (-1, 0, 1))
    return i - max_lag + 0.5 * (left - right) / (left - 2 * mid + right)


def test_neural_field_activity_travels(field_frames):
    x = field_frames
    across = _peak_lags(x[:, :, :-1], x[:, :, 1:])
    down = _peak_lags(x[:, :-1, :], x[:, 1:, :])
    apart = _peak_lags(x[:, :, :-4], x[:, :, 4:])
    neighbours = np.abs(np.concatenate([across.ravel(), down.ravel()]))
    # A standing or synchronous pattern would give lags ~0 everywhere.
    assert np.median(neighbours) > 0.1
    assert np.mean(np.abs(np.round(apart)) >= 1) > 0.5


def test_lag_estimator_sees_no_lag_in_a_standing_pattern():
    rng = np.random.default_rng(0)
    common = np.convolve(rng.standard_normal(500), np.hanning(15), mode="same")
    standing = common[:, None, None] * rng.uniform(0.5, 2.0, (1, 4, 5))
    travelling = np.stack([np.roll(common, 3 * c) for c in range(5)], axis=1)[:, None, :]
    assert np.allclose(_peak_lags(standing[:, :, :-1], standing[:, :, 1:]), 0.0, atol=0.02)
    assert np.allclose(_peak_lags(travelling[:, :, :-1], travelling[:, :, 1:]), 3.0, atol=0.05)


def test_neural_field_is_sustained_and_bounded(field_frames):
    x = field_frames
    assert np.all(np.isfinite(x))
    half = x.shape[0] // 2
    first, second = x[:half].std(), x[half:].std()
    # Neither decays to a fixed point nor runs away: power is steady across the episode ...
    assert 0.5 < second / first < 2.0
    # ... every electrode keeps moving ...
    assert x[half:].std(axis=0).min() > 0.1 * AMPLITUDE_UV
    # ... and nothing spikes far beyond the episode's scale.
    assert np.abs(x).max() < 5 * AMPLITUDE_UV
    assert x.std() == pytest.approx(AMPLITUDE_UV / np.sqrt(2), rel=0.1)
