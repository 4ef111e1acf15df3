"""The phase band: a narrow causal complex band-pass centred on each block's dominant rhythm.

Why not take the phase from the configured band? The spatially correlated 1/f background inside a
wide band adds near-zero-lag products between neighbours, which shrink the measured phase gradient,
and pulls the instantaneous frequency toward the band's noise centroid: at 0 dB a 10 Hz plane wave
in 4–30 Hz came out ~45 % too fast (``bench/benchmarks/wave_accuracy.py``). A band half an octave
wide around the wave keeps the wave and about a sixth of the background.

The rhythm is found in the measured frames only, so the choice is causal over the past. The
first guess is the peak of the periodogram of the configured band's output, pooled over
channels (or, on a past too short for a periodogram, the mean frequency of the configured
band's analytic signal); the centre is then moved ``REFINEMENTS`` times to the mean
instantaneous frequency inside the phase band itself, over the settled half of the measured
frames. The periodogram of 48 frames is coarse (5.8 Hz bins) and the mean frequency of a wide
band is pulled toward the background's centroid; the band's own mean frequency is neither.

The band-pass is complex, ``h[n] = 2 g[n] exp(i ω_c n)`` with ``g`` a Butterworth low-pass:
its output is the analytic signal of the band directly (complex demodulation), so there is no
Hilbert transform, no forecast, and no edge effect at the newest frames, the ones the policy
acts on. It runs from rest on the first difference of the frames (a zero at DC, so electrode
offsets and slow drift cannot leak through the low-pass's finite stop band; it also flattens
the 1/f background across the band), with the difference's gain and phase at the centre
divided out. The centre is exact; only the low-pass's cut-off is snapped to a grid so that its
matrix can be cached, and for blocks of up to ``MATRIX_MAX_FRAMES`` frames the low-pass of all
channels is one matrix product, the cheapest way to filter a short block (longer blocks run
the same low-pass as a recursion).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.fft
import scipy.linalg
import scipy.signal

from service.core.lru import LruCache
from service.waves import _filter as _wave_filter

STEPS_PER_OCTAVE = 8
"""Grid of the low-pass cut-offs that are cached: 1/8 octave (9 %) steps."""
MATRIX_MAX_FRAMES = _wave_filter.MATRIX_MAX_FRAMES
"""Blocks up to this long are low-passed by one cached matrix product, as in
``service.waves._filter``."""
REFINEMENTS = 2
"""Times the centre is moved to the mean frequency inside the phase band."""
_LOWPASS_ORDER = 2
"""Butterworth order of the low-pass prototype: on the bench order 2 beat order 1 (whose skirt
lets in more background) and order 3 (which rings longer on a short block)."""
_CACHE_SIZE = 64
"""Matrices kept (one per cut-off and block length; the daemon uses a single length)."""
_CHANNEL_STRIDE = 4
"""Every this-many-th channel carrying signal enters the periodogram: the rhythm is common to
the array."""
_NFFT_PER_FRAME = 8
"""Zero-padding of the periodogram (its peak is read to a fraction of a bin)."""
_HANN_HALF_LOBE_BINS = 2
"""Half-width of a Hann window's main lobe, in periodogram bins (``fs / T``)."""


class PhaseBand:
    """Causal complex band-pass of adjustable centre, and the search for that centre.

    Parameters
    ----------
    low_hz, high_hz
        Range in which the dominant rhythm is searched: the configured band of interest.
    width_octaves
        Width of the phase band (between its -3 dB points).
    fs
        Frame rate in Hz.
    """

    def __init__(self, low_hz: float, high_hz: float, width_octaves: float, fs: float) -> None:
        self._low = float(low_hz)
        self._high = float(high_hz)
        self._fs = float(fs)
        # -3 dB points at fc 2**(-w/2) and fc 2**(w/2): the low-pass cut-off is half of that.
        self._half_width = (2.0 ** (width_octaves / 2) - 2.0 ** (-width_octaves / 2)) / 2
        self._lowpass: LruCache[np.ndarray] = LruCache(_CACHE_SIZE)

    def signal(self, x: np.ndarray, y: np.ndarray, wide: np.ndarray, past: int) -> np.ndarray:
        """Analytic signal (T, N) complex64 of ``x`` in the phase band of its dominant rhythm.

        Parameters
        ----------
        x
            (T, N) frames, dead channels zeroed.
        y, wide
            (T, N) the same frames in the configured band, real and analytic: the first guess
            of the centre comes from them.
        past
            How many of the T frames are measured; only these choose the centre.
        """
        pre = _prewhiten(x, past)
        if not self._resolves(past):
            return self.analytic(pre, self._clip(mean_frequency(wide[:past], self._fs)))
        centre = self._clip(dominant_frequency(y[:past], self._fs, self._low, self._high))
        for _ in range(REFINEMENTS):
            centre = self._clip(self._band_frequency(pre, centre, past))
        return self.analytic(pre, centre)

    def _resolves(self, past: int) -> bool:
        """Whether ``past`` measured frames are enough to look for a peak in the range.

        The periodogram can locate a peak where its main lobe is narrower than half the search
        range; on a shorter past (16 frames, 58 ms, say) it only shows the band's own shape,
        and the phase band's start-up transient has not decayed within the measured frames
        either, so its mean frequency would drag the centre toward wherever it started (on the
        bench it did). There the mean frequency of the configured band's analytic signal is
        the centre, as it is.
        """
        return _HANN_HALF_LOBE_BINS * self._fs / past <= (self._high - self._low) / 2

    def analytic(self, pre: np.ndarray, centre_hz: float) -> np.ndarray:
        """Analytic signal (T, N) complex64 in the band around ``centre_hz``.

        ``pre`` (T, N) is the output of :func:`_prewhiten`; it is demodulated by the centre,
        low-passed from rest and remodulated.
        """
        omega = 2 * math.pi * centre_hz / self._fs
        low = self._lowpassed(pre, centre_hz, pre.shape[0])
        carrier = np.exp(1j * omega * np.arange(pre.shape[0]))
        # The first difference has gain 1 - exp(-iω) at ω: divide it out, and double the
        # one-sided response, as the analytic signal of a real signal is.
        gain = 2.0 / (1.0 - np.exp(-1j * omega))
        return low * (carrier * gain).astype(np.complex64)[:, None]

    def _band_frequency(self, pre: np.ndarray, centre_hz: float, past: int) -> float:
        """Mean frequency (Hz) in the band around ``centre_hz`` over frames ``past // 2`` to
        ``past``, where the filter's start-up has mostly decayed.

        Only those rows of the low-pass are computed, and the carrier is not put back: it only
        adds ω to every step's angle.
        """
        low = self._lowpassed(pre, centre_hz, past, first=past // 2)
        omega = 2 * math.pi * centre_hz / self._fs
        step = np.vdot(low[:-1].ravel(), low[1:].ravel())
        return (np.angle(step) + omega) * self._fs / (2 * math.pi)

    def _lowpassed(
        self, pre: np.ndarray, centre_hz: float, stop: int, first: int = 0
    ) -> np.ndarray:
        """Rows ``first:stop`` (of the block's frames) of the demodulated, low-passed ``pre``."""
        n = pre.shape[1]
        omega = 2 * math.pi * centre_hz / self._fs
        phase = omega * np.arange(stop)
        base = np.empty((stop, n, 2), dtype=np.float32)
        np.multiply(pre[:stop], np.cos(phase).astype(np.float32)[:, None], out=base[..., 0])
        np.multiply(pre[:stop], -np.sin(phase).astype(np.float32)[:, None], out=base[..., 1])
        cutoff = min(self._half_width * centre_hz, 0.45 * self._fs)
        if stop <= MATRIX_MAX_FRAMES:
            # One real product low-passes real and imaginary parts of every channel at once;
            # the filter is causal, so rows before ``stop`` need columns before it only.
            matrix = self._matrix(cutoff, stop)[first:]
            return (matrix @ base.reshape(stop, 2 * n)).view(np.complex64)
        filtered = scipy.signal.sosfilt(self._sos(cutoff), base.view(np.complex64)[..., 0], axis=0)
        return filtered[first:].astype(np.complex64)

    def _clip(self, freq_hz: float) -> float:
        if not math.isfinite(freq_hz):
            return self._low
        return min(max(freq_hz, self._low), self._high)

    def _sos(self, cutoff_hz: float) -> np.ndarray:
        return scipy.signal.butter(
            _LOWPASS_ORDER, cutoff_hz, btype="lowpass", fs=self._fs, output="sos"
        )

    def _matrix(self, cutoff_hz: float, n: int) -> np.ndarray:
        """(n, n) float32 lower-triangular Toeplitz matrix of the low-pass's impulse response.

        Cut-offs are snapped to a grid of ``STEPS_PER_OCTAVE`` per octave so that a handful of
        matrices serve every centre; the centre itself is never snapped.
        """
        step = round(STEPS_PER_OCTAVE * math.log2(cutoff_hz))

        def build() -> np.ndarray:
            impulse = np.zeros(n)
            impulse[0] = 1.0
            response = scipy.signal.sosfilt(self._sos(2.0 ** (step / STEPS_PER_OCTAVE)), impulse)
            return scipy.linalg.toeplitz(response, np.zeros(n)).astype(np.float32)

        return self._lowpass.get((step, n), build)


def _prewhiten(x: np.ndarray, past: int) -> np.ndarray:
    """First difference of ``x`` (T, N), tapered in over the first half of the measured frames.

    The difference has a zero at DC (from a steady start: the first row is 0). The taper is a
    fixed gain per frame, so the filter stays causal; it softens the block's abrupt start,
    whose transient would otherwise leak the wave's negative frequency, with the opposite
    phase gradient, into the newest frames (7 Hz waves at 20 dB: 4.6 % median speed error
    without it, 1.7 % with it). Returns float32, the precision of the band-pass.
    """
    n = x.shape[0]
    ramp = max(past // 2, 1)
    head = min(ramp, n)
    taper = np.ones(n)
    taper[:head] = 0.5 - 0.5 * np.cos(np.pi * np.arange(head) / ramp)
    out = np.empty(x.shape, dtype=np.float32)
    out[0] = 0.0
    np.subtract(x[1:], x[:-1], out=out[1:])
    out *= taper.astype(np.float32)[:, None]
    return out


def dominant_frequency(y: np.ndarray, fs: float, low_hz: float, high_hz: float) -> float:
    """Peak frequency (Hz) in ``[low_hz, high_hz]`` of the periodogram of ``y`` (T, N).

    ``y`` is the configured band's output over the measured frames; the power is pooled over
    a subset of channels (a travelling wave has the same spectrum on every electrode) and the
    peak is refined by a parabola through the log power of its neighbours. The subset is
    taken among the channels that carry signal: dead ones are zero, and a fixed stride over
    all channels would find only dead ones when every fourth is (one line of a 4-way
    multiplexer: whole columns on the rig's grid), leaving the search at ``low_hz``.
    """
    n = y.shape[0]
    nfft, first, inside, basis = _periodogram_basis(n, float(fs), float(low_hz), float(high_hz))
    if basis is None:
        return low_hz
    channels = np.flatnonzero(y.any(axis=0))[::_CHANNEL_STRIDE]
    # Only the bins of the range and their neighbours, as one product with cached windowed
    # cosines and sines: the same sums as a zero-padded FFT of every bin, a fraction of the cost.
    parts = basis @ y[:, channels]
    half = basis.shape[0] // 2
    power = np.einsum("fc,fc->f", parts[:half], parts[:half]) + np.einsum(
        "fc,fc->f", parts[half:], parts[half:]
    )
    if not power[inside].max() > 0:
        return low_hz
    peak = int(inside[np.argmax(power[inside])])
    bins = nfft // 2 + 1
    if 0 < peak + first < bins - 1 and np.all(power[peak - 1 : peak + 2] > 0):
        a, b, c = np.log(power[peak - 1 : peak + 2])
        curvature = a - 2 * b + c
        shift = 0.5 * (a - c) / curvature if curvature < 0 else 0.0
        return float((peak + first + np.clip(shift, -0.5, 0.5)) * fs / nfft)
    return float((peak + first) * (fs / nfft))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _periodogram_basis(
    n: int, fs: float, low_hz: float, high_hz: float
) -> tuple[int, int, np.ndarray, np.ndarray | None]:
    """FFT length, first bin, the bins inside ``[low_hz, high_hz]`` counted from the first,
    and the (2B, n) Hann-windowed cosines then negated sines of those B bins and their
    neighbours (None when no bin lies in the range)."""
    nfft = scipy.fft.next_fast_len(_NFFT_PER_FRAME * n, real=True)
    bins = nfft // 2 + 1
    freqs = np.arange(bins) * (fs / nfft)
    inside = np.flatnonzero((freqs >= low_hz) & (freqs <= high_hz))
    if inside.size == 0:
        return nfft, 0, inside, None
    first, last = max(int(inside[0]) - 1, 0), min(int(inside[-1]) + 1, bins - 1)
    angle = 2 * np.pi * np.outer(np.arange(first, last + 1), np.arange(n)) / nfft
    window = np.hanning(n)
    basis = np.concatenate([np.cos(angle) * window, -np.sin(angle) * window], axis=0)
    basis.setflags(write=False)
    inside = inside - first
    inside.setflags(write=False)
    return nfft, first, inside, basis


def mean_frequency(z: np.ndarray, fs: float) -> float:
    """Power-weighted mean instantaneous frequency (Hz) of the analytic signal ``z`` (T, N)."""
    step = np.vdot(z[:-1].ravel(), z[1:].ravel())
    return float(np.angle(step) * fs / (2 * math.pi))
