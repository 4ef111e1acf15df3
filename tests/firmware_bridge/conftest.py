"""Shared helpers: an injectable clock, a scratch directory on tmpfs for fsync-heavy tests,
and request strategies."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


class FakeClock:
    """Monotonic seconds that move only when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def wait_until(condition, timeout: float = 10.0) -> None:
    """Poll for a state change driven by another thread; the timeout only catches hangs."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.005)


@contextmanager
def scratch_dir() -> Iterator[Path]:
    """A temporary directory, on tmpfs where there is one: the audit log fsyncs every record,
    which costs milliseconds on a disk and nothing in memory."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix="corticast-bridge-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def scratch() -> Iterator[Path]:
    with scratch_dir() as path:
        yield path
