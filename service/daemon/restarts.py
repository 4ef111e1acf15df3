"""Restarting a worker whose thread ended, at doubling waits while it keeps failing.

One rule for every worker the daemon restarts, in whichever process it runs: the daemon's
supervisor restarts the loop's process's stages with it, and the control process
(``[api] own_process``) its ZeroMQ query server (``service.api.query_watch``), so a fault is
reported (a disarm first) and backed off the same way in both.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from service.core.backoff import doubling_wait
from service.core.worker import BackgroundWorker
from service.daemon._repair_schedule import MAX_RETRY_S

_log = logging.getLogger("corticast.daemon")


class WorkerRestarts:
    """One worker's restarts: how many failures in a row came soon after its last restart.

    Parameters
    ----------
    every_s
        The watcher's period: the first wait before a worker that failed soon after its
        restart is started again.
    """

    def __init__(self, every_s: float) -> None:
        self._every_s = every_s
        self._in_a_row = 0
        self._restarted_at = -math.inf
        self._counted: BaseException | None = None
        """The failure reported and not yet restarted from (a start that raises leaves the
        worker holding it, to be found again at the next try)."""

    def restart(
        self, worker: BackgroundWorker, name: str, report: Callable[[BaseException], None]
    ) -> None:
        """Start ``worker`` (whose thread has ended) again; ``report`` its failure first, once
        per failure (a fault: the caller disarms first). A ``report`` that raises leaves the
        failure unreported and the worker down, for the next try to report again.

        A worker that fails again less than ``MAX_RETRY_S`` after its restart is started again
        only after a doubling wait from that restart (one period, then two, four, ... up to
        ``MAX_RETRY_S``), as a failing repair step is retried: one that ends at once every
        time was restarted every round, each time a fault counted, a disarm sent to the device
        and a traceback logged, ten a second. It stays down meanwhile. A start that raises
        raises here (the caller retries it at its own backoff)."""
        now = time.monotonic()
        try:
            worker.raise_if_failed()
        except Exception as err:
            if err.__cause__ is not self._counted:
                report(err)
                self._counted = err.__cause__
                soon = now - self._restarted_at < MAX_RETRY_S
                self._in_a_row = self._in_a_row + 1 if soon else 1
            if self._in_a_row > 1:
                wait = doubling_wait(self._every_s, self._in_a_row - 1, MAX_RETRY_S)
                if now < self._restarted_at + wait:
                    return
        worker.start()
        self._restarted_at, self._counted = time.monotonic(), None  # its traceback freed
        _log.warning("%s restarted", name)
