"""What is only read (a status document, readiness, metrics), rendered at most once per
``max_age_s`` and shared by every reader in that time.

However many clients poll, the process that renders a snapshot does so at most once per period.
A change made through the owner (an operator's arm or disarm) drops the kept copies
(:meth:`KeptSnapshots.forget`), so it shows at once; a read that was in flight when they were
dropped is answered but not kept, since it may predate the change. Any other change shows
within the period. Readers that come while a copy is being rendered wait for that render and
share its answer, or its failure (which is not kept; each raises a copy of its own, caused by
it): a burst of requests, each on a thread of its own, renders once, and a renderer that does
not answer is waited on once, not by each. :meth:`KeptSnapshots.get_kept` also says how old
the answer is, for a reader that tells its client (the ZeroMQ status query).
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from service.core.checks import check_range


class Kept(NamedTuple):
    """A snapshot and how long ago its render ended (0.0: rendered for this reader)."""

    value: Any
    age_s: float


@dataclass
class _Render:
    """One render under way, which the readers that come meanwhile wait for."""

    forgotten: int
    """The drops counted when it began: a reader after a later drop does not share it."""
    done: threading.Event = field(default_factory=threading.Event)
    value: Any = None
    error: BaseException | None = None
    ended_at: float = 0.0


def _own_copy(error: BaseException) -> BaseException | None:
    """A copy of ``error`` (its type, message and attributes) for one waiting reader to raise,
    or None where it cannot be copied. Raising one exception object in many threads chains
    each raise's frames onto it: the k-th reader's traceback held those of the k-1 before it,
    and a burst of readers (each a request logged with its traceback) logged ever longer ones,
    naming requests not their own."""
    try:
        own = copy.copy(error)
    except Exception:  # an __init__ its args do not fit
        return None
    return own if type(own) is type(error) and own is not error else None


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
        self._rendering: dict[str, _Render] = {}
        self._forgotten = 0
        """Times the copies were dropped: a read begun before a drop is not kept."""

    def get(self, name: str, render: Callable[[], Any]) -> Any:
        """The copy of ``name`` kept less than ``max_age_s`` ago, or the answer of the render of
        it under way (begun since the last drop), or ``render()``'s, kept; a failed render
        raises its error in every reader that waited for it."""
        return self.get_kept(name, render).value

    def get_kept(self, name: str, render: Callable[[], Any]) -> Kept:
        """:meth:`get`'s answer and how long ago the render that gave it ended."""
        with self._lock:
            kept = self._kept.get(name)
            if kept is not None and (age_s := self._clock() - kept[0]) < self._max_age_s:
                return Kept(kept[1], age_s)
            under_way = self._rendering.get(name)
            if under_way is not None and under_way.forgotten == self._forgotten:
                mine = None
            else:
                under_way = mine = self._rendering[name] = _Render(self._forgotten)
        if mine is None:
            under_way.done.wait()
            error = under_way.error
            if error is None:
                return Kept(under_way.value, self._clock() - under_way.ended_at)
            own = _own_copy(error)
            if own is None:
                raise error
            raise own from error
        try:
            mine.value = render()
        except BaseException as err:
            mine.error = err
            raise
        finally:
            with self._lock:
                mine.ended_at = self._clock()
                if self._rendering.get(name) is mine:
                    del self._rendering[name]
                # Kept unless it failed, or began before a drop (it may predate the change).
                if mine.error is None and self._forgotten == mine.forgotten:
                    self._kept[name] = (mine.ended_at, mine.value)
            mine.done.set()
        return Kept(mine.value, 0.0)

    def forget(self) -> None:
        """Drop every kept copy: something they show has changed."""
        with self._lock:
            self._kept.clear()
            self._forgotten += 1
