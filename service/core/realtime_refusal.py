"""Why this process may not put a thread under SCHED_FIFO or SCHED_RR, in words that say what
to change.

The kernel answers every refusal with one errno, EPERM, for causes with different fixes: no
permission (``CAP_SYS_NICE``, or an ``RLIMIT_RTPRIO`` of at least the priority), a cgroup with
no real-time budget on a kernel that schedules real-time tasks by group (refused even to root:
``service.core.realtime_group``), or a system-call filter (systemd's ``RestrictRealtime=``).
Off Linux there is no such policy to ask for (Python has no ``os.sched_setscheduler``), which
is not a permission problem and is said as such.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from service.core.realtime_group import read_realtime_group

DROP_IN = "the drop-in corticast.service.d/realtime.conf (deploy/README.md)"

_CAP_SYS_NICE = 23
"""Its bit in a capability set (linux/capability.h)."""
_STATUS = Path("/proc/self/status")


def realtime_available() -> bool:
    """Whether this OS has real-time policies for threads (Linux; not macOS, not Windows)."""
    return hasattr(os, "sched_setscheduler") and hasattr(os, "sched_getscheduler")


def not_available() -> str:
    """Why nothing real-time is applied here, off Linux."""
    return (
        f"not available on this OS ({platform.system()}): real-time policies and thread "
        "pinning are Linux only"
    )


def why_not_permitted(priority: int, status: Path = _STATUS) -> str:
    """Every cause here of an EPERM for a real-time policy at ``priority``, and what fixes
    each."""
    import resource  # POSIX only: imported where a refusal can happen

    causes = []
    rlimit = resource.getrlimit(resource.RLIMIT_RTPRIO)[0]
    privileged = _has_sys_nice(status) or rlimit == resource.RLIM_INFINITY or rlimit >= priority
    if not privileged:
        causes.append(
            f"not permitted (needs CAP_SYS_NICE or an RLIMIT_RTPRIO of at least {priority}, "
            f"this process has {rlimit} and no CAP_SYS_NICE; under systemd, LimitRTPRIO= and "
            f"RestrictRealtime=no: {DROP_IN})"
        )
    group = read_realtime_group().refusal()
    if group is not None:
        causes.append(group)
    if not causes:
        causes.append(
            "refused although this process has the permission (CAP_SYS_NICE or RLIMIT_RTPRIO "
            f"{rlimit}) and its cgroup stops nothing: "
            + (
                f"a system-call filter (under systemd, RestrictRealtime=yes; {DROP_IN} sets no)"
                if _field(status, "Seccomp") == "2"
                else "a security module, or a cgroup this process cannot see"
            )
        )
    return "; and ".join(causes)


def _has_sys_nice(status: Path) -> bool:
    effective = _field(status, "CapEff")
    return effective is not None and bool(int(effective, 16) >> _CAP_SYS_NICE & 1)


def _field(status: Path, name: str) -> str | None:
    """One field of ``/proc/self/status`` (``CapEff``, ``Seccomp``); None where not readable."""
    try:
        lines = status.read_text().splitlines()
    except OSError:
        return None
    return next(
        (line.split(":", 1)[1].strip() for line in lines if line.startswith(name + ":")), None
    )
