"""``[realtime]``: CPUs and real-time priorities of the two threads a prediction waits on,
ingest and inference (``service.core.thread_placement``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator

from service.core.settings_model import Section
from service.core.thread_placement import ThreadPlacement

RealtimePriority = Annotated[int, Field(ge=1, le=99)]
"""Linux's range for SCHED_FIFO and SCHED_RR."""
PlacedThread = Literal["ingest", "inference", "publisher_io"]
"""The threads ``[realtime]`` places (:meth:`RealtimeSettings.placement`)."""


class RealtimeSettings(Section):
    """How the ingest and inference threads run. Off by default: a real-time thread that
    spins could starve every normal thread of its CPU, so an operator turns it on knowingly,
    and the unit must allow it (``LimitRTPRIO=``, ``RestrictRealtime=no``; deploy/README.md).

    Only these two threads, and what they start or hand their work to (the inlet's liblsl
    threads; the ZeroMQ publisher's I/O thread, ``service.daemon``): the wave stage is niced
    on purpose (``[loop] wave_niceness``), and the supervisor and API threads must never wait
    behind the loop. ONNX Runtime's own intra-op threads (``[model] threads`` > 1) are started
    by the process, not by these threads, and keep its priority. The torch backends' OpenMP
    workers are the exception: the inference thread starts them, so they inherit its policy and
    CPUs (measured on a 2-core VM, torch-cpu at 2 threads pinned: no harm, p50 7.8 ms).
    """

    policy: Literal["off", "fifo", "rr"] = "off"
    """``"fifo"``: each thread runs until it blocks (it blocks every frame, waiting for data);
    ``"rr"``: the same, with a time slice among threads of equal priority. ``"off"``: the
    normal policy (CPUs below are still applied)."""
    ingest_priority: RealtimePriority = 20
    """Above inference's, so that a frame is taken off the inlet even while a window runs on
    the same CPU: inference then starts on time and the stream never looks stale."""
    inference_priority: RealtimePriority = 10
    ingest_cpus: tuple[int, ...] = ()
    """CPUs the ingest thread is pinned to; empty: wherever the process may run."""
    inference_cpus: tuple[int, ...] = ()
    """CPUs the scheduler thread (inference, then publishing) is pinned to."""
    idle_share: float = Field(default=0.1, ge=0.0, le=0.5)
    """Least share of its time each of the loop's threads, the scheduler (inference) and the
    wave stage, leaves its CPU idle when it runs under a real-time policy (this section's, or
    the unit's drop-in's) and its work comes faster than it does it: it then rests after each
    piece (``service.core.realtime_rest``). A real-time thread that fills its CPU is stopped
    by the kernel for ~50 ms a second, long enough to fault the loop on stale data
    (real-time throttling; from Linux 6.12 also the fair deadline server, which
    ``kernel.sched_rt_runtime_us = -1`` does not turn off; deploy/README.md). A tenth idle
    was enough to stop it in ``bench.benchmarks.cpu_starvation``. 0: never rest (CPUs no
    normal task can run on, and real-time throttling off)."""

    @field_validator("ingest_cpus", "inference_cpus")
    @classmethod
    def _cpus_of_this_host(cls, cpus: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(cpus)) != len(cpus):
            raise ValueError(f"must list each CPU once, got {list(cpus)}")
        online, listed = online_cpus()
        missing = [cpu for cpu in cpus if cpu not in online]
        if missing:
            raise ValueError(
                f"must name CPUs of this host that are online ({listed}), got {list(cpus)}: "
                f"{missing} not here"
            )
        return cpus

    def placement(self, stage: PlacedThread) -> ThreadPlacement | None:
        """What to apply to ``stage``'s thread; None when there is nothing to apply.

        ``"publisher_io"``: the ZeroMQ publisher's I/O thread, which sends what inference
        predicts (else it waits behind the daemon's other threads): the inference thread's
        policy one priority higher, since that one runs back to back when a window outlasts a
        frame and a thread of its own priority would wait until it blocks; never pinned.
        """
        policy = None if self.policy == "off" else self.policy
        if stage == "publisher_io":
            priority, cpus = min(self.inference_priority + 1, 99), ()
        elif stage == "ingest":
            priority, cpus = self.ingest_priority, self.ingest_cpus
        else:
            priority, cpus = self.inference_priority, self.inference_cpus
        if policy is None and not cpus:
            return None
        return ThreadPlacement(policy, priority, frozenset(cpus))


ONLINE_CPUS = Path("/sys/devices/system/cpu/online")
"""The kernel's list of online CPU ids, e.g. ``0-3`` or ``0,2,4,6`` (with SMT off, the ids left
need not be 0 to n - 1)."""


def online_cpus(listing: Path = ONLINE_CPUS) -> tuple[frozenset[int], str]:
    """The ids of the CPUs online, and the kernel's text for them; where ``listing`` cannot be
    read (not Linux), 0 to ``os.cpu_count() - 1``."""
    try:
        text = listing.read_text().strip()
    except OSError:
        count = os.cpu_count() or 1
        return frozenset(range(count)), f"0-{count - 1}"
    return parse_cpu_list(text), text


def parse_cpu_list(text: str) -> frozenset[int]:
    """The ids in a kernel CPU list (``0-3,8,10-11``).

    Raises
    ------
    ValueError
        If ``text`` is not such a list.
    """
    ids: set[int] = set()
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            raise ValueError(f"not a CPU list: {text!r}")
        ids.update(range(int(first), int(last or first) + 1))
    return frozenset(ids)
