"""The unit's sandbox without systemd: what a test can rebuild of it on a machine whose PID 1
is not systemd (a container), to show the daemon still starts inside it.

Rebuilt here, from the unit's own lines: the system-call filter (``SystemCallFilter=``
expanded with ``systemd-analyze syscall-filter``, refused calls failing with
``SystemCallErrorNumber=``), ``NoNewPrivileges=``, ``UMask=``, no capabilities at all
(``CapabilityBoundingSet=``), and ``ProcSubset=pid`` with ``ProtectProc=invisible`` (a private
mount namespace with its own ``/proc``). Run as ``python -m tests.deploy._unit_sandbox
FILTER.json UMASK -- COMMAND...``: it loads the filter into itself (libseccomp, through
ctypes) and executes COMMAND.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import subprocess
import sys
from pathlib import Path

_ACT_ALLOW = 0x7FFF0000
_ACT_ERRNO = 0x00050000
_PR_SET_NO_NEW_PRIVS = 38


def syscall_groups() -> dict[str, list[str]]:
    """``@group`` -> its entries (calls and nested groups), as this systemd defines them."""
    listing = subprocess.run(
        ["systemd-analyze", "syscall-filter"], capture_output=True, text=True, check=True
    ).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in listing.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.append(line.split()[0])
    return groups


def allowed_syscalls(filters: list[str], groups: dict[str, list[str]]) -> set[str]:
    """What ``SystemCallFilter=`` lines allow, read as systemd reads an allow list: the first
    line is the list, a ``~`` line takes its calls out, a later plain line puts calls back."""

    def expand(names: list[str]) -> set[str]:
        calls: set[str] = set()
        for name in names:
            calls |= expand(groups[name]) if name.startswith("@") else {name}
        return calls

    assert filters and not filters[0].startswith("~"), "the unit must define an allow list"
    allowed: set[str] = set()
    for line in filters:
        if line.startswith("~"):
            allowed -= expand(line[1:].split())
        else:
            allowed |= expand(line.split())
    return allowed


def sandboxed(
    command: list[str],
    *,
    filter_file: Path,
    umask: str,
    hide_proc: bool,
    keep_capabilities: tuple[str, ...] = (),
) -> list[str]:
    """``command`` as it would run under the unit: in a mount namespace with a PID-only
    ``/proc`` (``hide_proc``), without capabilities (but ``keep_capabilities``, e.g.
    ``("sys_nice",)``) or new privileges, behind the system-call filter. Needs root,
    ``unshare`` and ``setpriv``. The user stays uid 0, stripped of every other capability:
    the test's interpreter may live under a directory only root can enter."""
    bounding = ",".join(["-all", *(f"+{name}" for name in keep_capabilities)])
    inner = [
        "setpriv", "--inh-caps=-all", f"--bounding-set={bounding}", "--no-new-privs",
        sys.executable, "-m", "tests.deploy._unit_sandbox", str(filter_file), umask, "--",
        *command,
    ]  # fmt: skip
    if not hide_proc:
        return inner
    mount = 'mount -t proc -o subset=pid,hidepid=invisible proc /proc && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", mount, "sh", *inner]


def _load_filter(allowed: list[str], error_number: int) -> None:
    seccomp = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    seccomp.seccomp_init.restype = ctypes.c_void_p
    seccomp.seccomp_init.argtypes = [ctypes.c_uint32]
    seccomp.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    seccomp.seccomp_rule_add.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
    ]
    seccomp.seccomp_load.argtypes = [ctypes.c_void_p]
    context = seccomp.seccomp_init(_ACT_ERRNO | error_number)
    for name in allowed:
        number = seccomp.seccomp_syscall_resolve_name(name.encode())
        if number >= 0:  # names of other architectures resolve to nothing here
            seccomp.seccomp_rule_add(context, _ACT_ALLOW, number, 0)
    if seccomp.seccomp_load(context) != 0:
        raise OSError(ctypes.get_errno(), "seccomp_load failed")


def main(argv: list[str]) -> None:
    filter_file, umask, separator, *command = argv
    assert separator == "--" and command, "usage: FILTER.json UMASK -- COMMAND..."
    spec = json.loads(Path(filter_file).read_text(encoding="utf-8"))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    os.umask(int(umask, 8))
    _load_filter(spec["allowed"], getattr(errno, spec["error"]))
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
