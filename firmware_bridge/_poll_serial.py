"""A POSIX serial port that waits on its descriptor with ``poll``, never ``select.select``.

pyserial's :class:`serial.Serial` waits with ``select.select``, which refuses a descriptor
numbered 1024 or above with a ValueError: in a process holding many descriptors (a unit's
``LimitNOFILE``, many subscribers connected) a stimulator port opened late could neither be
read nor written. pyserial's own poll-based class is no way out: ``serial.PosixPollSerial``
(3.5, the latest release) replaces only ``read``, still selects in ``write``, and its ``read``
raises UnboundLocalError whenever the wait ends with nothing read, which is every quiet receive
(pyserial issue #617, fixed on its master branch after 3.5: check both before dropping this). So
this class replaces both, keeping everything else (opening, termios settings, ``in_waiting``)
pyserial's. ``cancel_read`` and ``cancel_write``, which the bridge never calls, have no effect.
"""

from __future__ import annotations

import os
import select

import serial
from serial.serialutil import PortNotOpenError, SerialTimeoutException, Timeout, to_bytes


class PollSerial(serial.Serial):
    """:class:`serial.Serial` with ``read`` and ``write`` waiting by ``poll``; same timeouts."""

    def read(self, size: int = 1) -> bytes:
        """Up to ``size`` bytes, fewer where the read timeout ends first (none: all of them)."""
        if not self.is_open:
            raise PortNotOpenError()
        data = bytearray()
        timeout = Timeout(self._timeout)
        while len(data) < size and self._ready(select.POLLIN, timeout):
            try:
                chunk = os.read(self.fd, size - len(data))
            except BlockingIOError:  # another reader took it: wait again, within the timeout
                continue
            except OSError as err:  # EIO: the device is gone
                raise serial.SerialException(f"read failed: {err}") from err
            if not chunk:  # readable yet empty: how Linux reports a disconnected device
                raise serial.SerialException(
                    "device reports readiness to read but returned no data "
                    "(device disconnected or multiple access on port?)"
                )
            data += chunk
            if timeout.expired():
                break
        return bytes(data)

    def write(self, data: bytes) -> int:
        """Write all of ``data``; :class:`SerialTimeoutException` if the write timeout ends
        first, as a device that stopped taking bytes would make it."""
        if not self.is_open:
            raise PortNotOpenError()
        left = memoryview(to_bytes(data))
        length = len(left)
        timeout = Timeout(self._write_timeout)
        while left:
            if not self._ready(select.POLLOUT, timeout):
                raise SerialTimeoutException("Write timeout")
            try:
                written = os.write(self.fd, left)
            except BlockingIOError:
                continue
            except OSError as err:
                raise serial.SerialException(f"write failed: {err}") from err
            left = left[written:]
        return length

    def _ready(self, event: int, timeout: Timeout) -> bool:
        """Whether the port is ready for ``event`` (or has failed: the read or write that
        follows says how) before ``timeout`` ends."""
        poller = select.poll()
        poller.register(self.fd, event)
        left = timeout.time_left()
        return bool(poller.poll(None if left is None else max(left, 0.0) * 1000))
