"""The daemon behind a real uvicorn server on a background thread.

For programs that run the daemon beside other work in one process (``corticast demo``, the
integration tests): the API shares the loop's process, as with ``[api] own_process = false``.
``corticast serve`` runs the API and the query socket in a process of their own by default
(``service.api.control_process``) and owns the signals on its main thread.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

import uvicorn

from service.api.app import create_app
from service.api.serving import base_url, uvicorn_config
from service.config import Settings
from service.daemon.daemon import Daemon

_START_TIMEOUT_S = 60.0


class ServedDaemon:
    """Context manager: the daemon and its HTTP API are up inside the block.

    Raises
    ------
    RuntimeError
        If the server does not come up (the daemon's start failed: see the log).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.daemon = Daemon(settings)
        app = create_app(
            self.daemon, settings.api, on_startup=self.daemon.start, on_shutdown=self.daemon.stop
        )
        self.server = uvicorn.Server(uvicorn_config(app, settings.api))
        self._thread = threading.Thread(target=self.server.run, name="corticast-http", daemon=True)
        self.url = base_url(settings.api)

    def __enter__(self) -> ServedDaemon:
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self.server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.server.should_exit = True
                raise RuntimeError("the daemon's HTTP server did not start (see the log)")
            time.sleep(0.05)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.should_exit = True
        self._thread.join(10)
