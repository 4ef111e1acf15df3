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

A wave stage stuck inside a request is most often stuck on the audit log: the transmit record
is fsync'd before the STIMULATE leaves, and a disk whose fsync hangs holds the request there.
That is a stall like any other, and a disarm the right answer: the loop is not closed
meanwhile, and the train held is sent by no one (past the limit, its data are older than any
staleness limit allows when the write returns). Its problem names the write, not the model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from firmware_bridge import StimulationBridge
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
    scheduler: Scheduler | None,
    loop: ClosedLoop | None,
    limit_s: float,
    bridge: StimulationBridge | None = None,
) -> tuple[Stall, ...]:
    """The running stages whose loop has not come round for more than ``limit_s``; a wave
    stage's problem names ``bridge``'s audit log where a write has taken most of that time,
    and a scheduler's says whether its model is too slow rather than stuck."""
    now = time.monotonic()
    found = []
    if scheduler is not None and scheduler.running:
        age = now - scheduler.progressed_at
        if age > limit_s:
            why = _slow_or_stuck(scheduler, age, limit_s)
            problem = f"predictor stalled: no prediction for {age:.1f} s ({why})"
            found.append(Stall("predictor", problem))
    if loop is not None and loop.running:
        age = now - loop.progressed_at
        if age > limit_s:
            problem = f"wave stage stalled: no decision for {age:.1f} s ({_stuck_on(bridge, age)})"
            found.append(Stall("waves", problem))
    return tuple(found)


def _slow_or_stuck(scheduler: Scheduler, age: float, limit_s: float) -> str:
    """Whether the model is too slow for the limit (its last window took longer, and this
    one, ``age`` s in, not yet twice as long) or stuck in one window. Too slow is no less a
    fault: the limit is longer than the staleness limit (``service.config``), so such a model
    can pass no train; it is named so that the remedy (a faster way of serving it, or host) is
    not taken for a hang."""
    took = scheduler.last_window_s
    if took is not None and limit_s < took and age < 2 * took:
        return (
            f"its last window took {took:.1f} s: the model is too slow for this host, not "
            "stuck; it can pass no train (its data would be older than [interlocks] "
            "max_sample_age_s): serve it a faster way ([model] serving = 'auto' measures them)"
        )
    return "stuck in one window"


def _stuck_on(bridge: StimulationBridge | None, age: float) -> str:
    """Where the wave stage, ``age`` s on one prediction, is stuck: on the bridge's audit log
    where a write has taken most of that time (a healthy one takes milliseconds; the request
    waits on it, or on the exchange lock behind it), else on a prediction."""
    writing = None if bridge is None else bridge.audit_writing_for()
    if writing is not None and writing > age / 2:
        return (
            f"stuck on the stimulation audit log: a write has not returned for {writing:.1f} s; "
            "is its disk hung?"
        )
    return "stuck on a prediction"
