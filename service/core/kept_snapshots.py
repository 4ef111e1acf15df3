"""What is only read (a status document, readiness, metrics), rendered at most once per
``max_age_s`` and shared by every reader in that time.

However many clients poll, the process that renders a snapshot does so at most once per period.
A change made through the owner (an operator's arm or disarm) drops the kept copies
(:meth:`KeptSnapshots.forget`), so it shows at once; a read that was in flight when they were
dropped is answered but not kept, since it may predate the change. Any other change shows
within the period.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from service.core.checks import check_range


class KeptSnapshots:
    """Snapshots by name, each kept for ``max_age_s``; thread-safe.

    Parameters
    ----------
    max_age_s
        How long a rendered snapshot is served (0: never kept).
    clock
        Monotonic seconds (tests pass their own).
    """

    def __init__(self, max_age_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        check_range("max_age_s", max_age_s, 0.0)
        self._max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._kept: dict[str, tuple[float, Any]] = {}
        self._forgotten = 0
        """Times the copies were dropped: a read begun before a drop is not kept."""

    def get(self, name: str, render: Callable[[], Any]) -> Any:
        """The copy of ``name`` kept less than ``max_age_s`` ago, or ``render()``'s, kept."""
        with self._lock:
            kept, forgotten = self._kept.get(name), self._forgotten
        if kept is not None and self._clock() - kept[0] < self._max_age_s:
            return kept[1]
        value = render()
        with self._lock:
            if self._forgotten == forgotten:  # else it may predate the change: not kept
                self._kept[name] = (self._clock(), value)
        return value

    def forget(self) -> None:
        """Drop every kept copy: something they show has changed."""
        with self._lock:
            self._kept.clear()
            self._forgotten += 1
