"""A watch over the HTTP server's event loop where it runs in the loop's process
(``[api] own_process = false``, and ``ServedDaemon``).

There a request handler that blocks the event loop stalls every request, an operator's disarm
included, and no control process goes silent for the loop's process to notice
(``[api] control_hang_s``). This watch asks the event loop to run a no-op every second; one that
has answered none for ``control_hang_s`` is the same ``control`` fault: disarmed first, counted,
and the daemon not ready, naming it, until the event loop answers again. Unlike a control
process it cannot be killed and started again: it is this process's own main loop.

The daemon is never served with nothing watching that loop: a watch whose thread cannot start
refuses the start (:meth:`HttpLoopWatch.watch`), and one whose thread fails is a ``control``
fault too, the daemon not ready until it is restarted (:meth:`HttpLoopWatch._failed`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from service.core.errors import CorticastError
from service.core.worker import BackgroundWorker

if TYPE_CHECKING:  # the control process imports this module: not the loop's stages
    from service.daemon.daemon import Daemon

_log = logging.getLogger("corticast.api")

PROBE_EVERY_S = 1.0
"""How often the event loop is asked to run a no-op, and how long each ask waits."""


def answers(loop: asyncio.AbstractEventLoop, within_s: float = PROBE_EVERY_S) -> bool:
    """Whether ``loop`` runs a no-op within ``within_s`` (a request handler that blocks it would
    stall every request)."""
    done = asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop)
    try:
        done.result(timeout=within_s)
    except TimeoutError:
        done.cancel()
        return False
    return True


class HttpLoopWatchError(CorticastError, RuntimeError):
    """The watch over the HTTP API's event loop could not start (no thread to spare)."""


class HttpLoopWatch(BackgroundWorker):
    """Reports ``daemon``'s HTTP event loop blocked for ``hang_after_s``; see the module
    docstring. :meth:`watch` is called on the event loop (the app's startup), :meth:`stop`
    before the daemon stops (its stop runs on the event loop, blocking it)."""

    def __init__(self, daemon: Daemon, hang_after_s: float) -> None:
        super().__init__("corticast-http-loop-watch")
        self._daemon = daemon
        self._hang_after_s = hang_after_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._blocked: str | None = None
        """What the daemon was told while the event loop is blocked; None while it answers."""
        self.on_failure = self._failed

    def watch(self) -> None:
        """Watch the event loop this is called on.

        Raises
        ------
        HttpLoopWatchError
            If its thread cannot start (threads ran out), for the caller to refuse the daemon's
            start with it: served unwatched, a handler that blocked the event loop would leave
            every request unanswered, a disarm's included, with no one told. At start nothing
            is armed yet, and an engineer on call reads one line and sees systemd restart the
            unit, where a fault counted instead would leave a daemon running that is never
            ready, for a reason met only in its log.
        """
        self._loop = asyncio.get_running_loop()
        try:
            self.start()
        except RuntimeError as err:
            raise HttpLoopWatchError(
                f"the watch over the HTTP API's event loop could not start: {err}"
            ) from err

    def _work(self) -> None:
        assert self._loop is not None
        answered_at = time.monotonic()
        while not self._stop_requested.is_set():
            if answers(self._loop):
                if self._blocked is not None:
                    self._answering_again(time.monotonic() - answered_at)
                answered_at = time.monotonic()
                self._stop_requested.wait(PROBE_EVERY_S)
                continue
            silent = time.monotonic() - answered_at
            if self._blocked is None and silent >= self._hang_after_s:
                self._report_blocked(silent)

    def _report_blocked(self, silent_s: float) -> None:
        """A ``control`` fault, the daemon not ready while it lasts."""
        self._blocked = self._control_fault(
            f"HTTP API event loop blocked (no answer for {silent_s:.1f} s): no request is "
            "answered, an operator's disarm included",
            "HTTP API event loop blocked (no request answered, a disarm's included; "
            "[api] own_process = false serves it in the loop's process)",
        )

    def _failed(self, err: BaseException) -> None:
        """The watch's own thread failed (its error is logged and kept; no one reads it): from
        now on nothing would notice the event loop blocked. A ``control`` fault, as a blocked
        loop is, and the daemon not ready, naming it, until it is restarted: a watch cannot be
        trusted to come back by itself from an error no one foresaw."""
        self._control_fault(
            f"the watch over the HTTP API's event loop failed: {err!r}",
            f"the watch over the HTTP API's event loop failed ({err!r}): a blocked event loop "
            "would go unnoticed; restart the daemon",
        )

    def _control_fault(self, fault: str, not_ready: str) -> str:
        """Disarm first (the ``control`` fault ``fault``), then the daemon not ready, saying
        ``not_ready``, which is returned; a report that fails part way (the host is disarmed
        first) is logged and still leaves the daemon not ready."""
        try:
            self._daemon.supervisor.fault("control", fault)
        except Exception:
            _log.exception("could not report: %s", fault)
        finally:
            self._daemon.control_plane_down = not_ready
        return not_ready

    def _answering_again(self, silent_s: float) -> None:
        _log.warning("the HTTP API's event loop answers again, after %.1f s", silent_s)
        if self._daemon.control_plane_down == self._blocked:
            self._daemon.control_plane_down = None
        self._blocked = None
