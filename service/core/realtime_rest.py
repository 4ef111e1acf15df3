"""How long a real-time thread whose work comes back to back rests, so that it never fills
its CPU.

The kernel stops a real-time thread that leaves its CPU no idle time for about 50 ms of each
second so that normal tasks waiting there run: real-time throttling
(``kernel.sched_rt_runtime_us``) and, from Linux 6.12, the fair deadline server, which
``sched_rt_runtime_us = -1`` does not turn off (``bench.benchmarks.cpu_starvation``,
deploy/README.md). 50 ms is longer than the loop's staleness limit, so such a stop faults it.
A thread that rests a share of its time whenever its next piece of work is already waiting
never gets there, at the cost of work it then skips (the scheduler's windows, the wave stage's
predictions, both of which take the newest and skip the rest anyway). Under the normal policy
the kernel shares the CPU by itself: no rest.
"""

from __future__ import annotations

import threading
import time

from prometheus_client import Counter

from service.core.thread_placement import runs_real_time


def check_idle_share(idle_share: float) -> float:
    """``idle_share``, refused (ValueError naming it) outside [0, 1)."""
    if not 0.0 <= idle_share < 1.0:
        raise ValueError(f"'idle_share' must be in [0, 1), got {idle_share!r}")
    return idle_share


def rest_per_busy(idle_share: float) -> float:
    """For the calling thread: seconds to rest per second of back-to-back work, so that at
    least ``idle_share`` of its time is idle; ``idle_share / (1 - idle_share)`` under
    SCHED_FIFO or SCHED_RR, 0 under the normal policy (and off Linux). Call it from the
    thread itself at each rest, not once at its start: a policy given or taken while it runs
    (``chrt -p``, tuned's scheduler plugin) then counts from its next rest on."""
    return idle_share / (1.0 - idle_share) if runs_real_time() else 0.0


class Rests:
    """The rests one thread takes when its work comes back to back, and their total.

    Parameters
    ----------
    idle_share
        The least share of its time it leaves idle under a real-time policy (0: never rests).
    counter
        Counts each rest's seconds (the thread's ``*_rested_seconds`` metric).
    """

    def __init__(self, idle_share: float, counter: Counter) -> None:
        self.idle_share = check_idle_share(idle_share)
        self._counter = counter
        self.total_s = 0.0
        """Seconds rested so far."""

    def after(self, began: float, stop: threading.Event) -> None:
        """Rest after work that began at the calling thread's CPU time ``began``
        (``time.thread_time()``: time it spent waiting left the CPU idle already) and found
        the next piece already waiting, until ``stop`` is set at the latest. The policy is
        read now, not at the thread's start: one given or taken since counts."""
        if not self.idle_share:
            return
        rest = rest_per_busy(self.idle_share) * (time.thread_time() - began)
        if rest:
            self.total_s += rest
            self._counter.inc(rest)
            stop.wait(rest)
