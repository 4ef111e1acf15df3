"""Who may connect to the PUB socket's unix socket file (``[zmq] pub_ipc_endpoint``).

Connecting needs write permission on the file, and libzmq creates it with the daemon's umask:
under the unit's ``UMask=0077`` it is the daemon user's alone, so other users' subscribers are
refused. ``pub_ipc_mode`` and ``pub_ipc_group`` widen that on purpose, right after the bind.
"""

from __future__ import annotations

import grp
import os


def grant_access(endpoint: str, mode: int | None, group: str | None) -> None:
    """Give the socket file of ``ipc://PATH`` to ``group`` (one the daemon's user is in), then
    ``mode``; None leaves each as the bind made it.

    Raises
    ------
    OSError
        No such group, the daemon's user not in it, or the unit's system-call filter refusing
        the change (each names the fix).
    """
    path = endpoint.removeprefix("ipc://")
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise OSError(
                f"cannot give 'pub_ipc_group' {group!r} the socket {path}: no such group"
            ) from None
        try:
            os.chown(path, -1, gid)
        except PermissionError as err:
            raise OSError(f"cannot give 'pub_ipc_group' {group!r} the socket {path}: "
                          + _why_refused(gid)) from err  # fmt: skip
    if mode is not None:
        os.chmod(path, mode)


def _why_refused(gid: int) -> str:
    """A member may give its own file to the group without any capability: if the daemon is
    one, what refused is the unit's system-call filter (``~@privileged`` holds @chown)."""
    if gid == os.getegid() or gid in os.getgroups():
        return (
            "the system-call filter refused chown; install the drop-in "
            "deploy/systemd/corticast.service.d/ipc-group.conf (deploy/README.md)"
        )
    return (
        "the daemon's user is not in that group (SupplementaryGroups=, as the drop-in "
        "deploy/systemd/corticast.service.d/ipc-group.conf sets; deploy/README.md)"
    )
