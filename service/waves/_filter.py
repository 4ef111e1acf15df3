"""Band-pass and analytic signal of a block of frames, with the newest frames away from the edge.

The FFT-based Hilbert transform treats a block as one period of a periodic signal, so its
estimate is worst at the two ends, and the predicted frames, the ones the policy acts on, are
at the end. The filtered block is therefore extended by an autoregressive forecast before the
transform (as in real-time phase estimation, e.g. Chen et al. 2013, Zrenner et al. 2018) and
the extension is cut off again. Filtering is causal throughout: no sample is filtered with
data that came after it.
"""

from __future__ import annotations

import numpy as np
import scipy.fft
import scipy.linalg
import scipy.signal

from service.core.lru import LruCache

MATRIX_MAX_FRAMES = 256
"""Blocks up to this long are filtered by a matrix product (n² per channel) rather than by a
recursion (a fixed cost per sample that is large in practice): the cross-over on the rig's
host lies above the daemon's 64-frame blocks and below the seconds ``robust_sd`` reads."""
_CACHE_SIZE = 8
"""Filter matrices kept, one per block length (the daemon uses one or two lengths)."""
_LAG_STRIDE = 4
"""Channels used for the pooled autocorrelation: one in this many of those carrying signal."""
_MAX_GROWTH = 4.0
"""A forecast that grows beyond this multiple of the block's peak is discarded: a stable
autoregressive model decays, so growth can only come from a numerically broken fit."""


def design_bandpass(low_hz: float, high_hz: float, order: int, fs: float) -> np.ndarray:
    """Butterworth band-pass as second-order sections (``sosfilt`` is stable at any order)."""
    return scipy.signal.butter(order, (low_hz, high_hz), btype="bandpass", fs=fs, output="sos")


def group_delay(sos: np.ndarray, fs: float, n: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Group delay (s) of the causal band-pass on ``n`` frequencies from 0 to Nyquist.

    A narrow-band signal's envelope comes out of the filter this much later than it went in,
    so anything located from the envelope (where the wave is) is that much out of date.
    """
    # Start off DC: a band-pass has a zero there, where the phase is undefined.
    freqs = np.linspace(fs / (2 * n), fs / 2, n)
    _, response = scipy.signal.sosfreqz(sos, worN=freqs, fs=fs)
    phase = np.unwrap(np.angle(response))
    return freqs, np.maximum(-np.gradient(phase, 2 * np.pi * freqs), 0.0)


class CausalBandpass:
    """:func:`bandpass` with fixed sections, as one cached matrix product on short blocks.

    The filter started in steady state on the first frame is linear in the block, so for a
    block of ``n <= MATRIX_MAX_FRAMES`` frames it is an (n, n) lower-triangular matrix (the
    filter applied to the identity): one product filters every channel, a fraction of the
    cost of ``sosfilt``'s per-channel recursion on the daemon's short blocks. Longer blocks
    (the seconds ``robust_sd`` reads) run ``sosfilt``, whose cost grows only linearly.
    """

    def __init__(self, sos: np.ndarray) -> None:
        self.sos = sos
        self._zi = scipy.signal.sosfilt_zi(sos)
        self._matrices: LruCache[np.ndarray] = LruCache(_CACHE_SIZE)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Filtered (T, N) float64 copy of ``x`` (T, N)."""
        n = x.shape[0]
        if n > MATRIX_MAX_FRAMES:
            return bandpass(self.sos, self._zi, x)
        matrix = self._matrices.get(n, lambda: bandpass(self.sos, self._zi, np.eye(n)))
        return matrix @ x


def bandpass(sos: np.ndarray, zi_unit: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Causal band-pass of ``x`` (T, N) along time, started in steady state on the first frame.

    Starting the filter state as if the first frame had always been there removes the step
    response a cold start would put on every channel's DC offset; what remains of the start-up
    transient lies in the oldest frames. ``zi_unit`` is ``sosfilt_zi(sos)``, computed once.
    """
    zi = zi_unit[:, :, None] * x[0]
    y, _ = scipy.signal.sosfilt(sos, x, axis=0, zi=zi)
    return y


def analytic(y: np.ndarray, ar_order: int, extension: int) -> np.ndarray:
    """Analytic signal of the filtered block ``y`` (T, N), extended by a forecast first.

    Returns (T, N) complex64 (single precision keeps phase to ~1e-6 rad and halves the cost
    of the transform and of everything downstream); the extension is removed.
    """
    n = y.shape[0]
    total = scipy.fft.next_fast_len(n + extension, real=True)
    block = np.empty((total, y.shape[1]), dtype=np.float32)  # one cast, no float64 joint copy
    block[:n] = y
    block[n:] = _forecast(y, ar_order, total - n)
    return _hilbert(block, n)


def _hilbert(x: np.ndarray, keep: int) -> np.ndarray:
    """First ``keep`` rows of the analytic signal of ``x`` (T, N) along time.

    ``scipy.signal.hilbert``'s spectrum (DC and Nyquist kept, positive frequencies doubled,
    negative ones zeroed), built from the real FFT's half spectrum: the same values at about
    two thirds of the cost, as that function transforms the negative frequencies it then
    discards and rescales the spectrum with time as the inner axis.
    """
    n = x.shape[0]
    half = scipy.fft.rfft(x, axis=0)
    spectrum = np.zeros((n, x.shape[1]), dtype=half.dtype)
    positive = (n + 1) // 2
    spectrum[0] = half[0]
    np.multiply(half[1:positive], 2, out=spectrum[1:positive])
    if n % 2 == 0:
        spectrum[n // 2] = half[n // 2]
    return scipy.fft.ifft(spectrum, axis=0, overwrite_x=True)[:keep]


def _forecast(y: np.ndarray, order: int, steps: int) -> np.ndarray:
    """Continue every channel of ``y`` (T, N) by ``steps`` frames with one shared AR model.

    The model is fitted by Yule–Walker on the autocorrelation pooled over channels: a
    travelling wave has the same temporal dynamics on every electrode, pooling makes the fit
    well determined on a short block, and the biased autocorrelation guarantees a stable
    (decaying) model. The recursion runs as an all-pole filter with zero input whose initial
    state holds the last ``order`` samples, so it is vectorised over channels.
    """
    n = y.shape[0]
    # Every _LAG_STRIDE-th channel is plenty for a handful of lags pooled over the array, if
    # taken among those that carry signal: dead channels are zero, and a stride over all of
    # them finds only dead ones when every fourth is (one line of a 4-way multiplexer), which
    # left the block unextended and the newest frames' envelope half its size.
    # Copied once so that each lag is a dot product of two contiguous runs, without a
    # temporary per lag (the daemon and the replays hold BLAS to one thread).
    signal = np.flatnonzero(y.any(axis=0))
    if signal.size == 0:
        return np.zeros((steps, y.shape[1]))
    sub = np.ascontiguousarray(y[:, signal[::_LAG_STRIDE]])
    flat = sub.ravel()
    width = sub.shape[1]
    lags = np.array([np.dot(flat[k * width :], flat[: (n - k) * width]) for k in range(order + 1)])
    lags /= sub.size
    if not lags[0] > 0:
        return np.zeros((steps, y.shape[1]))
    try:
        coef = scipy.linalg.solve_toeplitz(lags[:order], lags[1:])
    except np.linalg.LinAlgError:
        return np.zeros((steps, y.shape[1]))
    den = np.concatenate([[1.0], -coef])
    # The forecast is linear in the last `order` samples: run the recursion once per sample
    # position (order tiny channels) and apply the result to all channels as one product.
    basis, _ = scipy.signal.lfilter(
        [1.0], den, np.zeros((steps, order)), axis=0, zi=_state_weights(den)
    )
    out = basis @ y[: -order - 1 : -1]
    # Yule–Walker on biased lags is stable, so the forecast decays; a forecast that is not
    # finite or grows can only come from a numerically broken fit: then do not extend.
    if not (np.all(np.isfinite(out)) and np.max(np.abs(out)) <= _MAX_GROWTH * np.max(np.abs(y))):
        return np.zeros((steps, y.shape[1]))
    return out


def _state_weights(den: np.ndarray) -> np.ndarray:
    """(order, order) map from the last samples, newest first, to the ``lfilter`` state.

    In direct form II transposed with zero input, state ``k`` after sample ``t`` is
    ``-sum_{m=k+1}^{p} den[m] y[t + k + 1 - m]``: row ``k``, column ``j`` holds the weight of
    ``y[t - j]``, which is ``-den[j + k + 1]`` (0 beyond the model order).
    """
    order = den.size - 1
    m = np.arange(order)[:, None] + np.arange(order)[None, :] + 1
    return np.where(m <= order, -den[np.minimum(m, order)], 0.0)
