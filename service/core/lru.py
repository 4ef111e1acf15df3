"""A small least-recently-used cache of built values (the wave stage's filter matrices).

``functools.lru_cache`` would key on the owning object too and keep it alive; these caches
belong to one filter each and are built from a few arguments, so a dict in use order serves.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

Value = TypeVar("Value")


class LruCache(Generic[Value]):
    """Up to ``size`` values by key; the least recently used one goes first."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"'size' must be >= 1, got {size!r}")
        self._size = size
        self._values: OrderedDict[Hashable, Value] = OrderedDict()

    def get(self, key: Hashable, build: Callable[[], Value]) -> Value:
        """The value cached under ``key``, or ``build()``'s, cached."""
        value = self._values.get(key)
        if value is not None:
            self._values.move_to_end(key)
            return value
        value = build()
        self._values[key] = value
        if len(self._values) > self._size:
            self._values.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._values)
