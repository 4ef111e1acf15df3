"""Which descriptors have something to read, waiting at most a while: ``select.poll``.

Not ``select.select``, which refuses a descriptor numbered 1024 or above with a ValueError: a
process holding many (subscribers' connections, a unit's raised ``LimitNOFILE``) gives its
newest sockets and pipes such numbers, and a read that raised there failed a stimulator link
or a control process's start.
"""

from __future__ import annotations

import select
from collections.abc import Iterable
from typing import Protocol


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


def readable_within(waiting: Iterable[int | _HasFileno], timeout_s: float) -> set[int]:
    """The descriptors of ``waiting`` (numbers, or objects with ``fileno()``) that can be read
    (or have hung up or failed: a read then says so) within ``timeout_s`` seconds."""
    poller = select.poll()
    for each in waiting:
        poller.register(each, select.POLLIN)
    return {fd for fd, _ in poller.poll(max(timeout_s, 0.0) * 1000)}
