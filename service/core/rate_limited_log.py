"""A log line that anyone on the network can cause, written at most once an interval.

A client that sends bad requests in a loop must not fill the journal (or the disk) with them;
the operator still learns that it happens, and how often: the next line written says how many
were left out since the last one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class RateLimitedLog:
    """``log()`` writes through ``logger`` at most once per ``interval_s``; the rest are counted.

    Parameters
    ----------
    logger
        Where the lines go.
    interval_s
        Shortest time between two lines.
    clock
        Monotonic seconds (tests pass their own).
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"'interval_s' must be > 0, got {interval_s!r}")
        self._logger, self._interval_s, self._clock = logger, interval_s, clock
        self._lock = threading.Lock()
        self._next_at: float | None = None
        self.suppressed = 0
        """Lines left out since the last one written."""

    def log(
        self, level: int, message: str, *args: object, exc_info: BaseException | None = None
    ) -> bool:
        """Write ``message % args`` (with ``exc_info``'s traceback) unless a line was written
        less than the interval ago; returns whether it was written."""
        with self._lock:
            now = self._clock()
            if self._next_at is not None and now < self._next_at:
                self.suppressed += 1
                return False
            left_out, self.suppressed = self.suppressed, 0
            self._next_at = now + self._interval_s
        note = f" ({left_out} more like it left out since the last)" if left_out else ""
        self._logger.log(
            level,
            message + "%s; at most one such line every %g s",
            *args,
            note,
            self._interval_s,
            exc_info=exc_info,
        )
        return True
