"""The background thread that keeps the live fitted AR baseline fitted and scored.

The daemon has no training split to fit ``service.core.autoregressive`` on, only the ring's
recent past. Every ``refit_every_s`` this thread refits it on the last ``history_s`` of measured
frames (13 shared coefficients are well pinned down by seconds of 360 electrodes, and a recent
fit follows a recording whose dynamics drift); every ``score_every_s`` it scores the windows
:class:`~service.loop.live_accuracy.LiveAccuracy` has scored since, in one batch. Both run here,
at a raised nice value, so neither ever delays the scheduler thread.

A round that raises (a refit or a scoring meeting data or a state it did not expect) does not
end the thread, which would leave the last fit served for good and the ``"ar"`` scores
frozen, with one log line as the only trace. The fit is dropped (none is served or scored,
as before the first fit), the failure is counted (``corticast_accuracy_ar_failed_rounds``),
and the round is tried again after a wait that doubles from ``score_every_s`` up to
``refit_every_s``. The first failure of a run of them is a *fault*, reported once through
``on_fault`` (the daemon's supervisor: disarm first, then log with the cause and count under
stage ``ar``), because the project's rule is that any fault in the loop disarms stimulation
first, and this thread is in the loop: the blend serves its forecast (``[loop] blend_ar``, on
by default) to the wave stage and the policy, and an exception here means the data or the
code is not what the loop was built for. Later failures of the same run are counted, not
reported again: the first has disarmed, and while they go on no AR is served (an operator
who arms again gets the model and persistence, as before the first fit). The run ends at
the next successful refit, which is logged.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter

from service.core.backoff import doubling_wait
from service.core.worker import BackgroundWorker
from service.ingest.ring_buffer import RingBuffer
from service.loop.live_accuracy import LiveAccuracy
from service.loop.settings import LoopSettings

_log = logging.getLogger("corticast.loop")

SCORE_EVERY_S = 0.25
"""Seconds between the thread's rounds: each scores the AR on the windows scored since the last
and refits it when due."""


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
    on_fault
        Told, in one line with the cause, of the first failed round of a run of them (see
        the module docstring); the daemon disarms, logs and counts it.
    registry
        Where ``corticast_accuracy_ar_failed_rounds`` is registered.
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
        on_fault: Callable[[str], None],
        registry: CollectorRegistry | None = None,
        history_s: float = 8.0,
        refit_every_s: float = 10.0,
        score_every_s: float = SCORE_EVERY_S,
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
        self._frames = history_frames(history_s, sample_rate_hz)
        self._refit_every_s, self._score_every_s = refit_every_s, score_every_s
        self._on_fault = on_fault
        self._failed_rounds = Counter(
            "corticast_accuracy_ar_failed_rounds",
            "Rounds of the live AR baseline's thread (refit, scoring) that raised; the fit is "
            "dropped and the round retried",
            registry=registry or CollectorRegistry(),
        )

    def _work(self) -> None:
        refits = RefitSchedule(self._refit_every_s)
        accuracy, ring, frames = self._accuracy, self._ring, self._frames
        in_a_row, retry_at = 0, -math.inf
        while not self._stop_requested.wait(self._score_every_s):
            now = time.monotonic()
            if now < retry_at:
                continue
            try:
                refitted = refits.round(
                    now, accuracy.ar is not None, lambda: accuracy.refit_ar(ring, frames)
                )
                accuracy.score_ar(ring)
            except Exception as err:
                in_a_row += 1
                wait_s = doubling_wait(self._score_every_s, in_a_row, self._refit_every_s)
                retry_at = now + wait_s
                self._failed(err, in_a_row, wait_s)
            else:
                if in_a_row and refitted:
                    _log.warning("live AR baseline refitted after %d failed round(s)", in_a_row)
                    in_a_row = 0

    def _failed(self, error: Exception, in_a_row: int, wait_s: float) -> None:
        """Drop the fit and count the failure; the first of a run is reported as a fault."""
        self._accuracy.drop_ar()
        self._failed_rounds.inc()
        if in_a_row == 1:
            self._on_fault(
                f"live AR baseline failed ({type(error).__name__}: {error}); no AR is served "
                f"until a refit succeeds, tried again in {wait_s:.2f} s, then at most every "
                f"{self._refit_every_s:g} s"
            )


class RefitSchedule:
    """When the live AR baseline is refitted: in the first round ``refit_every_s`` after the
    last fit, and in every round while none is fitted (after start or a model change). One
    schedule for the daemon's thread (wall seconds), ``replay --fast`` and the benches' served
    column (session seconds), so they serve the blend with the AR the daemon would have had."""

    def __init__(self, refit_every_s: float) -> None:
        self._refit_every_s = refit_every_s
        self._next_fit = -math.inf

    def round(self, now: float, fitted: bool, refit: Callable[[], bool]) -> bool:
        """One round at time ``now``: call ``refit`` (it fits on the newest data and says
        whether a fit was installed) if one is due or nothing is ``fitted``; returns whether a
        new fit was installed."""
        if fitted and now < self._next_fit:
            return False
        if not refit():
            return False
        self._next_fit = now + self._refit_every_s
        return True


class SessionRefits:
    """The AR thread's rounds replayed on a recording's own clock: one every ``SCORE_EVERY_S``
    of frames, each refitting when :class:`RefitSchedule` says. For ``replay --fast`` and the
    benches' served column, which must serve the AR the daemon would have fitted.

    Parameters
    ----------
    settings
        ``ar_history_s`` (:attr:`history_frames`) and ``ar_refit_every_s``.
    sample_rate_hz
        Frames per second of the recording.
    """

    def __init__(self, settings: LoopSettings, sample_rate_hz: float) -> None:
        self.history_frames = history_frames(settings.ar_history_s, sample_rate_hz)
        """Newest frames each fit is made on, as the daemon's."""
        self._schedule = RefitSchedule(settings.ar_refit_every_s)
        self._rate = sample_rate_hz
        self._next_round = 0.0

    def at(self, newest: int, fitted: bool, refit: Callable[[], bool]) -> bool:
        """The round due, if one is, once frame ``newest`` has arrived: ``refit`` as
        :meth:`RefitSchedule.round` calls it; returns whether a new fit was installed."""
        if newest < self._next_round:
            return False
        self._next_round = newest + SCORE_EVERY_S * self._rate
        return self._schedule.round(newest / self._rate, fitted, refit)


def history_frames(history_s: float, sample_rate_hz: float) -> int:
    """Frames in ``history_s`` seconds of stream (at least one)."""
    return max(1, round(history_s * sample_rate_hz))
