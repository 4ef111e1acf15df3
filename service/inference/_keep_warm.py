"""Keep a GPU model warm: run it when nobody has for a while.

A GPU that has idled drops its clocks and a session's first call after a pause is slow; in a
closed loop the first prediction after a quiet spell is exactly the one that matters. This
worker runs a dummy prediction whenever the predictor has been idle for ``idle_s``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from service.core.worker import BackgroundWorker


class KeepWarm(BackgroundWorker):
    """Calls ``run_once`` (under ``lock``) after every ``idle_s`` without a real call.

    The owner calls :meth:`touch` after each real prediction, under the same lock, so a warm-up
    run never delays a real one by more than one inference.
    """

    def __init__(self, run_once: Callable[[], None], lock: threading.Lock, idle_s: float) -> None:
        super().__init__("corticast-keep-warm")
        if not idle_s > 0:
            raise ValueError(f"'idle_s' must be > 0, got {idle_s!r}")
        self._run_once = run_once
        self._lock = lock
        self._idle_s = idle_s
        self._last_use = time.monotonic()
        self.runs = 0

    def touch(self) -> None:
        self._last_use = time.monotonic()

    def _work(self) -> None:
        while not self._stop_requested.wait(self._idle_s / 4):
            if time.monotonic() - self._last_use < self._idle_s:
                continue
            with self._lock:
                self._run_once()
                self.touch()
                self.runs += 1
