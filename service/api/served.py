"""The daemon behind a real uvicorn server on a background thread.

For programs that run the daemon beside other work in one process (``corticast demo``, the
integration tests): the API shares the loop's process, as with ``[api] own_process = false``,
its event loop watched as there (``service.api.http_loop_watch``).
``corticast serve`` runs the API and the query socket in a process of their own by default
(``service.api.control_process``) and owns the signals on its main thread.
"""

from __future__ import annotations

import contextlib
import threading
import time
from types import TracebackType

import uvicorn

from service.api.app import create_app
from service.api.http_loop_watch import HttpLoopWatch, HttpLoopWatchError
from service.api.serving import base_url, uvicorn_config, why_not_listening
from service.config import Settings
from service.core.errors import EXIT_FAILED, CorticastError
from service.daemon.daemon import Daemon

_START_TIMEOUT_S = 60.0


class ServedDaemonError(CorticastError, RuntimeError):
    """The daemon, or the HTTP server in front of it, did not start; says why. Both fail on
    uvicorn's thread, which only logs the cause: ``corticast demo`` showed a traceback ending
    in "did not start (see the log)" for a port in use or a second rig of the same stream."""


class ServedDaemon:
    """Context manager: the daemon and its HTTP API are up inside the block.

    Raises
    ------
    ServedDaemonError
        If the daemon's start fails (its error, and exit status), or the server cannot listen
        at ``[api] host`` and ``port`` (why, and the setting to change).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.daemon = Daemon(settings)
        self._start_error: Exception | None = None
        self._watch = HttpLoopWatch(self.daemon, settings.api.control_hang_s)
        app = create_app(self.daemon, settings.api, on_startup=self._start, on_shutdown=self._stop)
        self.server = uvicorn.Server(uvicorn_config(app, settings.api))
        self._thread = threading.Thread(target=self._serve, name="corticast-http", daemon=True)
        self.url = base_url(settings.api)

    def _serve(self) -> None:
        """uvicorn's run, whose failed start (the daemon's, or the listening socket's) ends in
        SystemExit: on this thread it only ends the thread, and :meth:`__enter__` says why."""
        with contextlib.suppress(SystemExit):
            self.server.run()

    def _start(self) -> None:
        """The daemon's start, then the watch over the event loop
        (``service.api.http_loop_watch``), either's error kept for :meth:`__enter__` to raise;
        a watch that cannot start stops the daemon, never served unwatched (raised out of the
        lifespan's startup, the error skips its end, which would stop it)."""
        try:
            self.daemon.start()
        except Exception as err:
            self._start_error = err
            raise
        try:
            self._watch.watch()
        except HttpLoopWatchError as err:
            self._start_error = err
            self.daemon.stop()
            raise

    def _stop(self) -> None:
        self._watch.stop()  # first: the daemon's stop holds the event loop it watches
        self.daemon.stop()

    def __enter__(self) -> ServedDaemon:
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.server.should_exit = True
                raise self._why_not_started()
            time.sleep(0.05)
        return self

    def _why_not_started(self) -> ServedDaemonError:
        if (cause := self._start_error) is not None:
            error = ServedDaemonError(f"the daemon could not start: {cause}")
            error.exit_code = getattr(cause, "exit_code", EXIT_FAILED)
            return error
        why = why_not_listening(self.settings.api)
        return ServedDaemonError(
            why or f"the daemon's HTTP API did not start at {self.url} (see the log above)"
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.should_exit = True
        self._thread.join(10)
