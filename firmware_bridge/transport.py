"""The one interface every link to the stimulator offers: bytes out, bytes in, close."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import ClassVar, Self

RECONNECT_FIRST_S = 0.1
"""Wait after one failed connection (or port opening) before the next try; doubled per failure
in a row."""

RECONNECT_LONGEST_S = 2.0
"""The longest wait between tries: a dead device is tried every 2 s, not every heartbeat."""

WRITE_TIMEOUT_S = 1.0
"""Longest a serial write blocks (a device that stops reading fills the port's buffer) before
it fails. With the ACK deadline it bounds one exchange, and so how long the bridge's exchange
lock is held by anything not stuck (``StimulationBridge.disarm_without_waiting``)."""


class Transport(ABC):
    """Moves frame bytes to and from the other side; knows nothing of what they mean.

    Implementations raise :class:`~firmware_bridge.errors.TransportError` for every failure of
    the link (never a bare ``OSError``), so callers have one thing to catch, and treat a call
    after :meth:`close` as such a failure. A peer that hangs up is such a failure too: no
    :meth:`receive` returns at once without data, so a caller that loops on it until a
    deadline never spins.
    """

    datagram: ClassVar[bool] = False
    """True when each :meth:`receive` returns exactly one datagram (one frame, if well-formed);
    False for byte streams, where frames may arrive split or glued together."""

    @abstractmethod
    def send(self, data: bytes) -> None:
        """Send the bytes of one frame."""

    @abstractmethod
    def receive(self, timeout: float) -> bytes:
        """Bytes that arrived within ``timeout`` seconds, or ``b""`` if none did."""

    @property
    def connection_id(self) -> int:
        """Which connection the bytes :meth:`receive` returns belong to.

        It changes exactly when a new byte stream starts (a TCP client reconnected, a server
        took a new peer, a serial port was reopened): whoever decodes the bytes must then drop
        what the old stream left half a frame into (:meth:`FrameDecoder.feed`'s
        ``connection``). Links that never reconnect (UDP) keep 0.
        """
        return 0

    @abstractmethod
    def close(self) -> None:
        """Release the port or socket; idempotent."""

    @property
    @abstractmethod
    def closed(self) -> bool:
        """True once :meth:`close` has run."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
