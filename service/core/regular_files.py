"""Reading a file an operator names, refusing anything but a regular file before a byte is read:
opening a FIFO waits for a writer for ever, and /dev/zero reads until memory runs out."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from service.core.errors import EXIT_UNUSABLE, CorticastError

_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


class NotRegularFileError(CorticastError, ValueError):
    """The path names something other than a regular file; ``kind`` says what, in words."""

    exit_code = EXIT_UNUSABLE  # the same path is no file after a restart either

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def check_regular(info: os.stat_result) -> None:
    """Raise :class:`NotRegularFileError` unless ``info`` is a regular file's."""
    if not stat.S_ISREG(info.st_mode):
        raise NotRegularFileError(_KINDS.get(stat.S_IFMT(info.st_mode), "a special file"))


class TooLargeError(CorticastError, ValueError):
    """The regular file holds more than the reader takes; ``size`` says how much it holds."""

    exit_code = EXIT_UNUSABLE

    def __init__(self, size: int) -> None:
        super().__init__(f"{size} bytes")
        self.size = size


def read_regular(path: Path, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` of them.

    Raises
    ------
    NotRegularFileError
        If ``path`` is anything else (a device is never opened: opening may act).
    TooLargeError
        If it holds more than ``max_bytes`` (its size is checked before it is read, and the
        read stops past the limit, should it grow meanwhile).
    OSError
        If it cannot be read.
    """
    check_regular(os.stat(path))
    # Non-blocking: a FIFO swapped in since cannot hold up the open, and fstat catches it.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    with open(fd, "rb") as file:
        info = os.fstat(fd)
        check_regular(info)
        if info.st_size > max_bytes:
            raise TooLargeError(info.st_size)
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise TooLargeError(len(data))
    return data
