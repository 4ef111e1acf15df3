"""The background is pink in time, smooth in space, stationary across the array, at its RMS."""

from __future__ import annotations

import numpy as np
import pytest

from bench.data.synth import Background
from bench.data.synth.background import pink_background
from service.core.grid import DEFAULT_GRID, NOMINAL_RATE_HZ

N_FRAMES = 2048
T = np.arange(N_FRAMES) / NOMINAL_RATE_HZ


def _background(seed: int = 0, **settings: float) -> np.ndarray:
    return pink_background(T, DEFAULT_GRID, Background(**settings), np.random.default_rng(seed))


def _neighbour_correlation(x: np.ndarray, step: int) -> float:
    a, b = x[:, :, :-step].reshape(x.shape[0], -1), x[:, :, step:].reshape(x.shape[0], -1)
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    return float(
        np.mean(np.sum(a * b, axis=0) / np.sqrt(np.sum(a**2, axis=0) * np.sum(b**2, axis=0)))
    )


@pytest.mark.parametrize("exponent", [1.0, 2.0])
def test_background_spectrum_falls_as_one_over_f_to_the_exponent(exponent):
    x = _background(exponent=exponent, low_hz=1.0)
    power = (np.abs(np.fft.rfft(x, axis=0)) ** 2).mean(axis=(1, 2))
    freqs = np.fft.rfftfreq(N_FRAMES, 1 / NOMINAL_RATE_HZ)
    band = (freqs >= 3.0) & (freqs <= 60.0)
    slope = np.polyfit(np.log(freqs[band]), np.log(power[band]), 1)[0]
    assert slope == pytest.approx(-exponent, abs=0.15)


def test_background_has_its_rms_and_no_mean():
    x = _background(rms_uv=12.5)
    assert np.sqrt(np.mean(x**2)) == pytest.approx(12.5, rel=1e-9)
    assert abs(x.mean()) < 0.05


def test_background_is_spatially_correlated_and_decays_with_distance():
    x = _background(correlation_m=1.0e-3)
    near, far = _neighbour_correlation(x, 1), _neighbour_correlation(x, 6)
    assert near > 0.8
    assert far < 0.3
    assert abs(_neighbour_correlation(_background(correlation_m=0.0), 1)) < 0.1


def test_background_edges_are_as_strong_as_the_centre():
    x = _background(correlation_m=1.5e-3)
    sd = x.std(axis=0)
    edge = np.concatenate([sd[0], sd[-1], sd[:, 0], sd[:, -1]]).mean()
    assert edge / sd[6:12, 6:14].mean() == pytest.approx(1.0, abs=0.15)


def test_background_off_is_zero():
    assert not np.any(_background(rms_uv=0.0))
