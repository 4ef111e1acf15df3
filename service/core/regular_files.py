"""Reading a file an operator names, refusing anything but a regular file before a byte is read:
opening a FIFO waits for a writer for ever, and /dev/zero reads until memory runs out."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

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


class TooLargeError(CorticastError, ValueError):
    """The regular file holds more than the reader takes; ``size`` says how much it holds."""

    exit_code = EXIT_UNUSABLE

    def __init__(self, size: int) -> None:
        super().__init__(f"{size} bytes")
        self.size = size


def check_regular(info: os.stat_result, max_bytes: int | None = None) -> None:
    """Raise :class:`NotRegularFileError` unless ``info`` is a regular file's, and
    :class:`TooLargeError` if it holds more than ``max_bytes`` (None: any size)."""
    if not stat.S_ISREG(info.st_mode):
        raise NotRegularFileError(_KINDS.get(stat.S_IFMT(info.st_mode), "a special file"))
    if max_bytes is not None and info.st_size > max_bytes:
        raise TooLargeError(info.st_size)


@contextmanager
def open_regular(
    path: Path, max_bytes: int | None = None
) -> Iterator[tuple[BinaryIO, os.stat_result]]:
    """``path`` open for reading, with its status, once it is known to be a regular file of at
    most ``max_bytes`` (:func:`check_regular`): checked before the open, since a device is
    never opened (opening may act), and again on the open file, since a FIFO may have been
    swapped in meanwhile (the open does not block on it: non-blocking).

    Raises
    ------
    NotRegularFileError, TooLargeError
        As :func:`check_regular`.
    OSError
        If it cannot be opened.
    """
    check_regular(os.stat(path), max_bytes)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    with open(fd, "rb") as file:
        info = os.fstat(fd)
        check_regular(info, max_bytes)
        yield file, info


def read_regular(path: Path, max_bytes: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``max_bytes`` of them (:func:`open_regular`;
    the read stops past the limit, should the file grow meanwhile)."""
    with open_regular(path, max_bytes) as (file, _):
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise TooLargeError(len(data))
    return data
