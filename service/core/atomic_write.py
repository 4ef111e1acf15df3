"""Write a file so that a kill or a power loss leaves either the old file or the new one.

A file written in place and cut short (SIGKILL, Ctrl-C, a full disk, the power) is read back
later as a half-written one. Here the data goes to a scratch file in the same directory, is
fsync'd, and is renamed over the target (atomic on POSIX), and the rename itself is made
durable; a failure removes the scratch file and leaves the target as it was.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

__all__ = ["fsync_path", "replace_keeping_mode", "write_atomically", "written_atomically"]


def write_atomically(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Replace ``path``'s contents with ``data`` (text as UTF-8) atomically and durably."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with written_atomically(path) as scratch:
        scratch.write_bytes(payload)


@contextlib.contextmanager
def written_atomically(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A scratch path beside ``path`` for a writer that takes a path, renamed onto ``path``
    when the block ends without an error and removed when it raises.

    The scratch file keeps ``path``'s suffix (writers that choose a format by it, such as
    ``.xdfz``, choose the same one). A new file takes the umask's mode, as ``open`` gives it;
    a replaced one keeps its own. A symlink at ``path`` keeps pointing where it did (its
    target is replaced).
    """
    target = Path(os.path.realpath(path))
    if not target.parent.is_dir():  # said of the path as given, not of the scratch file's name
        missing = "is not a directory" if target.parent.exists() else "does not exist"
        raise FileNotFoundError(
            f"cannot write {os.fspath(path)!r}: its directory {str(target.parent)!r} {missing}"
        )
    scratch = target.with_name(
        f".{target.stem}.{os.getpid()}-{secrets.token_hex(4)}.part{target.suffix}"
    )
    try:
        yield scratch
        fsync_path(scratch)
        replace_keeping_mode(scratch, target)
    finally:
        with contextlib.suppress(OSError):
            scratch.unlink(missing_ok=True)
    fsync_path(target.parent)  # the rename: without it a power loss may undo it


def replace_keeping_mode(source: Path, target: Path) -> None:
    """Rename ``source`` over ``target`` (atomic on one file system); a file replaced keeps
    its permission bits, a new one takes ``source``'s."""
    if target.exists():
        shutil.copymode(target, source)
    os.replace(source, target)


def fsync_path(path: Path) -> None:
    """Make a file's data, or a directory's entries (a file new or renamed in it), durable:
    written out before this returns, so that a crash after keeps them."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
