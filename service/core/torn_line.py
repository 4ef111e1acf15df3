"""Append to a JSON-lines log that a crash may have left with a torn last line.

A process killed mid-write, or a power loss before a line's fsync, can leave a log whose last
line has no newline. Appended to as it is, the next record joins that fragment on one line
that no reader can parse: the new record is lost with the torn one. :func:`set_torn_line_aside`
moves the fragment to a side file before a writer opens the log, so the next record starts a
line of its own and every complete record stays where it was; the fragment is kept, not lost.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import BinaryIO

from service.core.atomic_write import fsync_path

__all__ = ["TORN_SUFFIX", "ends_torn", "keep_aside", "set_torn_line_aside"]

_log = logging.getLogger("corticast")

TORN_SUFFIX = ".torn"
"""The side file of ``log.jsonl`` is ``log.jsonl.torn``: one set-aside fragment a line."""

_CHUNK = 64 * 1024


def ends_torn(path: Path) -> bool:
    """The file exists and its last byte is not a newline."""
    try:
        with open(path, "rb") as file:
            return _ends_torn(file)
    except FileNotFoundError:
        return False


def set_torn_line_aside(path: str | os.PathLike[str]) -> Path | None:
    """If ``path`` ends torn, append what follows its last newline to ``path`` +
    :data:`TORN_SUFFIX` (with a newline), cut it from ``path``, and warn naming both.

    The side file is made durable before the log is cut: a crash in between leaves the
    fragment in both, and the next call sets it aside again (a copy too many, none lost).

    Returns
    -------
    Path or None
        The side file, or None if there is no file at ``path`` or it ends with a newline.
    """
    path = Path(path)
    side = path.with_name(path.name + TORN_SUFFIX)
    try:
        with open(path, "r+b") as file:
            if not _ends_torn(file):
                return None
            start = _last_line_start(file)
            file.seek(start)
            fragment = file.read()
            keep_aside(side, fragment + b"\n")
            file.truncate(start)
            os.fsync(file.fileno())
    except FileNotFoundError:
        return None
    _log.warning(
        "%s ended with a torn last line (a crash mid-write): its %d bytes were moved to %s, "
        "so the next record starts a line of its own",
        path,
        len(fragment),
        side,
    )
    return side


def keep_aside(side: Path, data: bytes) -> None:
    """Append ``data`` to the side file ``side`` durably (the data and, for a new file, its
    directory entry fsync'd): done before what it keeps is cut from the log, so a crash in
    between leaves a copy too many, never none."""
    with open(side, "ab") as kept:
        kept.write(data)
        kept.flush()
        os.fsync(kept.fileno())
    fsync_path(side.parent)


def _ends_torn(file: BinaryIO) -> bool:
    if file.seek(0, os.SEEK_END) == 0:
        return False
    file.seek(-1, os.SEEK_END)
    return file.read(1) != b"\n"


def _last_line_start(file: BinaryIO) -> int:
    """The offset just past the file's last newline (0 if it has none), read from the end."""
    end = file.seek(0, os.SEEK_END)
    while end > 0:
        begin = max(0, end - _CHUNK)
        file.seek(begin)
        found = file.read(end - begin).rfind(b"\n")
        if found >= 0:
            return begin + found + 1
        end = begin
    return 0
