"""Where a hot-path thread runs and how urgently: pinned to CPUs, under a real-time policy,
when the host allows it.

Under the default policy a thread woken every frame (3.6 ms) shares its core fairly with
whatever else is runnable, so a CPU-burning neighbour stretches its wake-ups to the kernel's
time slice (several ms). A real-time policy (``SCHED_FIFO``, ``SCHED_RR``) runs it before every
normal thread of its CPU; pinning keeps it on CPUs the operator set aside. Both need
permission (the policy: ``CAP_SYS_NICE`` or an ``RLIMIT_RTPRIO`` of at least the priority, and,
on a kernel that schedules real-time tasks by group, a cgroup with a real-time budget;
pinning: CPUs the process may use). Refused, the thread runs as before and says so in one
log line naming the cause (``service.core.realtime_refusal``): a deployment without the
permission still runs. Linux only; elsewhere the same logged no-op, said as not available.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from service.core.realtime_refusal import (
    DROP_IN,
    not_available,
    realtime_available,
    why_not_permitted,
)

_log = logging.getLogger("corticast")

RealtimePolicy = Literal["fifo", "rr"]

_POLICY_NAMES = {"fifo": "SCHED_FIFO", "rr": "SCHED_RR"}
_OS_POLICY_NAMES = {getattr(os, name, -1): name for name in _POLICY_NAMES.values()}

_NOT_HERE = (
    "not CPUs this process may run on (offline, or outside its cpuset: a container's "
    "--cpuset-cpus, a unit's AllowedCPUs=)"
)

_CPUS_REFUSED = {
    errno.EINVAL: _NOT_HERE,
    errno.EPERM: f"not permitted (a system-call filter; under systemd, {DROP_IN} allows it)",
}


@dataclass(frozen=True)
class ThreadPlacement:
    """What to apply to one thread; :meth:`apply` does it from inside that thread.

    Attributes
    ----------
    policy
        ``"fifo"`` or ``"rr"``: the real-time policy to run under; None leaves the policy.
    priority
        Its real-time priority, 1-99 (higher runs first); unused without ``policy``.
    cpus
        CPUs to pin the thread to; empty leaves its affinity as the process's.
    """

    policy: RealtimePolicy | None
    priority: int
    cpus: frozenset[int]

    def realtime_permitted(self) -> bool:
        """Whether this process may run a thread under ``policy`` at ``priority``."""
        return self.policy is not None and self.realtime_refusal() is None

    def realtime_refusal(self) -> str | None:
        """Why this process may not run a thread under ``policy`` at ``priority`` (None: it
        may): tried on a throwaway thread. For threads that cannot take the refusal in their
        stride (libzmq aborts the process when its I/O thread's policy is refused), and for
        ``corticast doctor``."""
        if self.policy is None:
            return "no real-time policy asked for"
        if not realtime_available():
            return not_available()
        policy = getattr(os, _POLICY_NAMES[self.policy])
        refused: list[str | None] = []

        def probe() -> None:
            try:
                os.sched_setscheduler(0, policy, os.sched_param(self.priority))
            except PermissionError:
                refused.append(why_not_permitted(self.priority))
            except OSError as err:
                refused.append(err.strerror)
            else:
                refused.append(None)

        thread = threading.Thread(target=probe, name="corticast-realtime-probe")
        thread.start()
        thread.join()
        return refused[0]

    @property
    def os_policy(self) -> int | None:
        """``policy`` as the OS's constant (``os.SCHED_FIFO``, ``os.SCHED_RR``)."""
        return None if self.policy is None else getattr(os, _POLICY_NAMES[self.policy], None)

    def apply(self, thread_name: str) -> dict[str, Any]:
        """Pin and raise the calling thread as far as permitted, log one line, and return
        what the thread runs under now (read back from the kernel, not assumed) with every
        part refused and why: ``thread``, ``tid``, ``policy``, ``priority``, ``cpus``,
        ``refused``."""
        tid = threading.get_native_id()
        refused: list[str] = []
        if not realtime_available():  # macOS, Windows
            refused.append(not_available())
        else:
            if self.cpus:
                try:
                    os.sched_setaffinity(tid, self.cpus)
                except OSError as err:
                    reason = _CPUS_REFUSED.get(err.errno, err.strerror)
                    refused.append(f"CPUs {sorted(self.cpus)}: {reason}")
                else:  # the kernel pins to those of them the cpuset allows, silently
                    left_out = self.cpus - os.sched_getaffinity(tid)
                    if left_out:
                        refused.append(f"CPUs {sorted(left_out)}: {_NOT_HERE}")
            if self.policy is not None:
                name = _POLICY_NAMES[self.policy]
                try:
                    policy = getattr(os, name)
                    os.sched_setscheduler(tid, policy, os.sched_param(self.priority))
                except PermissionError:
                    refused.append(
                        f"{name} priority {self.priority}: {why_not_permitted(self.priority)}"
                    )
                except OSError as err:
                    refused.append(f"{name} priority {self.priority}: {err.strerror}")
        report = {"thread": thread_name, "tid": tid, **_current(tid), "refused": refused}
        _log_once(report)
        return report


def _current(tid: int) -> dict[str, Any]:
    """The policy, priority and CPUs the kernel has for thread ``tid`` now."""
    if not hasattr(os, "sched_getscheduler"):
        return {"policy": None, "priority": None, "cpus": None}
    policy = os.sched_getscheduler(tid)
    names = {getattr(os, name): name for name in ("SCHED_OTHER", "SCHED_FIFO", "SCHED_RR")}
    return {
        "policy": names.get(policy, str(policy)),
        "priority": os.sched_getparam(tid).sched_priority,
        "cpus": sorted(os.sched_getaffinity(tid)),
    }


def _log_once(report: dict[str, Any]) -> None:
    applied = (
        f"{report['policy']} priority {report['priority']} on CPUs {report['cpus']}"
        if report["policy"] is not None
        else "the process's policy and CPUs"  # not Linux
    )
    if report["refused"]:
        _log.warning(
            "%s runs under %s; %s: %s",
            report["thread"], applied,
            "refused" if report["policy"] is not None else "not applied",
            "; ".join(report["refused"]),
        )  # fmt: skip
    else:
        _log.info("%s runs under %s", report["thread"], applied)


@contextmanager
def normal_policy(what: str) -> Iterator[None]:
    """Run the block under the normal policy where the calling thread is real-time, and put
    the thread's policy back after it.

    For long CPU-bound work on a thread that may be real-time (under the unit's drop-in every
    daemon thread is): seconds of back-to-back inference fill a CPU, and the kernel then stops
    every real-time thread there for ~50 ms (``service.core.realtime_rest``), the loop's
    included. Under the normal policy the work shares the CPU below the loop's threads instead.
    Lowering needs no permission; putting it back needs what set it (the drop-in's
    ``LimitRTPRIO=``), and where that is refused the thread stays normal and says so, naming
    ``what``.

    Threads the block starts inherit the normal policy; those still running after it under
    that policy (an ONNX Runtime session's intra-op pool, started with the session) are put
    under the caller's policy too, as they would have been started had the block run under it
    (none where ``SCHED_RESET_ON_FORK`` is set: started there, they were normal anyway). So a
    model loaded in the block serves as one loaded on the real-time thread would.
    """
    current = _thread_policy()
    if current is None or current[0] not in (os.SCHED_FIFO, os.SCHED_RR):
        yield
        return
    policy, reset_on_fork = current  # the flag is kept: only CAP_SYS_NICE may drop it
    param = os.sched_getparam(0)
    before = _thread_ids()
    os.sched_setscheduler(0, os.SCHED_OTHER | reset_on_fork, os.sched_param(0))
    try:
        yield
    finally:
        started = [] if reset_on_fork else sorted(_thread_ids() - before)
        try:
            os.sched_setscheduler(0, policy | reset_on_fork, param)
            for tid in started:
                with contextlib.suppress(ProcessLookupError):  # one that ended meanwhile
                    if os.sched_getscheduler(tid) == os.SCHED_OTHER:  # else not the block's
                        os.sched_setscheduler(tid, policy, param)
        except OSError as err:
            _log.warning(
                "%s ran under the normal policy; putting its thread back under %s %d was "
                "refused (%s): it stays normal",
                what, _OS_POLICY_NAMES.get(policy, policy), param.sched_priority, err,
            )  # fmt: skip


def _thread_ids() -> set[int]:
    """The native ids of this process's threads now."""
    return {int(tid) for tid in os.listdir("/proc/self/task")}


def runs_real_time() -> bool:
    """Whether the calling thread runs under SCHED_FIFO or SCHED_RR (never off Linux)."""
    current = _thread_policy()
    return current is not None and current[0] in (os.SCHED_FIFO, os.SCHED_RR)


def _thread_policy() -> tuple[int, int] | None:
    """The calling thread's policy and its ``SCHED_RESET_ON_FORK`` flag apart (the kernel
    or's the flag in where set: ``chrt -R``, systemd's ``CPUSchedulingResetOnFork=``); None
    off Linux."""
    if not hasattr(os, "sched_getscheduler"):
        return None
    policy = os.sched_getscheduler(0)  # pid 0: the calling thread
    flag = policy & os.SCHED_RESET_ON_FORK
    return policy & ~flag, flag
