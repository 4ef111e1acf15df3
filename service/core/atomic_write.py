"""Write a file so that a kill or a power loss leaves either the old file or the new one.

A file written in place and cut short (SIGKILL, Ctrl-C, a full disk, the power) is read back
later as a half-written one. Here the data goes to a temporary file in the same directory, is
fsync'd, and is renamed over the target (atomic on POSIX), and the rename itself is made
durable; a failure removes the temporary file and leaves the target as it was.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from pathlib import Path

__all__ = ["write_atomically"]


def write_atomically(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Replace ``path``'s contents with ``data`` (text as UTF-8) atomically and durably.

    A new file takes the umask's mode, as ``open`` gives it; a replaced one keeps its own.
    """
    target = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    scratch = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    try:
        with open(scratch, "xb") as file:  # not mkstemp: its file is private (0600)
            file.write(payload)
            file.flush()
            os.fsync(file.fileno())
        if target.exists():
            shutil.copymode(target, scratch)
        os.replace(scratch, target)
    except BaseException:
        with contextlib.suppress(OSError):
            scratch.unlink(missing_ok=True)
        raise
    _fsync_directory(target.parent)


def _fsync_directory(directory: Path) -> None:
    """Make the rename durable: without it a power loss may bring the old file back."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
