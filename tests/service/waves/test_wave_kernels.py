"""The estimator's cheaper kernels against the plain computations they replace: the periodogram
from a cached basis, the Hilbert transform from a half spectrum and the neighbours' sums from a
padded buffer."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import scipy.signal

from service.core.grid import NOMINAL_RATE_HZ
from service.waves._band import dominant_frequency
from service.waves._filter import _hilbert
from service.waves._gradient import _neighbour_products

FS = NOMINAL_RATE_HZ


def _fft_peak(y: np.ndarray, low_hz: float, high_hz: float) -> float:
    """The peak bin (Hz) of the zero-padded Hann periodogram, by a full FFT."""
    n = y.shape[0]
    nfft = scipy.fft.next_fast_len(8 * n, real=True)
    power = (np.abs(scipy.fft.rfft(y[:, ::4] * np.hanning(n)[:, None], n=nfft, axis=0)) ** 2).sum(1)
    freqs = np.arange(power.size) * FS / nfft
    inside = np.flatnonzero((freqs >= low_hz) & (freqs <= high_hz))
    return float(freqs[inside[np.argmax(power[inside])]])


@pytest.mark.parametrize(("n", "low", "high"), [(48, 4.0, 30.0), (37, 4.0, 30.0), (48, 20.0, 80.0)])
def test_dominant_frequency_lies_within_half_a_bin_of_the_fft_periodograms_peak(n, low, high):
    # Several lengths and ranges in one process: a basis cached under the wrong key would miss.
    rng = np.random.default_rng(n)
    t = np.arange(n) / FS
    rhythm = rng.uniform(low + 2.0, high - 2.0)
    y = np.sin(2 * np.pi * rhythm * t[:, None] + rng.uniform(0, 6, 16))
    y = y + 0.3 * rng.standard_normal((n, 16))
    nfft = scipy.fft.next_fast_len(8 * n, real=True)
    assert abs(dominant_frequency(y, FS, low, high) - _fft_peak(y, low, high)) <= 0.5 * FS / nfft


def test_dominant_frequency_of_a_range_without_a_bin_is_its_low_edge():
    y = np.random.default_rng(0).standard_normal((48, 8))
    assert dominant_frequency(y, FS, 5.0, 5.01) == 5.0


@pytest.mark.parametrize("length", [96, 75])
def test_hilbert_from_the_half_spectrum_matches_scipy_for_even_and_odd_lengths(length):
    x = np.random.default_rng(length).standard_normal((length, 5)).astype(np.float32)
    expected = scipy.signal.hilbert(x, axis=0)[:64]
    np.testing.assert_allclose(_hilbert(x, 64), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", [(3, 4, 5), (2, 1, 3), (2, 3, 1), (2, 2, 2)])
def test_neighbour_products_and_their_two_sided_sums_match_a_loop(shape):
    rng = np.random.default_rng(sum(shape))
    z = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    for axis in (1, 2):
        pairs, sides = _neighbour_products(z, z.conj(), axis)
        moved = np.moveaxis(z, axis, -1)
        n = moved.shape[-1]
        want_pairs = moved[..., 1:] * moved[..., :-1].conj()
        want_sides = np.zeros(moved.shape, dtype=np.complex64)
        for i in range(n):
            if i > 0:
                want_sides[..., i] += want_pairs[..., i - 1]
            if i < n - 1:
                want_sides[..., i] += want_pairs[..., i]
        np.testing.assert_allclose(np.moveaxis(pairs, axis, -1), want_pairs, rtol=1e-6)
        np.testing.assert_allclose(np.moveaxis(sides, axis, -1), want_sides, rtol=1e-6, atol=1e-6)
