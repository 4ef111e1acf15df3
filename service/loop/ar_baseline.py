"""The background thread that keeps the live fitted AR baseline fitted and scored.

The daemon has no training split to fit ``service.core.autoregressive`` on, only the ring's
recent past. Every ``refit_every_s`` this thread refits it on the last ``history_s`` of measured
frames (13 shared coefficients are well pinned down by seconds of 360 electrodes, and a recent
fit follows a recording whose dynamics drift); every ``score_every_s`` it scores the windows
:class:`~service.loop.live_accuracy.LiveAccuracy` has scored since, in one batch. Both run here,
at a raised nice value, so neither ever delays the scheduler thread.
"""

from __future__ import annotations

import time

from service.core.worker import BackgroundWorker
from service.ingest.ring_buffer import RingBuffer
from service.loop.live_accuracy import LiveAccuracy


class ArBaseline(BackgroundWorker):
    """Refits and scores the live AR baseline of ``accuracy`` from ``ring``.

    Parameters
    ----------
    ring
        The ingest ring buffer (the measured frames).
    accuracy
        The live scores the baseline is fitted for and scored in.
    sample_rate_hz
        Frames per second, to turn ``history_s`` into frames.
    history_s, refit_every_s, score_every_s
        Fitting window, refit period and scoring period, seconds.
    niceness
        Added to the thread's nice value: when cores are short, inference runs first.
    """

    def __init__(
        self,
        ring: RingBuffer,
        accuracy: LiveAccuracy,
        *,
        sample_rate_hz: float,
        history_s: float = 8.0,
        refit_every_s: float = 10.0,
        score_every_s: float = 0.25,
        niceness: int = 10,
    ) -> None:
        super().__init__("corticast-ar-baseline", niceness=niceness)
        for name, value in (
            ("sample_rate_hz", sample_rate_hz),
            ("history_s", history_s),
            ("refit_every_s", refit_every_s),
            ("score_every_s", score_every_s),
        ):
            if not value > 0:
                raise ValueError(f"'{name}' must be > 0, got {value!r}")
        self._ring, self._accuracy = ring, accuracy
        self._frames = max(1, round(history_s * sample_rate_hz))
        self._refit_every_s, self._score_every_s = refit_every_s, score_every_s

    def _work(self) -> None:
        next_fit = time.monotonic()
        while not self._stop_requested.wait(self._score_every_s):
            # Retried every round while nothing is fitted yet (after start or a swap).
            due = time.monotonic() >= next_fit or self._accuracy.ar is None
            if due and self._accuracy.refit_ar(self._ring, self._frames):
                next_fit = time.monotonic() + self._refit_every_s
            self._accuracy.score_ar(self._ring)
