"""A bridge's close on a thread of its own, started once and waited for by whoever needs it.

The daemon's supervisor must not wait for a close at all (a close behind a hung disk, or a
silent device at the longest ACK deadline, outlasts systemd's watchdog), and its stop waits a
bounded time; both may meet the same close, which must then be waited for, not started again
(a second close queues behind the first for the exchange lock and only adds its own wait).
A close that fails is reported once: raised to a caller waiting for it when it fails, else
handed to ``on_failure``, so a failure after every caller stopped waiting still reaches the
log.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class CloseThread:
    """Runs ``close`` on a thread of its own, started at once.

    Parameters
    ----------
    close
        The close; what it raises is its failure.
    on_failure
        Called (on the close's thread) with a failure no caller was waiting for.
    """

    def __init__(
        self, close: Callable[[], None], on_failure: Callable[[BaseException], None]
    ) -> None:
        self._close = close
        self._on_failure = on_failure
        self._lock = threading.Lock()
        self._waiting = 0
        self._failure: BaseException | None = None
        self.began = time.monotonic()
        """Monotonic time the close began: a caller's bound counts from it."""
        self._thread = threading.Thread(
            target=self._run, name="corticast-bridge-close", daemon=True
        )
        self._thread.start()

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait_until(self, deadline: float) -> bool:
        """Wait for the close until ``deadline`` (monotonic); whether it has finished.

        Raises
        ------
        BaseException
            What the close raised, if it failed while this waited (or before, unreported).
        """
        with self._lock:
            self._waiting += 1
        try:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        finally:
            with self._lock:
                self._waiting -= 1
                failure, self._failure = self._failure, None
        if failure is not None:
            raise failure
        return self.done

    def _run(self) -> None:
        try:
            self._close()
        except BaseException as err:
            with self._lock:
                if self._waiting:
                    self._failure = err
                    return
            self._on_failure(err)
