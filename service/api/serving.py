"""How uvicorn serves the API: where, and with which certificate (``[api]``).

``corticast serve`` and :class:`service.api.served.ServedDaemon` build their servers from
the same options, so the TLS that the config asks for is what both serve.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

import uvicorn

from service.config import ApiSettings
from service.core.net import is_loopback_host

_log = logging.getLogger("corticast.api")


def uvicorn_options(api: ApiSettings) -> dict[str, Any]:
    """``uvicorn.Config`` keywords for ``api``; warns when plain HTTP faces a network."""
    options: dict[str, Any] = {"host": api.host, "port": api.port}
    if api.tls:
        options |= {"ssl_certfile": str(api.ssl_certfile), "ssl_keyfile": str(api.ssl_keyfile)}
    elif not is_loopback_host(api.host):
        _log.warning(
            "INSECURE: the HTTP API serves plain HTTP on %r (api.allow_insecure_remote): the "
            "bearer token and every answer cross the network in cleartext; set "
            "api.ssl_certfile and api.ssl_keyfile",
            api.host,
        )
    return options


def base_url(api: ApiSettings) -> str:
    """The URL a client on this machine reaches the API at."""
    return f"{'https' if api.tls else 'http'}://{api.host}:{api.port}"


def uvicorn_config(app: Any, api: ApiSettings) -> uvicorn.Config:
    """The server for ``app`` at ``api``: corticast's logging kept (JSON lines under systemd),
    no access log, and a one-second graceful shutdown (stopping must not wait on clients)."""
    return uvicorn.Config(
        app,
        **uvicorn_options(api),
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=1,
    )


def exit_zero_after_graceful_shutdown() -> None:
    """uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal against the
    handler that was there before it; with the default one the process would die of it (status
    -15) after a clean stop. A do-nothing handler there makes the exit status 0. Call on the
    main thread, before ``Server.run``."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _already_handled)


def _already_handled(signum: int, frame: object) -> None:
    """uvicorn's graceful shutdown handled the signal; nothing is left to do."""
