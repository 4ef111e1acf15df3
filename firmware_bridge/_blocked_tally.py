"""Which blocked requests the audit log records in full, and a count of all the others.

A policy that keeps asking while an interlock holds (refractory, disarmed, stale data) is
blocked at the frame rate: at stride 1 that was an fsync'd record every 3.6 ms, about 0.6 GB an
hour. Blocked requests are not trains and the interlock history does not need them, but an
inquiry needs to know that they happened and why. So within each period (on the interlocks'
clock) the first blocked request of each kind (its set of interlocks) is recorded in full and
the others are counted; the counts go out in one ``blocked_summary`` record, written before the
next record of a request and when the bridge closes. Each request id is therefore in exactly one
record, in order, and the summaries' counts add up to the requests they stand for. A process
that dies loses the counts not yet written (at most one period's); the Prometheus counters of
the bridge count every request as it happens.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from firmware_bridge.decision import Decision


class BlockedTally:
    """Decides, request by request, what is written in full; keeps the counts of the rest.

    Parameters
    ----------
    period_s
        Length of a period on the interlocks' clock. A reading outside the current period
        (later, earlier, or not finite) starts a new one.
    """

    def __init__(self, period_s: float) -> None:
        self._period_s = period_s
        self._period_start = -math.inf
        self._seen: set[tuple[str, ...]] = set()
        self._counts: Counter[str] = Counter()
        self._first_id: int | None = None
        self._last_id: int | None = None
        self._first_clock: float | None = None
        self._last_clock: float | None = None

    def in_full(self, decision: Decision) -> bool:
        """True if this blocked decision is to be written in full; else it has been counted."""
        clock, kind = decision.clock, decision.interlocks
        if not (self._period_start <= clock < self._period_start + self._period_s):
            self._period_start = clock if math.isfinite(clock) else -math.inf
            self._seen = {kind}
            return True
        if kind not in self._seen:
            self._seen.add(kind)
            return True
        self._counts["+".join(kind)] += 1
        if self._first_id is None:
            self._first_id, self._first_clock = decision.request_id, clock
        self._last_id, self._last_clock = decision.request_id, clock
        return False

    def take_summary(self) -> dict[str, Any] | None:
        """The ``blocked_summary`` record of the requests counted since the last one, if any."""
        if self._first_id is None:
            return None
        summary = {
            "event": "blocked_summary",
            "first_request_id": self._first_id,
            "last_request_id": self._last_id,
            "requests": sum(self._counts.values()),
            "by_interlocks": dict(self._counts),
            "first_clock": self._first_clock,
            "last_clock": self._last_clock,
        }
        self._counts.clear()
        self._first_id = self._last_id = self._first_clock = self._last_clock = None
        return summary
