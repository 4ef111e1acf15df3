"""A process holding descriptors past ``select.select``'s limit, as a daemon may."""

from __future__ import annotations

import os
import resource
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

SELECT_LIMIT = 1024
"""``select.select`` refuses a descriptor numbered this or above (FD_SETSIZE)."""


@contextmanager
def past_select_s_limit() -> Iterator[None]:
    """Within it, the next descriptor opened is numbered past ``SELECT_LIMIT``: the soft
    limit raised for the while (skipped where the hard limit forbids) and as many held open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < SELECT_LIMIT + 200:
        pytest.skip(f"this process may open at most {hard} descriptors")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, SELECT_LIMIT + 200), hard))
    held: list[int] = []
    try:
        while not held or held[-1] < SELECT_LIMIT + 6:
            held.append(os.open(os.devnull, os.O_RDONLY))
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
