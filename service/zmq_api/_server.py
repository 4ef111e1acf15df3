"""One bound ZeroMQ server socket with its own context and, under CURVE, its own authenticator.

Each server owns its context so that closing it can never hang on, or break, another box's
sockets, and so that each has the one ZAP handler a context allows.
"""

from __future__ import annotations

import logging
import os
import socket
import stat

import zmq
from zmq.auth.thread import ThreadAuthenticator

from service.zmq_api._security import (
    check_bind_allowed,
    is_loopback,
    load_secret_keys,
    make_curve_server,
    start_authenticator,
)
from service.zmq_api.settings import ZmqSettings

_log = logging.getLogger("corticast.zmq")

_PLAIN_LOOPBACK = (
    " (plain TCP without CURVE: every user of this host may connect; deploy/README.md, "
    '"Who may connect to ZeroMQ")'
)
"""Said of a plain loopback TCP bind: a peer that connects may make the process hold memory
without bound (``publisher.MAX_SUBSCRIPTION_BYTES``), so on a shared host only the host's
firewall or an ipc endpoint with a group keeps other users out."""


class ServerSocket:
    """Bind a socket of ``socket_type`` at ``settings.<endpoint_name>``; :meth:`close` undoes it.

    Parameters
    ----------
    settings
        Endpoints and CURVE keys.
    socket_type
        ``zmq.PUB`` or ``zmq.ROUTER``.
    endpoint_name
        ``"pub_endpoint"`` or ``"query_endpoint"``: the settings key, also named in errors.
    options
        Socket options set before the bind (high-water marks, message size limits).
    context_options
        Options of the socket's own context, set before its I/O thread starts (that thread's
        scheduling policy and priority).
    also_endpoint_name
        The settings key of a second endpoint the socket binds as well when it is set
        (``"pub_ipc_endpoint"``), or None.
    """

    def __init__(
        self,
        settings: ZmqSettings,
        socket_type: int,
        endpoint_name: str,
        options: dict[int, int],
        context_options: dict[int, int] | None = None,
        also_endpoint_name: str | None = None,
    ) -> None:
        requested = getattr(settings, endpoint_name)
        also = None if also_endpoint_name is None else getattr(settings, also_endpoint_name)
        for name, endpoint in ((endpoint_name, requested), (also_endpoint_name, also)):
            if endpoint is not None:
                check_bind_allowed(
                    name,
                    endpoint,
                    curve=settings.curve,
                    allow_insecure=settings.allow_insecure_remote,
                )
        self.context = zmq.Context()
        for option, value in (context_options or {}).items():
            self.context.set(option, value)
        self._authenticator: ThreadAuthenticator | None = None
        self.socket: zmq.Socket = self.context.socket(socket_type)
        try:
            self.socket.linger = 0  # never hold up shutdown for a subscriber's unread queue
            for option, value in options.items():
                self.socket.setsockopt(option, value)
            if settings.curve:
                keys = load_secret_keys("curve_secret_key_file", settings.curve_secret_key_file)
                self._authenticator = start_authenticator(
                    self.context, settings.curve_allowed_clients_dir
                )
                make_curve_server(self.socket, keys)
            self.endpoint: str = self._bind(endpoint_name, requested, settings.curve)
            self.also_endpoint: str | None = (
                None if also is None else self._bind(also_endpoint_name, also, settings.curve)
            )
        except BaseException:
            self.close()
            raise

    def _bind(self, name: str, endpoint: str, curve: bool) -> str:
        """Bind ``endpoint`` (the settings key ``name``); returns it as bound (the port the OS
        chose for ``tcp://HOST:*``)."""
        if endpoint.startswith("ipc://"):
            # libzmq removes whatever is at the path and binds anyway: it would silently take
            # a live endpoint over, or delete a file the path was mistyped onto.
            if ipc_in_use(endpoint):
                raise OSError(
                    f"cannot bind '{name}' {endpoint!r}: another process is listening there (a "
                    "second daemon?); give each daemon its own path"
                )
            if not _socket_or_nothing(endpoint.removeprefix("ipc://")):
                raise OSError(
                    f"cannot bind '{name}' {endpoint!r}: a file that is not a socket is there (a "
                    "mistyped path?); it is left as it is: name a path of its own"
                )
        try:
            self.socket.bind(endpoint)
        except zmq.ZMQError as err:
            raise OSError(f"cannot bind '{name}' {endpoint!r}: {err}") from err
        bound = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        if curve or not endpoint.startswith("tcp://"):
            _log.info("%s bound at %s%s", name, bound, " (CURVE)" if curve else "")
        elif is_loopback(endpoint):
            # The documented default, so INFO, not a warning each start: whether other users
            # share this host is for the operator to know, and the line says where to read on.
            _log.info("%s bound at %s%s", name, bound, _PLAIN_LOOPBACK)
        else:  # allowed by allow_insecure_remote: on purpose, and said at every start
            _log.warning(
                "INSECURE: %r bound at %s without CURVE (allow_insecure_remote): anyone on that "
                "network can connect and read it; set curve_secret_key_file and "
                "curve_allowed_clients_dir",
                name,
                bound,
            )
        return bound

    @property
    def closed(self) -> bool:
        return self.socket.closed

    def close(self) -> None:
        """Close the socket (dropping anything unsent), the authenticator and the context."""
        if not self.socket.closed:
            self.socket.close(linger=0)
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None
        if not self.context.closed:
            self.context.term()


def _socket_or_nothing(path: str) -> bool:
    """True when ``path`` is free for a bind to take: nothing there, a unix socket (one left
    by a stopped daemon), an abstract ``@name``, or what cannot be looked at (the bind says)."""
    if path.startswith("@"):
        return True
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return True
    return stat.S_ISSOCK(mode)


def ipc_in_use(endpoint: str) -> bool:
    """True when something accepts connections at the unix socket of ``ipc://PATH``
    (``ipc://@name``: Linux's abstract namespace)."""
    path = endpoint.removeprefix("ipc://")
    address = "\0" + path[1:] if path.startswith("@") else path
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(address)
        except OSError:  # no file, a stale file nobody listens on, or not a socket
            return False
    return True
