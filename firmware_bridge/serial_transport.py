"""Frames over a serial line (pyserial): the stimulator's native link."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import serial

from firmware_bridge._poll_serial import PollSerial
from firmware_bridge.errors import TransportError
from firmware_bridge.transport import (
    RECONNECT_FIRST_S,
    RECONNECT_LONGEST_S,
    WRITE_TIMEOUT_S,
    Transport,
)
from service.core.backoff import doubling_wait

_log = logging.getLogger("corticast.bridge.transport")

_MAX_READ = 4096

_PORT_FAILED = (serial.SerialException, OSError, ValueError)
"""How a port fails to open, read or write: an I/O error, a bad setting, or (a URL handler's
``select.select`` on a descriptor numbered past 1024) a ValueError."""


class SerialTransport(Transport):
    """A pyserial port: a device path (``/dev/ttyACM0``) or any pyserial URL.

    URLs make the same code testable without hardware: ``loop://`` echoes what is written,
    ``socket://host:port`` speaks to a TCP server (the emulator) as if it were a port. A device
    path is a :class:`~firmware_bridge._poll_serial.PollSerial`, which waits by ``poll``, so
    the port works whatever its descriptor's number; pyserial's URL handlers wait with
    ``select.select``, which refuses a descriptor numbered 1024 or above: such a link fails
    there (a :class:`TransportError`, as any port failing), hence URLs are for tests and the
    emulator, and a network link is ``transport = "tcp"``.

    Build one with :meth:`open`. A port that fails (a USB-serial adapter unplugged) is a
    :class:`TransportError`, and is closed; the next :meth:`send` or :meth:`receive` opens the
    same path again, as the adapter comes back under the same name: at once if the lost port
    had carried data, otherwise after a back-off (0.1 s, doubling up to 2 s) during which
    both fail without touching the port. Each reopened port is a new byte stream
    (:attr:`connection_id`). ``clock`` (monotonic seconds) times the back-off.

    A write blocks while the port's buffer is full (a device that stops reading; there is no
    flow control) for at most :data:`~firmware_bridge.transport.WRITE_TIMEOUT_S`, then fails
    as a lost port does. Until then the link is taken: a disarm's DISARM waits behind it, as
    it could only follow the bytes being written on this one stream anyway; the host itself is
    disarmed at once, or, where the write is a STIMULATE's, as it ends
    (``firmware_bridge._send_gate``).
    """

    datagram = False

    def __init__(
        self, url: str, baud_rate: int = 115_200, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._url = url
        self._baud_rate = baud_rate
        self._clock = clock
        self._port: serial.SerialBase | None = None
        self._timeout: float | None = None
        self._connection_id = 0
        self._heard_from_port = False  # bytes arrived since the port was last opened
        self._failed_opens = 0  # in a row: refused, or failed before any byte arrived
        self._retry_at = 0.0
        self._closed = False
        self._close_lock = threading.Lock()

    @classmethod
    def open(
        cls, url: str, baud_rate: int = 115_200, *, clock: Callable[[], float] = time.monotonic
    ) -> SerialTransport:
        """Open ``url`` at ``baud_rate`` (8N1, no flow control).

        Raises
        ------
        TransportError
            If the port cannot be opened now.
        """
        transport = cls(url, baud_rate, clock=clock)
        transport._reopen()
        return transport

    @property
    def connection_id(self) -> int:
        """Counts the times the port was opened; see :attr:`Transport.connection_id`."""
        return self._connection_id

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, data: bytes) -> None:
        port = self._open_port()
        try:
            port.write(data)
        except _PORT_FAILED as err:
            self._lose_port()
            raise TransportError(f"serial write failed: {err}") from err

    def receive(self, timeout: float) -> bytes:
        port = self._open_port()
        try:
            wanted = max(timeout, 0.0)
            if wanted != self._timeout:
                port.timeout = self._timeout = wanted
            data = bytearray(port.read(1))
            while data and len(data) < _MAX_READ and (waiting := port.in_waiting):
                data += port.read(min(waiting, _MAX_READ - len(data)))
        except _PORT_FAILED as err:
            self._lose_port()
            raise TransportError(f"serial read failed: {err}") from err
        if data:
            self._heard_from_port = True
            self._failed_opens = 0
        return bytes(data)

    def close(self) -> None:
        with self._close_lock:
            if not self._closed:
                self._closed = True
                self._drop()

    def _open_port(self) -> serial.SerialBase:
        """The open port, reopened first if it failed since (and the back-off allows)."""
        if self._closed:
            raise TransportError("serial transport is closed")
        if self._port is None:
            wait = self._retry_at - self._clock()
            if wait > 0:
                raise TransportError(
                    f"not reopening serial port {self._url!r} for another {wait:.2f} s, after "
                    f"{self._failed_opens} failure(s) in a row"
                )
            self._reopen()
            _log.warning("serial port %s reopened", self._url)
        return self._port

    def _reopen(self) -> None:
        try:
            port = self._unopened_port()
            try:
                port.open()
            except BaseException:
                port.close()  # a URL handler failing in open() keeps what it had opened
                raise
        except _PORT_FAILED as err:
            self._back_off()
            raise TransportError(f"cannot open serial port {self._url!r}: {err}") from err
        self._port = port
        self._timeout = None
        self._connection_id += 1
        self._heard_from_port = False

    def _unopened_port(self) -> serial.SerialBase:
        """The port for :attr:`_url`, 8N1 at the baud rate, reads and writes waiting at most
        as :meth:`receive` says and :data:`WRITE_TIMEOUT_S`."""
        settings = {"baudrate": self._baud_rate, "timeout": 0, "write_timeout": WRITE_TIMEOUT_S}
        if "://" in self._url:
            return serial.serial_for_url(self._url, do_not_open=True, **settings)
        port = PollSerial(**settings)
        port.port = self._url
        return port

    def _lose_port(self) -> None:
        """The port failed; a port that never carried data since it opened backs off."""
        if not self._heard_from_port:
            self._back_off()
        self._drop()

    def _back_off(self) -> None:
        self._failed_opens += 1
        wait = doubling_wait(RECONNECT_FIRST_S, self._failed_opens, RECONNECT_LONGEST_S)
        self._retry_at = self._clock() + wait

    def _drop(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError) as err:  # a port already gone
                _log.debug("closing serial port %s: %s", self._url, err)
