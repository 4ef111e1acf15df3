"""Frames over UDP: one frame per datagram, which keeps framing trivial and loss visible."""

from __future__ import annotations

import logging
import socket
import threading

from firmware_bridge.errors import TransportError
from firmware_bridge.transport import Transport

_log = logging.getLogger("corticast.bridge.transport")

_MAX_DATAGRAM = 65_535
"""Receive the whole datagram, so an oversized one is seen as oversized, not cut to size."""


class UdpTransport(Transport):
    """A UDP socket, either connected to the device (host side) or bound (device side).

    Build one with :meth:`connect` or :meth:`bind`. A bound socket replies to whoever sent
    the most recent datagram, which is how the emulator answers the host.
    """

    datagram = True

    def __init__(self, sock: socket.socket, *, connected: bool) -> None:
        self._sock = sock
        self._connected = connected
        self._peer: tuple[str, int] | None = None
        self._closed = False
        self._close_lock = threading.Lock()

    @classmethod
    def connect(cls, host: str, port: int) -> UdpTransport:
        """Host side: a socket whose datagrams go to, and come only from, ``host:port``."""
        try:
            sock = socket.socket(_family(host), socket.SOCK_DGRAM)
            sock.connect((host, port))
        except OSError as err:
            raise TransportError(f"cannot open UDP socket to {host}:{port}: {err}") from err
        return cls(sock, connected=True)

    @classmethod
    def bind(cls, host: str, port: int) -> UdpTransport:
        """Device side: listen on ``host:port`` (port 0 picks a free one, see
        :attr:`local_address`)."""
        try:
            sock = socket.socket(_family(host), socket.SOCK_DGRAM)
            sock.bind((host, port))
        except OSError as err:
            raise TransportError(f"cannot bind UDP socket to {host}:{port}: {err}") from err
        return cls(sock, connected=False)

    @property
    def local_address(self) -> tuple[str, int]:
        """The (host, port) this socket is bound to."""
        return self._sock.getsockname()[:2]

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, data: bytes) -> None:
        self._check_open()
        try:
            if self._connected:
                self._sock.send(data)
            elif self._peer is not None:
                self._sock.sendto(data, self._peer)
            else:
                _log.debug("no peer has sent anything yet; dropped %d bytes", len(data))
        except OSError as err:
            raise TransportError(f"UDP send failed: {err}") from err

    def receive(self, timeout: float) -> bytes:
        self._check_open()
        try:
            self._sock.settimeout(max(timeout, 1e-6))
            data, peer = self._sock.recvfrom(_MAX_DATAGRAM)
        except TimeoutError:
            return b""
        except ConnectionRefusedError as err:
            raise TransportError(
                f"UDP peer refused the datagram (nothing listening): {err}"
            ) from err
        except OSError as err:
            raise TransportError(f"UDP receive failed: {err}") from err
        if not self._connected:
            self._peer = peer[:2]
        return data

    def close(self) -> None:
        with self._close_lock:
            if not self._closed:
                self._closed = True
                self._sock.close()

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError("UDP transport is closed")


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
