"""The recent predictions the query socket serves, by input sequence number."""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class Stored:
    """One prediction exactly as it was published: header and payload frames."""

    input_seq: int
    header: bytes
    payload: bytes


class PredictionHistory:
    """Bounded map ``input_seq -> Stored``, oldest evicted first.

    The scheduler thread adds and the query thread reads; the lock is held only while a
    reference moves (the frames are immutable bytes), so a query never delays the loop.

    Parameters
    ----------
    capacity
        Most predictions kept.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: dict[int, Stored] = {}
        self._latest: Stored | None = None
        self._lock = threading.Lock()

    def add(self, item: Stored) -> None:
        with self._lock:
            # Re-adding a sequence number (a model swap re-running a window) moves it to the end.
            self._items.pop(item.input_seq, None)
            self._items[item.input_seq] = item
            if len(self._items) > self.capacity:
                del self._items[next(iter(self._items))]
            self._latest = item

    def latest(self) -> Stored | None:
        with self._lock:
            return self._latest

    def get(self, input_seq: int) -> Stored | None:
        with self._lock:
            return self._items.get(input_seq)

    def describe(self, asked: int | None = None) -> str:
        """What the history holds, for an error reply: the range a client can still ask for,
        and, where ``asked`` (held by none) lies inside it, that it was never predicted."""
        with self._lock:
            if not self._items:
                return "the history is empty (no prediction published yet)"
            oldest, newest = next(iter(self._items)), self._latest
        newest_seq = newest.input_seq if newest is not None else oldest
        held = (
            f"the history holds the last {len(self._items)} predictions "
            f"(capacity {self.capacity}), input_seq {oldest} to {newest_seq}"
        )
        if asked is None or not oldest < asked < newest_seq:
            return held
        return (
            f"{held}; none was made from input_seq {asked} (the scheduler predicts from every "
            "stride-th frame, and skips or refuses some windows)"
        )

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
