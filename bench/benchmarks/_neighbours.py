"""A benchmark's noisy neighbours and its own priority: CPU-burning processes beside the
daemon, and the measuring process lifted above them where the host allows.

On a rig the amplifier is its own machine and nothing on the host delays it. In a benchmark
the simulated rig and the subscriber that times each prediction share the host with the
load; left at normal priority they would be delayed by it too, and the figures would measure
the instrument, not the daemon. So the benchmark puts its own process under SCHED_FIFO (every
thread it then starts inherits it: the rig's, liblsl's, ZeroMQ's) when permitted, and starts
its children (the daemon, the hogs) back at the normal policy on every CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
from types import TracebackType
from typing import Self

INSTRUMENT_PRIORITY = 50
"""Above any priority the daemon's ``[realtime]`` threads are given in these benchmarks."""


def raise_instrument() -> str:
    """Put the calling thread (start it before any other) under SCHED_FIFO; says what it
    runs under, or why not."""
    if not hasattr(os, "sched_setscheduler"):
        return "instrument at normal priority (not Linux)"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(INSTRUMENT_PRIORITY))
    except PermissionError:
        return "instrument at normal priority (SCHED_FIFO not permitted here)"
    return f"instrument (rig, subscriber) under SCHED_FIFO {INSTRUMENT_PRIORITY}"


def as_normal_process() -> None:
    """``preexec_fn`` of every child: the normal policy on all CPUs, whatever this process
    runs under (leaving a real-time policy needs no permission)."""
    if hasattr(os, "sched_setscheduler"):
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        os.sched_setaffinity(0, range(os.cpu_count() or 1))


def as_lowest_realtime_process() -> None:
    """``preexec_fn`` of a daemon started as the unit's ``CPUSchedulingPolicy=rr`` and
    ``CPUSchedulingPriority=1`` start it: every thread of it above every normal process, and
    below the threads ``[realtime]`` raises. PermissionError in the child where not permitted."""
    as_normal_process()
    os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))


class CpuHogs:
    """``count`` processes that do nothing but burn a core each, at the normal policy, for as
    long as the context lasts (ended by their pid only)."""

    def __init__(self, count: int) -> None:
        if count < 0:
            raise ValueError(f"'count' must be >= 0, got {count!r}")
        self.count = count
        self._processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Self:
        for _ in range(self.count):
            self._processes.append(
                subprocess.Popen(
                    [sys.executable, "-c", "while True: pass"], preexec_fn=as_normal_process
                )
            )
        return self

    @property
    def pids(self) -> list[int]:
        """The hogs running now."""
        return [process.pid for process in self._processes if process.poll() is None]

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for process in self._processes:
            process.kill()
        for process in self._processes:
            process.wait(10)
        self._processes.clear()
