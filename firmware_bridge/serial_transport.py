"""Frames over a serial line (pyserial): the stimulator's native link."""

from __future__ import annotations

import threading

import serial

from firmware_bridge.errors import TransportError
from firmware_bridge.transport import Transport

_MAX_READ = 4096


class SerialTransport(Transport):
    """A pyserial port: a device path (``/dev/ttyACM0``) or any pyserial URL.

    URLs make the same code testable without hardware: ``loop://`` echoes what is written,
    ``socket://host:port`` speaks to a TCP server (the emulator) as if it were a port.
    """

    datagram = False

    def __init__(self, port: serial.SerialBase) -> None:
        self._port = port
        self._timeout: float | None = None
        self._closed = False
        self._close_lock = threading.Lock()

    @classmethod
    def open(cls, url: str, baud_rate: int = 115_200) -> SerialTransport:
        """Open ``url`` at ``baud_rate`` (8N1, no flow control)."""
        try:
            port = serial.serial_for_url(url, baudrate=baud_rate, timeout=0, write_timeout=1.0)
        except (serial.SerialException, ValueError, OSError) as err:
            raise TransportError(f"cannot open serial port {url!r}: {err}") from err
        return cls(port)

    @property
    def closed(self) -> bool:
        return self._closed

    def send(self, data: bytes) -> None:
        self._check_open()
        try:
            self._port.write(data)
        except (serial.SerialException, OSError) as err:
            raise TransportError(f"serial write failed: {err}") from err

    def receive(self, timeout: float) -> bytes:
        self._check_open()
        try:
            wanted = max(timeout, 0.0)
            if wanted != self._timeout:
                self._port.timeout = self._timeout = wanted
            data = bytearray(self._port.read(1))
            while data and len(data) < _MAX_READ and (waiting := self._port.in_waiting):
                data += self._port.read(min(waiting, _MAX_READ - len(data)))
        except (serial.SerialException, OSError) as err:
            raise TransportError(f"serial read failed: {err}") from err
        return bytes(data)

    def close(self) -> None:
        with self._close_lock:
            if not self._closed:
                self._closed = True
                self._port.close()

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError("serial transport is closed")
