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
- Gaps count slots only where the stream keeps the expected period between them: most steps
  must be no gap, and those must average one nominal period (within
  :data:`STEADY_STEP_TOLERANCE`). Otherwise samples are not arriving at the rate expected with
  a few lost, and the rate is the one they arrive at: steps over the time they span. A stream
  slower than 2/3 of the rate expected has every step longer than 1.5 periods; one just under
  it (186 Hz for 277.78), jittered, has about half its steps each side of 1.5 periods, whose
  slots (1 and 2) would have added up to the expected rate: its short steps average 1.2-1.45
  periods, not 1.
"""

from __future__ import annotations

import math

import numpy as np

from service.core.checks import check_above, check_range
from service.core.gaps import GAP_THRESHOLD_PERIODS

BUCKET_S = 0.5
"""Stream time a bucket covers: each closed bucket is one new judgement, and the first comes
after this much of a stream's timestamps."""
STEADY_STEP_TOLERANCE = 0.1
"""How far the steps that are no gap may average from one nominal period before gaps stop
counting slots. Why 10 %: a jittered stream whose steps straddle the gap threshold has them
average 1.2 periods or more while its jitter stays within a quarter period (measured: 1.21-1.44
at 186-188 Hz), and a stream at the expected rate averaged within 5.6 % of a period in its first
half second even with 30 % of its samples lost and its jitter at the quarter-period clip (there
the steps' jitter adds up at each end of each run between gaps; over a full window, far less)."""
DEFAULT_TOLERANCE = 0.02
"""``[ingest] rate_tolerance``'s default (why 2 %: ``service.ingest.settings``), which a command
reading a recording without the daemon's configuration (train, evaluate, adapt) judges by."""
DEFAULT_WINDOW_S = 10.0
"""``[ingest] rate_window_s``'s default, likewise."""

_STEPS, _STEADY_STEPS, _SLOTS, _SPAN_S, _STEADY_SPAN_S = range(5)


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
        self._buckets = np.zeros((max(1, round(window_s / BUCKET_S)), 5))
        self.reset()

    def reset(self) -> None:
        """Forget every step: a new connection's stream is measured afresh."""
        self._buckets[:] = 0.0
        self._closed = 0
        self._steps = self._steady_steps = self._slots = 0
        self._span_s = self._steady_span_s = 0.0
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
        self._steady_span_s += duration_s
        return self._span_s >= BUCKET_S and self._close_bucket()

    def add_steps(self, steps: np.ndarray) -> bool:
        """Add steps between consecutive timestamps, in seconds; one that does not move
        forward, or moves more than a bucket, counts for nothing. True when this closed a
        bucket (see :meth:`add_run`)."""
        counted = steps[(steps > 0.0) & (steps <= BUCKET_S)]
        is_gap = counted > self._gap_s
        gaps = counted[is_gap]
        self._steps += counted.shape[0]
        self._steady_steps += counted.shape[0] - gaps.shape[0]
        self._slots += counted.shape[0] - gaps.shape[0] + int(np.rint(gaps / self._period_s).sum())
        self._span_s += float(counted.sum())
        self._steady_span_s += float(counted[~is_gap].sum())
        return self._span_s >= BUCKET_S and self._close_bucket()

    def _close_bucket(self) -> bool:
        row = self._buckets[self._closed % self._buckets.shape[0]]
        row[:] = (self._steps, self._steady_steps, self._slots, self._span_s, self._steady_span_s)
        self._closed += 1
        self._steps = self._steady_steps = self._slots = 0
        self._span_s = self._steady_span_s = 0.0
        self._judge()
        return True

    def _judge(self) -> None:
        total = self._buckets.sum(axis=0)
        # Mostly gaps, or steps between them off the period: samples come at another rate,
        # not at this one with the odd one lost.
        steady = 2 * total[_STEADY_STEPS] >= total[_STEPS] and self._within(
            total[_STEADY_STEPS] / total[_STEADY_SPAN_S], STEADY_STEP_TOLERANCE
        )
        measured = float(total[_SLOTS if steady else _STEPS] / total[_SPAN_S])
        covered_s = float(total[_SPAN_S])
        problem = None
        if not self._within(measured, self.tolerance):
            problem = (
                f"stream rate {measured:.2f} Hz measured from its timestamps over the last "
                f"{covered_s:.1f} s; [stream] sample_rate_hz is {self.expected_hz:g} Hz "
                f"([ingest] rate_tolerance {self.tolerance:.3g})"
            )
        self._judgement = (measured, covered_s, problem)

    def _within(self, rate_hz: float, tolerance: float) -> bool:
        return abs(rate_hz - self.expected_hz) <= tolerance * self.expected_hz
