"""The daemon's status on the PUB socket's ``status`` topic, for subscribers who watch the loop
(``corticast listen --topics status``) without polling.

Published by the supervisor's thread, which comes round every ``[loop] supervise_every_s``
anyway: never by the scheduler's or the wave stage's. The document is the one the status query
serves (kept for ``[api] snapshot_max_age_s``), cut to :func:`status_topic_header`, with how old
it was when sent (``age_s``, as the query's reply says it: a kept document republished with a
fresh ``sent_at`` looked as new as one rendered for it); the send is the publisher's own, which
never blocks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from service.core.checks import check_range
from service.core.kept_snapshots import Kept
from service.daemon.status import status_topic_header
from service.zmq_api.publisher import ZmqPublisher


class StatusTopic:
    """Publishes every ``period_s``, and at once when the daemon is armed or disarmed or its
    readiness changes (as :meth:`publish_if_due` is told them).

    Parameters
    ----------
    publisher
        The daemon's PUB socket (its sends are thread-safe).
    status
        The kept status document and its age (``Daemon.status_kept``).
    forget
        Drops the kept document: one rendered before a change just seen must not be published
        as the news of it.
    period_s
        ``[zmq] status_period_s``.
    clock
        Monotonic seconds.
    """

    def __init__(
        self,
        publisher: ZmqPublisher,
        status: Callable[[], Kept],
        forget: Callable[[], None],
        period_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_range("period_s", period_s, 0.0)
        self._publisher = publisher
        self._status = status
        self._forget = forget
        self._period_s = period_s
        self._clock = clock
        self._seen: tuple[bool, bool] | None = None
        self._due_at = -math.inf

    def publish_if_due(self, armed: bool, ready: bool) -> None:
        """Publish if the period is over or ``armed`` or ``ready`` differs from what the last
        message said; a render that raises leaves the message due, for the next call.

        What the message said, not what the caller read: the caller reads them before the
        render, and an arm in between is in the message; recorded as read, the disarm after
        it would look like no change, and go unpublished for a period."""
        seen = (armed, ready)
        now = self._clock()
        if seen == self._seen and now < self._due_at:
            return
        if seen != self._seen:
            self._forget()
        kept = self._status()
        header = status_topic_header(kept.value) | {"age_s": kept.age_s}
        self._publisher.publish("status", header, None)
        self._seen, self._due_at = (header["armed"], header["ready"]), now + self._period_s
