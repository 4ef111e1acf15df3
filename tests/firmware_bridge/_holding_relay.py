"""A fault injector for the bridge link: a UDP relay between host and device, on real sockets,
that can hold back the next datagram of a chosen type and let it go later (or after a delay),
as a congested switch, a stuck driver queue or a hostile middlebox would.

The host connects to :attr:`HoldingRelay.port`; the relay forwards every datagram to the
device and every reply back to the host, and records the replies by sequence number so a test
can wait for the device's answer to the frame it held.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
import time

_TYPE_OFFSET = 3
_SEQUENCE = struct.Struct("<I")
_SEQUENCE_OFFSET = 4


class HoldingRelay:
    """Forwards datagrams between a host and the device at ``device_port`` on 127.0.0.1."""

    def __init__(self, device_port: int) -> None:
        self._host_side = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._host_side.bind(("127.0.0.1", 0))
        self._device_side = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._device_side.connect(("127.0.0.1", device_port))
        self.port: int = self._host_side.getsockname()[1]
        self._host: tuple[str, int] | None = None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._hold_type: int | None = None
        self._release_after_s: float | None = None
        self._held: bytes | None = None
        self._release_at: float | None = None
        self._replies: dict[int, bytes] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="holding-relay", daemon=True)
        self._thread.start()

    def hold_next(self, message_type: int, *, release_after_s: float | None = None) -> None:
        """Hold back the next host datagram of ``message_type``; let it go after
        ``release_after_s`` seconds, or when :meth:`release` is called."""
        with self._lock:
            self._hold_type, self._release_after_s = message_type, release_after_s

    def wait_held(self, timeout: float = 10.0) -> int:
        """Wait until a datagram is held; its sequence number."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._held is not None, timeout):
                raise TimeoutError(f"no datagram was held within {timeout} s")
            return _sequence(self._held)

    def release(self) -> None:
        """Send the held datagram on to the device now."""
        with self._lock:
            held, self._held, self._release_at = self._held, None, None
        if held is None:
            raise RuntimeError("release() called with nothing held")
        self._device_side.send(held)

    def wait_reply(self, sequence: int, timeout: float = 10.0) -> bytes:
        """Wait for the device's reply to ``sequence``; its bytes."""
        with self._changed:
            if not self._changed.wait_for(lambda: sequence in self._replies, timeout):
                raise TimeoutError(f"the device did not answer #{sequence} within {timeout} s")
            return self._replies[sequence]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._host_side.close()
        self._device_side.close()

    def __enter__(self) -> HoldingRelay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._host_side, selectors.EVENT_READ)
            selector.register(self._device_side, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in selector.select(0.01):
                    if key.fileobj is self._host_side:
                        self._from_host()
                    else:
                        self._from_device()
                self._release_when_due()

    def _from_host(self) -> None:
        data, self._host = self._host_side.recvfrom(65_535)
        with self._changed:
            if self._hold_type is not None and data[_TYPE_OFFSET : _TYPE_OFFSET + 1] == bytes(
                [self._hold_type]
            ):
                self._held, self._hold_type = data, None
                if self._release_after_s is not None:
                    self._release_at = time.monotonic() + self._release_after_s
                self._changed.notify_all()
                return
        self._device_side.send(data)

    def _from_device(self) -> None:
        try:
            data = self._device_side.recv(65_535)
        except ConnectionRefusedError:  # the device is not up (yet); the host will time out
            return
        with self._changed:
            if len(data) >= _SEQUENCE_OFFSET + _SEQUENCE.size:
                self._replies[_sequence(data)] = data
                self._changed.notify_all()
        if self._host is not None:
            self._host_side.sendto(data, self._host)

    def _release_when_due(self) -> None:
        with self._lock:
            due = self._release_at is not None and time.monotonic() >= self._release_at
        if due:
            self.release()


def _sequence(frame: bytes) -> int:
    return _SEQUENCE.unpack_from(frame, _SEQUENCE_OFFSET)[0]
