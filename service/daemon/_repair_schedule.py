"""When the daemon's supervisor retries each of its repair steps, and what failed last.

Every step (restart the ingestor, reload the model, restart the wave stage, reopen the bridge,
...) is tried on its own: one that raises is logged and counted, and retried the next round,
then after twice the previous wait, up to :data:`MAX_RETRY_S`. So a step that keeps failing (a
model file gone, a stimulator switched off) neither floods the log nor holds up the other
steps, and the round still ends with the watchdog ping.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter

from service.core.backoff import doubling_wait

_log = logging.getLogger("corticast.daemon")

MAX_RETRY_S = 5.0
"""Longest wait between two tries of a step that keeps failing."""


@dataclass(frozen=True)
class _Failing:
    in_a_row: int
    retry_at: float
    error: str


class RepairSchedule:
    """Failures of the supervisor's steps and when each is due again; thread-safe (a model
    reload runs on its own thread and reports here too).

    Parameters
    ----------
    failures
        Counter with a ``step`` label, incremented on every failure.
    first_retry_s
        Wait after a step's first failure (the supervisor's period: the next round).
    clock
        Monotonic seconds.
    """

    def __init__(
        self,
        failures: Counter,
        first_retry_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._failures = failures
        self._first_retry_s = first_retry_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failing: dict[str, _Failing] = {}

    def due(self, step: str) -> bool:
        """Whether ``step`` may be tried now (it is not failing, or its wait is over)."""
        with self._lock:
            failing = self._failing.get(step)
        return failing is None or self._clock() >= failing.retry_at

    def failed(self, step: str, error: BaseException) -> None:
        """Log and count ``error``; ``step`` is due again after the next wait."""
        with self._lock:
            previous = self._failing.get(step)
            in_a_row = 1 if previous is None else previous.in_a_row + 1
            wait = doubling_wait(self._first_retry_s, in_a_row, MAX_RETRY_S)
            self._failing[step] = _Failing(
                in_a_row, self._clock() + wait, f"{type(error).__name__}: {error}"
            )
        self._failures.labels(step).inc()
        _log.error(
            "supervisor: %s failed (%d in a row; tried again in %.1f s): %s",
            step, in_a_row, wait, error, exc_info=error if in_a_row == 1 else None,
        )  # fmt: skip

    def succeeded(self, step: str) -> None:
        """``step`` found its stage working (or repaired it): forget its failures."""
        with self._lock:
            previous = self._failing.pop(step, None)
        if previous is not None:
            _log.warning("supervisor: %s works again after %d failure(s)", step, previous.in_a_row)

    def failing(self) -> dict[str, str]:
        """Step -> its latest error, for the steps failing now."""
        with self._lock:
            return {step: failing.error for step, failing in self._failing.items()}
