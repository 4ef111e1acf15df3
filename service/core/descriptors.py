"""As many file descriptors as the host lets the control process have.

Each connection to the HTTP API is a file descriptor of the process serving it, and anyone may
connect: a connection that sends no request is closed only after
``service.api.serving.REQUEST_HEAD_TIMEOUT_S``. At the soft limit a process starts with (1024,
where systemd and shells leave it), a thousand such connections at a time left the API unable
to accept an operator's disarm, and the process without a descriptor for a log file or a new
link to the loop. The hard limit (524288 for a systemd service) is the process's to take: the
kernel grows a process's descriptor table only as descriptors are used.

The control process (``[api] own_process``, the default) raises its own; the loop's process
keeps the limit it was given: pyserial waits on the stimulator's port with ``select.select``,
which fails for a descriptor numbered 1024 or more.
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
