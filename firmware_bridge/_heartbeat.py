"""The thread that keeps the device armed: one HEARTBEAT per period, on a deadline schedule."""

from __future__ import annotations

import time
from collections.abc import Callable

from service.core.worker import BackgroundWorker


class _HeartbeatWorker(BackgroundWorker):
    """Calls ``beat`` every ``period_s`` (scheduled against deadlines, not sleeps); when the
    loop ends for any reason, ``on_stopped`` gets the error that ended it (or None) so the
    bridge can disarm first and report second."""

    def __init__(
        self,
        beat: Callable[[], object],
        period_s: float,
        on_stopped: Callable[[BaseException | None], None],
    ) -> None:
        super().__init__("corticast-bridge-heartbeat")
        self._beat = beat
        self._period_s = period_s
        self._on_stopped = on_stopped

    @property
    def error(self) -> BaseException | None:
        return self._error

    def _work(self) -> None:
        due = time.monotonic() + self._period_s
        while not self._stop_requested.wait(max(0.0, due - time.monotonic())):
            self._beat()
            # A late beat is not followed by a burst of catch-up beats.
            due = max(due + self._period_s, time.monotonic())

    def _finished(self) -> None:
        self._on_stopped(self._error)
