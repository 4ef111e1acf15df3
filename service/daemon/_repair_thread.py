"""A supervisor repair that may block, run on a thread of its own.

A model reload (seconds of session building), a bridge's open (the audit log read back, a
start record made durable, behind a disk whose fsync may hang) and an ingestor's restart (the
stream looked for and opened over the network) would stop the supervisor's rounds, and their
watchdog pings, for as long as they take. Each runs here instead; the next rounds find its
result in place, and a failure is kept for the next round to raise, once, for the step's
backoff to retry it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class RepairThread:
    """Runs ``work`` on a thread named ``name``, one run at a time."""

    def __init__(self, work: Callable[[], None], name: str) -> None:
        self._work = work
        self._name = name
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def running(self) -> bool:
        """Whether a run is still under way."""
        return self._thread is not None and self._thread.is_alive()

    def start_unless_running(self, stopping: bool) -> None:
        """Start a run, unless one is under way or the daemon is ``stopping``.

        Raises
        ------
        Exception
            What the last run raised, once, instead of starting another.
        """
        if self.running:
            return
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if stopping:
            return
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the run under way, if any (for a stop, and tests)."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            self._work()
        except Exception as err:
            self._error = err
