"""Accounting for each decision of the bridge: audit log, counts, metrics, one log line.

An admitted train is written in full and fsync'd; a blocked request in full once per kind and
period, else counted (:mod:`firmware_bridge._blocked_tally`), the counts written before the
next record of a request so that every request id appears once, in order.
"""

from __future__ import annotations

import logging
from collections import Counter

from firmware_bridge._blocked_tally import BlockedTally
from firmware_bridge.audit_log import AuditLog
from firmware_bridge.bridge_metrics import BridgeMetrics
from firmware_bridge.decision import Decision
from firmware_bridge.errors import ErrorCode

_log = logging.getLogger("corticast.bridge")


class DecisionRecorder:
    """Numbers the requests and accounts for each decision on them.

    Not thread-safe: the bridge calls it under its exchange lock.

    Parameters
    ----------
    audit
        Where decisions go (the bridge's log; the bridge closes it).
    metrics
        Where requests and interlock blocks are counted.
    blocked_period_s
        The period within which only the first blocked request of each kind is written in
        full.
    dry_run
        Marks every decision record.
    """

    def __init__(
        self, audit: AuditLog, metrics: BridgeMetrics, blocked_period_s: float, dry_run: bool
    ) -> None:
        self._audit = audit
        self._metrics = metrics
        self._blocked = BlockedTally(blocked_period_s)
        self._dry_run = dry_run
        self._requests = 0
        self._outcomes: Counter[str] = Counter()

    @property
    def requests(self) -> int:
        """Requests numbered so far."""
        return self._requests

    @property
    def outcomes(self) -> dict[str, int]:
        """Decisions recorded so far, by outcome."""
        return dict(self._outcomes)

    def next_request_id(self) -> int:
        self._requests += 1
        return self._requests

    def record(self, decision: Decision) -> None:
        """Audit (a train in full and durable; a blocked request in full or counted), count,
        log.

        Raises
        ------
        AuditLogError
            If the record cannot be written; nothing is counted then.
        """
        in_full = decision.admitted or self._blocked.in_full(decision)
        if in_full:
            self.write_blocked_summary()
            self._audit.append(
                decision.to_record() | {"dry_run": self._dry_run},
                durable=decision.admitted,
            )
        self._outcomes[decision.outcome] += 1
        self._metrics.requests.labels(decision.outcome, _reason_label(decision)).inc()
        for interlock in decision.interlocks:
            self._metrics.interlock_blocks.labels(interlock).inc()
        level = (
            logging.INFO if decision.outcome in ("blocked", "dry_run", "sent") else logging.ERROR
        )
        if not in_full:
            level = logging.DEBUG
        _log.log(level, "request %d %s: %s", decision.request_id, decision.outcome, decision.reason)

    def write_blocked_summary(self) -> None:
        """The counts of blocked requests not written in full, before the next record of a
        request (so every request id appears once, in order); not fsync'd by itself."""
        summary = self._blocked.take_summary()
        if summary is not None:
            self._audit.append(summary, durable=False)


def _reason_label(decision: Decision) -> str:
    if decision.violations:
        return decision.violations[0].interlock
    if decision.error_code is not None:
        try:
            return ErrorCode(decision.error_code).name
        except ValueError:
            return "UNKNOWN"
    if decision.outcome == "failed":
        return "no_ack"
    return "none"
