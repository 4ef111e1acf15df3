"""sd_notify: tell systemd the daemon is ready, alive (watchdog) or stopping.

The protocol (sd_notify(3)) is one datagram of ``KEY=VALUE`` lines to the unix socket named by
``$NOTIFY_SOCKET``; written here in a few lines rather than pulling in libsystemd bindings (which
need the C library and headers at install time) or an unmaintained wrapper. Outside systemd
``NOTIFY_SOCKET`` is unset and every call does nothing.
"""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``, ``"WATCHDOG=1"``, ``"STOPPING=1"``); whether sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        # Never block the supervisor (it calls this every round): a full queue is a lost ping.
        sock.setblocking(False)
        try:
            sock.sendto(state.encode(), address)
        except OSError:
            return False
    return True


def watchdog_interval_s() -> float | None:
    """Half the watchdog timeout systemd set for this process (ping at least this often)."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6
