"""The stream's sample rate, measured from its timestamps and judged against the rate expected.

Why: the rate a stream declares is checked when it is opened (``lsl.check_format``), but
nothing made its timestamps keep to it. A stream that declares 277.78 Hz and is stamped at
200 Hz steps 1.39 nominal periods a sample, under the 1.5-period gap threshold
(``service.core.gaps``): no gap, no error, and the model and the wave estimate (Hz, m/s) run on
a time base 28 % off.

How it measures: sample slots over the stream time they span, over the last ``window_s`` of
stream time, kept as buckets of :data:`BUCKET_S` each.

- Dropped samples are not a slower rate: a step longer than 1.5 nominal periods is a gap, and
  counts the slots the ingestor fills it with (its length in nominal periods, rounded), the
  samples lost included. A step longer than a bucket (an outage, a clock jump) counts nothing.
- Timestamp jitter: the steps add up to the span from the window's first sample to its last,
  so jitter enters at those two ends only, as long as it stays within a quarter period (0.9 ms
  at 277.78 Hz, where ``bench.data.synth`` clips it; the gap threshold and a gap's slots are
  exact then): the first half second's measurement moves by 0.36 % at most, a full 10 s
  window's by 0.02 %.
- Clock drift: a crystal's +-100 ppm is 0.01 %; it is measured as it is, far inside any
  tolerance worth setting.
- A stream slower than 2/3 of the rate expected has every step longer than 1.5 periods, each
  a "gap" of whole slots. Where gaps are most of the steps in the window, samples are not
  arriving at the rate expected with a few lost, and the rate is the one they arrive at: steps
  over the time they span.
"""

from __future__ import annotations

import math

import numpy as np

from service.core.checks import check_above, check_range
from service.core.gaps import GAP_THRESHOLD_PERIODS

BUCKET_S = 0.5
"""Stream time a bucket covers: each closed bucket is one new judgement, and the first comes
after this much of a stream's timestamps."""
DEFAULT_TOLERANCE = 0.02
"""``[ingest] rate_tolerance``'s default (why 2 %: ``service.ingest.settings``), which a command
reading a recording without the daemon's configuration (train, evaluate, adapt) judges by."""
DEFAULT_WINDOW_S = 10.0
"""``[ingest] rate_window_s``'s default, likewise."""

_STEPS, _STEADY_STEPS, _SLOTS, _SPAN_S = range(4)


class RateMeter:
    """Measures a stream's rate from the steps between its timestamps; one writer thread.

    Parameters
    ----------
    expected_hz
        The rate the stream must keep (``[stream] sample_rate_hz``).
    tolerance
        Largest relative difference from ``expected_hz`` still accepted.
    window_s
        Stream time the measurement covers (at least one :data:`BUCKET_S` bucket).

    Feed it with :meth:`add_run` and :meth:`add_steps`; read :attr:`measured_hz` and
    :meth:`problem` from any thread.
    """

    def __init__(self, expected_hz: float, tolerance: float, window_s: float) -> None:
        check_above("expected_hz", expected_hz, 0.0)
        check_range("tolerance", tolerance, 0.0, 1.0)
        check_range("window_s", window_s, BUCKET_S)
        self.expected_hz = expected_hz
        self.tolerance = tolerance
        self._period_s = 1.0 / expected_hz
        self._gap_s = GAP_THRESHOLD_PERIODS * self._period_s
        self._buckets = np.zeros((max(1, round(window_s / BUCKET_S)), 4))
        self.reset()

    def reset(self) -> None:
        """Forget every step: a new connection's stream is measured afresh."""
        self._buckets[:] = 0.0
        self._closed = 0
        self._steps = self._steady_steps = self._slots = 0
        self._span_s = 0.0
        self._judgement: tuple[float, float, str | None] = (math.nan, math.nan, None)

    @property
    def measured_hz(self) -> float:
        """The rate measured over the window so far; NaN before the first judgement."""
        return self._judgement[0]

    @property
    def measured_over_s(self) -> float:
        """The stream time :attr:`measured_hz` was measured over; NaN before the first
        judgement."""
        return self._judgement[1]

    def problem(self) -> str | None:
        """Why the stream's rate is not known to be the rate expected (not measured yet, or
        measured outside the tolerance), naming both rates; None when it is."""
        measured, _, problem = self._judgement
        if math.isnan(measured):
            return (
                f"stream rate not measured yet (needs {BUCKET_S:g} s of timestamps; "
                f"[stream] sample_rate_hz is {self.expected_hz:g} Hz)"
            )
        return problem

    def add_run(self, steps: int, duration_s: float) -> bool:
        """Add ``steps`` consecutive steps, none a gap, spanning ``duration_s`` (the ingestor's
        regular chunk, whose steps it has checked); True when this closed a bucket, so the
        judgement is new."""
        if steps <= 0:
            return False
        self._steps += steps
        self._steady_steps += steps
        self._slots += steps
        self._span_s += duration_s
        return self._span_s >= BUCKET_S and self._close_bucket()

    def add_steps(self, steps: np.ndarray) -> bool:
        """Add steps between consecutive timestamps, in seconds; one that does not move
        forward, or moves more than a bucket, counts for nothing. True when this closed a
        bucket (see :meth:`add_run`)."""
        counted = steps[(steps > 0.0) & (steps <= BUCKET_S)]
        gaps = counted[counted > self._gap_s]
        self._steps += counted.shape[0]
        self._steady_steps += counted.shape[0] - gaps.shape[0]
        self._slots += counted.shape[0] - gaps.shape[0] + int(np.rint(gaps / self._period_s).sum())
        self._span_s += float(counted.sum())
        return self._span_s >= BUCKET_S and self._close_bucket()

    def _close_bucket(self) -> bool:
        row = self._buckets[self._closed % self._buckets.shape[0]]
        row[:] = (self._steps, self._steady_steps, self._slots, self._span_s)
        self._closed += 1
        self._steps = self._steady_steps = self._slots = 0
        self._span_s = 0.0
        self._judge()
        return True

    def _judge(self) -> None:
        total = self._buckets.sum(axis=0)
        steady = 2 * total[_STEADY_STEPS] >= total[_STEPS]
        # Mostly gaps: samples come slower than expected, not the odd one lost.
        measured = float(total[_SLOTS if steady else _STEPS] / total[_SPAN_S])
        covered_s = float(total[_SPAN_S])
        problem = None
        if abs(measured - self.expected_hz) > self.tolerance * self.expected_hz:
            problem = (
                f"stream rate {measured:.2f} Hz measured from its timestamps over the last "
                f"{covered_s:.1f} s; [stream] sample_rate_hz is {self.expected_hz:g} Hz "
                f"([ingest] rate_tolerance {self.tolerance:.3g})"
            )
        self._judgement = (measured, covered_s, problem)
