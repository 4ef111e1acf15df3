"""How uvicorn serves the API: where, with which certificate (``[api]``), how long a client may
take to send a request's head, and how many connections it serves at once.

``corticast serve`` and :class:`service.api.served.ServedDaemon` build their servers from
the same options, so the TLS that the config asks for is what both serve.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from typing import Any

import h11
import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.flow_control import service_unavailable
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.api._request_guard import DISARM_PATHS
from service.config import ApiSettings
from service.core.net import is_loopback_host
from service.core.rate_limited_log import RateLimitedLog

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


def why_not_listening(api: ApiSettings) -> str | None:
    """Why nothing can listen at ``[api] host`` and ``port`` now, and what to change, or None.

    Asked after the server failed to start: uvicorn only logs why, on the thread or in the
    process it ran in, so the one line a command ends with would otherwise not name the port.
    """
    family = socket.AF_INET6 if ":" in api.host else socket.AF_INET
    try:
        with socket.create_server((api.host, api.port), family=family):
            return None
    except OSError as err:  # strerror alone: Python's message repeats the address
        problem = os.strerror(err.errno) if err.errno else str(err)
    return (
        f"the HTTP API cannot listen at {api.host}:{api.port} ({problem}): if another program "
        "(another demo?) listens there, set another [api] port in the --config file or "
        "CORTICAST_API__PORT"
    )


def uvicorn_config(app: Any, api: ApiSettings) -> uvicorn.Config:
    """The server for ``app`` at ``api``: corticast's logging kept (JSON lines under systemd),
    no access log, a one-second graceful shutdown (stopping must not wait on clients), and
    ``[api] limit_concurrency`` (applied by :class:`BoundedHeadH11Protocol`, which spares the
    disarm). uvicorn's ``timeout_keep_alive`` (5 s) and ``backlog`` (2048) are kept: an idle
    keep-alive connection, which counts against the limit, is closed within 5 s, or at once
    to make room for a request beyond the limit, and a connection in the kernel's queue costs
    the process nothing until it is accepted."""
    return uvicorn.Config(
        app,
        **uvicorn_options(api),
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=1,
        http=BoundedHeadH11Protocol,
        limit_concurrency=api.limit_concurrency,
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


_UPGRADES_REFUSED = RateLimitedLog(_log)
"""Requests to upgrade a connection, said at most once an interval (any client may send them)."""
_OVER_THE_LIMIT = RateLimitedLog(_log)
"""Requests answered 503 for ``limit_concurrency``, said at most once an interval."""

REQUEST_HEAD_TIMEOUT_S = 10.0
"""Longest a connection may take to send a request's head, from when the server waits for it
(connected, or its last answer sent)."""


class BoundedHeadH11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1, with the wait for a request's head bounded.

    uvicorn bounds the wait between requests (``timeout_keep_alive``) only after an answer, and
    only until the next request's first byte: a client that connected and sent nothing, or its
    head a byte at a time, held its connection (a file descriptor of the process serving the
    API; a thousand of them and an operator's disarm could not connect) for as long as it
    liked, before any token was checked. Such a connection is closed ``head_timeout_s`` after
    the wait began, however many bytes came meanwhile. The wait after an answer includes the
    rest of the answered request's body: an open route answers without reading one, and each
    byte of it cancels uvicorn's keep-alive timer, which only an answer arms again. A body
    before its answer is not bounded here: on ``/control/*`` only an authenticated client
    sends one (``_request_guard``).

    It also applies uvicorn's ``limit_concurrency`` in uvicorn's place: uvicorn answers 503 to
    every request while the limit is reached, an operator's disarm included, so a client
    holding that many connections open would keep stimulation from being disarmed over HTTP.
    The disarm is served whatever the load (it needs no worker thread; without the token it is
    refused at once); any other request beyond the limit closes the keep-alive connection idle
    longest, if one is, and is served, else it is answered 503, as uvicorn would, and that is
    logged at most once an interval (uvicorn wrote a warning for each).
    """

    head_timeout_s = REQUEST_HEAD_TIMEOUT_S
    _head_timer: asyncio.TimerHandle | None = None

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._limit, self.limit_concurrency = self.limit_concurrency, None  # checked here
        self._served_app, self.app = self.app, self._within_the_limit

    async def _within_the_limit(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app, or uvicorn's 503 for a request other than a disarm over the limit that no
        idle keep-alive connection could make room for."""
        if (
            self._limit is None
            or scope.get("path") in DISARM_PATHS
            or not self._over_the_limit()
            or self._closed_an_idle_connection()
        ):
            await self._served_app(scope, receive, send)
            return
        _OVER_THE_LIMIT.log(
            logging.WARNING,
            "answered 503: %d connections open, %d requests in progress, [api] "
            "limit_concurrency is %d (a disarm is still served)",
            len(self.connections), len(self.tasks) - 1, self._limit,
        )  # fmt: skip
        await service_unavailable(scope, receive, send)

    def _over_the_limit(self) -> bool:
        """uvicorn's test: this many connections open (this one counted), or requests in
        progress (this one not: its task is already among them)."""
        return len(self.connections) >= self._limit or len(self.tasks) - 1 >= self._limit

    def _closed_an_idle_connection(self) -> bool:
        """Whether, the limit reached by connections open rather than requests in progress,
        the one idle longest between two requests was closed to make room for this request,
        as its keep-alive timeout would have closed it (its client opens another): held open
        by a request every few seconds each, idle connections kept out everyone else."""
        if len(self.tasks) - 1 >= self._limit:
            return False
        idle = [
            other
            for other in self.connections
            if isinstance(other, H11Protocol)
            and other.timeout_keep_alive_task is not None  # uvicorn's: idle since an answer
            and not other.transport.is_closing()
        ]
        if not idle:
            return False
        longest = min(idle, key=lambda other: other.timeout_keep_alive_task.when())
        longest.timeout_keep_alive_handler()
        return True

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._bound_the_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._bound_the_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._bound_the_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _bound_the_head(self) -> None:
        """Start the head's timer when the server begins to wait for a head; stop it once one
        has come (h11 is past IDLE on the client's side, before an answer)."""
        if not self._waiting_for_a_head() or self.transport.is_closing():
            self._stop_head_timer()
        elif self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_too_slow)

    def _waiting_for_a_head(self) -> bool:
        """No request has come, or the last is answered and the client still owes its body."""
        their_state = self.conn.their_state
        return their_state is h11.IDLE or (
            their_state is h11.SEND_BODY and self.conn.our_state is h11.DONE
        )

    def _unsupported_upgrade_warning(self) -> None:
        """uvicorn writes two warnings for every request asking to upgrade its connection
        (no WebSocket library is installed: this API serves HTTP/1.1 alone), which anyone may
        send, unauthenticated, in a loop: the journal's rate limit would then drop the
        daemon's own lines. One line at most an interval, counting the rest."""
        _UPGRADES_REFUSED.log(
            logging.WARNING,
            "refused a request to upgrade its connection to %r; this API serves HTTP/1.1 only",
            (self._get_upgrade() or b"").decode("latin-1")[:40],
        )

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._waiting_for_a_head() and not self.transport.is_closing():
            _log.debug(
                "closed a connection that sent no request head within %g s", self.head_timeout_s
            )
            self.transport.close()
