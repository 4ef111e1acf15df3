"""Whether the loop's two stages are stuck: the scheduler (the predictor's thread) or the wave
stage, in a call that does not return (a GPU call, a library waiting on a lock).

A stage that raises ends its thread and is reported as a fault; one that hangs stays
"running" while no prediction, or no decision, comes, and armed, the researcher would take the
loop for closed while it is not. Each stage stamps ``progressed_at`` as it comes round its
loop, between two windows (or predictions) and every 50 ms while it waits for the next, so
the stamp's age is how long it has been inside one: its stride, a refusal, a rest, a wait for
frames that do not come and a model swap (which waits out the inference in flight, never the
other way round) all come round within milliseconds, and only a call that does not return
ages it. Past ``[loop] stall_after_s`` the stage is stalled: the supervisor disarms as for a
fault (``Supervisor._check_stalls``), and the daemon is not ready, naming it, until it comes
round again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from service.inference.scheduler import Scheduler
from service.loop.closed_loop import ClosedLoop


@dataclass(frozen=True)
class Stall:
    """A stage stuck in one window or prediction for longer than the limit."""

    stage: str
    """The fault's stage: ``predictor`` or ``waves``."""
    problem: str
    """What is wrong, naming the stage and how long, for a not-ready reason and a fault."""


def stalls(
    scheduler: Scheduler | None, loop: ClosedLoop | None, limit_s: float
) -> tuple[Stall, ...]:
    """The running stages whose loop has not come round for more than ``limit_s``."""
    now = time.monotonic()
    found = []
    if scheduler is not None and scheduler.running:
        age = now - scheduler.progressed_at
        if age > limit_s:
            problem = f"predictor stalled: no prediction for {age:.1f} s (stuck in one window)"
            found.append(Stall("predictor", problem))
    if loop is not None and loop.running:
        age = now - loop.progressed_at
        if age > limit_s:
            problem = f"wave stage stalled: no decision for {age:.1f} s (stuck on a prediction)"
            found.append(Stall("waves", problem))
    return tuple(found)
