"""The TensorRT predictor's parity input: built without bench's generator, and structured."""

from __future__ import annotations

import numpy as np

from service.inference.predictor import DEFAULT_STREAM
from service.inference.tensorrt_predictor import parity_window


def test_the_parity_window_fits_the_stream_and_carries_a_travelling_wave():
    window = parity_window(DEFAULT_STREAM)
    assert window.shape == (DEFAULT_STREAM.past_frames, *DEFAULT_STREAM.grid.shape)
    assert window.dtype == np.float32 and np.isfinite(window).all()
    np.testing.assert_array_equal(window, parity_window(DEFAULT_STREAM))
    # Frame-to-frame structure from the wave: neighbours in time correlate, noise would not.
    now, before = window[1:].ravel(), window[:-1].ravel()
    assert np.corrcoef(now, before)[0, 1] > 0.5
    # The wave moves: the phase lag between the first and last columns is not zero.
    first, last = window[:, :, 0].mean(axis=1), window[:, :, -1].mean(axis=1)
    assert np.corrcoef(first, last)[0, 1] < 0.99
