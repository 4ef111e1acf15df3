"""A frame source for a simulated rig whose clock is not the rate its stream declares."""

from __future__ import annotations

import numpy as np

from bench.data.pattern import encode_pattern
from service.core.grid import DEFAULT_GRID, NOMINAL_RATE_HZ


class ClockedPattern:
    """The test pattern on a stream that declares the nominal rate while its timestamps keep
    ``rate_hz``, which a test may change while it plays (the clock goes on from where it was);
    ``jitter_s`` adds seeded Gaussian jitter, clipped to a quarter period as
    ``bench.data.synth`` clips it. Read in order, as a rig reads it."""

    grid = DEFAULT_GRID
    sample_rate_hz = NOMINAL_RATE_HZ  # declared

    def __init__(self, rate_hz: float, *, jitter_s: float = 0.0, seed: int = 0) -> None:
        self.rate_hz = rate_hz
        self._jitter_s = jitter_s
        self._rng = np.random.default_rng(seed)
        self._next_time = 0.0

    def read(self, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        period = 1.0 / self.rate_hz
        times = self._next_time + np.arange(count) * period
        self._next_time = float(times[-1]) + period
        if self._jitter_s:
            clip = 0.25 / NOMINAL_RATE_HZ
            times = times + np.clip(self._rng.normal(0.0, self._jitter_s, count), -clip, clip)
        return encode_pattern(np.arange(start, start + count), self.grid), times
