"""A pipe nobody reads, as a stderr: journald that stopped reading, a paused terminal."""

from __future__ import annotations

import os
import time

from service.core.readable import readable_within


def full_pipe() -> tuple[int, int]:
    """A pipe whose buffer is full: its read end, and its write end (blocking again, as a
    process's stderr is: every write to it waits until the read end is read)."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    for chunk in (b"x" * 4096, b"x"):  # pages, then the last bytes a page leaves
        try:
            while True:
                os.write(write_end, chunk)
        except BlockingIOError:
            pass
    os.set_blocking(write_end, True)
    return read_end, write_end


def read_until(fd: int, wanted: str, timeout_s: float = 30.0) -> str:
    """What the pipe's read end gives (its filling included) until ``wanted`` is in it; fails
    naming the tail read if ``timeout_s`` passes first."""
    read = b""
    deadline = time.monotonic() + timeout_s
    while wanted.encode() not in read:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{wanted!r} not written within {timeout_s} s: {read[-500:]!r}")
        if readable_within([fd], min(left, 0.5)):
            read += os.read(fd, 1 << 16)
    return read.decode("utf-8", "replace")
