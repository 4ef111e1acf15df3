"""The control process's watch over its ZeroMQ query server (``[api] own_process``).

In the loop's process the daemon's supervisor restarts a query server whose thread ended; in
the control process nothing did: its silence (it says "alive" only while the query socket runs)
made the loop's process kill it after ``[api] control_hang_s``, the HTTP API with it, as a
``control`` fault. This watch restarts it by the same rule (``service.daemon.restarts``): each
failure is first reported to the loop's process, which disarms and counts it under ``query``
as it does its own query server's, then the server is started again, at doubling waits while
it keeps failing; meanwhile the loop's process is told why the queries go unanswered, so the
daemon is not ready, naming it. The dying thread itself has the loop's process disarm at once,
as a failing thread there does.
"""

from __future__ import annotations

import logging
import math
import time

from service.api.remote_daemon import LoopUnreachableError, RemoteCallError, RemoteDaemon
from service.core.backoff import doubling_wait
from service.core.rate_limited_log import RateLimitedLog
from service.core.worker import BackgroundWorker
from service.daemon.restarts import MAX_RETRY_S, WorkerRestarts
from service.zmq_api.query import QueryServer

_log = logging.getLogger("corticast.control")

_NAME = "ZeroMQ query server (control process)"
_UNTOLD = "untold"
"""What the loop's process is taken to have been told at the start and after a failure's
report: no reason the watch sends, so its next news is always sent. At the start too: a report
from the control process before this one, served late, may stand there."""


class QueryWatch(BackgroundWorker):
    """Every ``every_s``: the query server answering, or reported and restarted.

    Parameters
    ----------
    query
        The control process's query server, started before the watch.
    daemon
        The loop's process, told each failure and why the queries go unanswered.
    every_s
        The period of the watch (``[loop] supervise_every_s``, the supervisor's).
    """

    def __init__(self, query: QueryServer, daemon: RemoteDaemon, every_s: float) -> None:
        super().__init__("corticast-query-watch")
        query.on_failure = self._disarm_at_once
        self._query = query
        self._daemon = daemon
        self._every_s = every_s
        self._restarts = WorkerRestarts(every_s)
        self._told: str | None = _UNTOLD
        """Why the queries go unanswered, as the loop's process was last told (None: they
        are answered)."""
        self._start_failures = 0
        self._retry_at = -math.inf
        self._round_failures = RateLimitedLog(_log)

    def _work(self) -> None:
        while not self._stop_requested.wait(self._every_s):
            try:
                self._round()
            except Exception as err:  # the link not answering: the next round tries again
                self._round_failures.log(logging.ERROR, "query watch: %s", err)

    def _round(self) -> None:
        if self._query.running:
            self._tell(None)
            return
        if self._stop_requested.is_set() or time.monotonic() < self._retry_at:
            return
        try:
            self._restarts.restart(self._query, _NAME, self._report)
        except (LoopUnreachableError, RemoteCallError):
            raise  # the failure unreported: reported at the next round, and only then restarted
        except Exception as err:  # a start that raised (its endpoint taken): tried again later
            self._start_failures += 1
            wait = doubling_wait(self._every_s, self._start_failures, MAX_RETRY_S)
            self._retry_at = time.monotonic() + wait
            _log.error("%s could not start again (tried again in %.1f s): %s", _NAME, wait, err)
            self._tell(f"{_NAME} not running: restart failed: {err}")
            return
        self._start_failures = 0
        if self._query.running:
            self._tell(None)

    def _disarm_at_once(self, error: BaseException) -> None:
        """The query thread's failure callback: the loop's process disarms as it fails (and
        counts it for an arm under way), as a thread of its own does there
        (``Supervisor.disarm_at_once``), not at this watch's next round."""
        self._daemon.call("query_failing", str(error))

    def _report(self, error: BaseException) -> None:
        """The loop's process disarms, counts the fault and is not ready until told again."""
        self._daemon.call("query_failed", str(error))
        self._told = _UNTOLD

    def _tell(self, down: str | None) -> None:
        if down != self._told:
            self._daemon.call("queries_down", down)
            self._told = down
