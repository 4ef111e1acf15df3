"""Frames over TCP: a byte stream, so the decoder resynchronises on sync bytes."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

from firmware_bridge.errors import TransportError
from firmware_bridge.transport import RECONNECT_FIRST_S, RECONNECT_LONGEST_S, Transport
from service.core.backoff import doubling_wait
from service.core.readable import readable_within

_log = logging.getLogger("corticast.bridge.transport")

_RECV_BYTES = 4096


class TcpTransport(Transport):
    """A TCP connection, as client (host side) or as a one-peer server (device side).

    Build one with :meth:`connect` or :meth:`listen`. The client connects on first use and
    again after the connection drops, so a host can start before the device is up; the server
    serves one peer at a time and takes the newest connection (a host that reconnected).

    A peer that hangs up is a :class:`TransportError` on the next :meth:`receive`, never an
    empty read. The client then reconnects on the next :meth:`send`, at once if the lost
    connection had carried data, otherwise after a back-off (0.1 s, doubling up to 2 s) during
    which :meth:`send` fails without touching the network: a device that is down, or that
    accepts and hangs up, is not hammered by every heartbeat. ``clock`` (monotonic seconds)
    times the back-off.

    No socket call waits longer than ``connect_timeout_s``: a send to a peer that stops
    reading fails then, and drops that peer, instead of blocking the thread that sends (the
    emulator's, which also runs the heartbeat watchdog) for good.
    """

    datagram = False

    def __init__(
        self,
        address: tuple[str, int],
        *,
        listener: socket.socket | None = None,
        connect_timeout_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._address = address
        self._clock = clock
        self._listener = listener
        self._connect_timeout_s = connect_timeout_s
        self._sock: socket.socket | None = None
        self._peer = address if listener is None else None  # the server learns it on accept
        self._connection_id = 0
        self._heard_from_peer = False  # bytes arrived on the current connection
        self._failed_connections = 0  # in a row: refused, or ended before any byte arrived
        self._retry_at = 0.0
        self._closed = False
        self._close_lock = threading.Lock()

    @classmethod
    def connect(cls, host: str, port: int, *, timeout_s: float = 1.0) -> TcpTransport:
        """Host side: a client for ``host:port`` (connecting lazily, on the first send)."""
        return cls((host, port), connect_timeout_s=timeout_s)

    @classmethod
    def listen(cls, host: str, port: int, *, timeout_s: float = 1.0) -> TcpTransport:
        """Device side: accept connections on ``host:port`` (0 picks a free port); a send
        to a peer that has not taken the bytes within ``timeout_s`` drops it."""
        try:
            listener = socket.create_server((host, port), reuse_port=False)
        except OSError as err:
            raise TransportError(f"cannot listen on TCP {host}:{port}: {err}") from err
        return cls(listener.getsockname()[:2], listener=listener, connect_timeout_s=timeout_s)

    @property
    def local_address(self) -> tuple[str, int]:
        """Where the server listens, or where the client connects to."""
        return self._address

    @property
    def connected(self) -> bool:
        return self._sock is not None

    @property
    def connection_id(self) -> int:
        """Counts the connections made or accepted; see :attr:`Transport.connection_id`."""
        return self._connection_id

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, data: bytes) -> None:
        self._check_open()
        if self._sock is None:
            if self._listener is not None:
                _log.debug("no peer connected; dropped %d bytes", len(data))
                return
            self._connect()
        try:
            self._sock.sendall(data)
        except OSError as err:
            self._lose_connection()
            raise TransportError(f"TCP send failed: {err}") from err

    def receive(self, timeout: float) -> bytes:
        """Bytes that arrived within ``timeout`` s, or ``b""`` (also once, when a server takes
        a new peer).

        Raises
        ------
        TransportError
            If the peer closed the connection or it broke, or a client is not connected
            (:meth:`send` connects): nothing can arrive, and an empty read would let a caller
            waiting for a reply spin until its deadline.
        """
        self._check_open()
        if self._listener is None and self._sock is None:
            raise TransportError(f"TCP client is not connected to {self._peer_name()}")
        waiting = [s for s in (self._listener, self._sock) if s is not None]
        try:
            ready = readable_within(waiting, timeout)
            if self._listener is not None and self._listener.fileno() in ready:
                self._accept()
                return b""
            if self._sock is None or self._sock.fileno() not in ready:
                return b""
            data = self._sock.recv(_RECV_BYTES)
        except OSError as err:
            self._lose_connection()
            raise TransportError(f"TCP receive failed: {err}") from err
        if not data:
            self._lose_connection()
            raise TransportError(f"TCP peer {self._peer_name()} closed the connection")
        self._heard_from_peer = True
        self._failed_connections = 0
        return data

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._drop()
            if self._listener is not None:
                self._listener.close()

    def _connect(self) -> None:
        host, port = self._address
        wait = self._retry_at - self._clock()
        if wait > 0:
            raise TransportError(
                f"not reconnecting to TCP {host}:{port} for another {wait:.2f} s, after "
                f"{self._failed_connections} failed connection(s) in a row"
            )
        try:
            sock = socket.create_connection((host, port), timeout=self._connect_timeout_s)
        except OSError as err:
            self._back_off()
            raise TransportError(f"cannot connect to TCP {host}:{port}: {err}") from err
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._start_connection(sock)

    def _accept(self) -> None:
        sock, peer = self._listener.accept()
        sock.settimeout(self._connect_timeout_s)  # as the client's: no send blocks for good
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._drop()
        self._start_connection(sock)
        self._peer = peer[:2]
        _log.info("TCP peer %s:%d connected", *self._peer)

    def _start_connection(self, sock: socket.socket) -> None:
        self._sock = sock
        self._connection_id += 1
        self._heard_from_peer = False

    def _lose_connection(self) -> None:
        """The connection broke or the peer left; a client that never heard from it backs off."""
        if self._listener is None and not self._heard_from_peer:
            self._back_off()
        self._drop()

    def _back_off(self) -> None:
        self._failed_connections += 1
        delay = doubling_wait(RECONNECT_FIRST_S, self._failed_connections, RECONNECT_LONGEST_S)
        self._retry_at = self._clock() + delay

    def _peer_name(self) -> str:
        return "{}:{}".format(*self._peer) if self._peer is not None else "(none)"

    def _drop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError("TCP transport is closed")
