"""Why a client socket's handshake with the daemon failed, from ZeroMQ's socket monitor.

A CURVE daemon that refuses a client's key, or a client that holds the wrong server key, leaves
the client with nothing to read and no error: libzmq reports the failure only as a monitor
event (``EVENT_HANDSHAKE_FAILED_*``, libzmq 4.3 and later). :class:`HandshakeWatch` reads
those events so that the client can say why nothing comes.
"""

from __future__ import annotations

import zmq
from zmq.utils.monitor import recv_monitor_message

_EVENT_NAMES = (
    "EVENT_HANDSHAKE_SUCCEEDED",
    "EVENT_HANDSHAKE_FAILED_AUTH",
    "EVENT_HANDSHAKE_FAILED_NO_DETAIL",
    "EVENT_HANDSHAKE_FAILED_PROTOCOL",
)
_SUPPORTED = all(hasattr(zmq, name) for name in _EVENT_NAMES)
"""Whether the installed libzmq reports handshakes (4.3 and later); without it, no watch."""


class HandshakeWatch:
    """The handshake outcomes of one socket: the last failure, until a handshake succeeds.

    Parameters
    ----------
    socket
        A client socket, not yet connected (a handshake before the watch is not seen).
    curve
        Whether ``socket`` was made a CURVE client (it words what a failure means).
    """

    def __init__(self, socket: zmq.Socket, *, curve: bool) -> None:
        self._curve = curve
        self._failure: str | None = None
        self.monitor: zmq.Socket | None = None
        if _SUPPORTED:
            events = 0
            for name in _EVENT_NAMES:
                events |= getattr(zmq, name)
            self.monitor = socket.get_monitor_socket(events)
            self.monitor.linger = 0

    def failure(self) -> str | None:
        """Why the latest handshake failed, or None if it succeeded or none has ended yet;
        reads the events that arrived since the last call, without waiting."""
        monitor = self.monitor
        while monitor is not None and monitor.poll(0, zmq.POLLIN):
            event = recv_monitor_message(monitor)
            self._failure = self._describe(event["event"], event["value"])
        return self._failure

    def close(self) -> None:
        """Close the monitor's end; its socket must be closed too (or first)."""
        if self.monitor is not None and not self.monitor.closed:
            self.monitor.close(linger=0)

    def _describe(self, event: int, value: int) -> str | None:
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            return None
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return (
                f"the daemon refused this client's key (CURVE handshake failed, ZAP status "
                f"{value}): its public key must be in the daemon's 'curve_allowed_clients_dir'"
            )
        if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and (
            value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
        ):
            if self._curve:
                return "the daemon does not use CURVE: connect without key files"
            return (
                "the daemon requires CURVE: pass its public key ('server_key_file') and this "
                "client's secret key ('client_key_file')"
            )
        if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
            detail = f"ZMTP protocol error {value:#x}"
        else:
            detail = "libzmq gives no detail"
        if self._curve:
            return (
                f"the CURVE handshake with the daemon failed ({detail}): is 'server_key_file' "
                "the daemon's public key, and does the daemon use CURVE?"
            )
        return (
            f"the handshake with the daemon failed ({detail}): does the daemon require CURVE "
            "('server_key_file' and 'client_key_file')?"
        )
