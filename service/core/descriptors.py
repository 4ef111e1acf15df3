"""As many file descriptors as the host lets the daemon's processes have.

Each connection to the HTTP API is a file descriptor of the process serving it, and each
connection to a ZeroMQ endpoint one of the process binding it (the publisher: the loop's); anyone
who may connect can open them, and a ZeroMQ peer holds its connection for as long as it likes.
At the soft limit a process starts with (1024, where systemd and shells leave it), a thousand
such connections at a time left the API unable to accept an operator's disarm, and the loop's
process without a descriptor for its audit log (every train refused, the bridge disarmed). The
hard limit (524288 for a systemd service) is the process's to take: the kernel grows a
process's descriptor table only as descriptors are used.

Both processes raise their own (`corticast serve` at its start, the control process before it
serves). That is safe because nothing in them waits with ``select.select``, which fails for a
descriptor numbered 1024 or more: the stimulator's serial port is a
:class:`firmware_bridge._poll_serial.PollSerial`, and the project's own waits are
:func:`service.core.readable.readable_within`; an LSL outlet and inlet, ZeroMQ sockets and an
ONNX Runtime session made no select call under strace with descriptors numbered past 1024
(liblsl and libzmq wait with epoll and poll). A higher limit
moves the wall, it does not remove it: who may connect is bounded by CURVE, the ipc endpoint's
permissions, or the host's firewall (``deploy/README.md``).
"""

from __future__ import annotations

import logging
import resource

__all__ = ["MOST_DESCRIPTORS", "raise_descriptor_limit"]

_log = logging.getLogger("corticast.daemon")

MOST_DESCRIPTORS = 65536
"""The soft limit asked for where the hard one is higher or unlimited."""


def raise_descriptor_limit() -> int:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit, at most
    :data:`MOST_DESCRIPTORS`, never lowering it; returns the soft limit in effect."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MOST_DESCRIPTORS if hard == resource.RLIM_INFINITY else min(hard, MOST_DESCRIPTORS)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError) as err:  # a sandbox that refuses it: serve with what there is
        _log.warning(
            "could not raise the file descriptor limit from %d to %d: %s", soft, wanted, err
        )
        return soft
    return wanted
