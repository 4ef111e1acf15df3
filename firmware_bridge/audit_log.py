"""Append-only record of every stimulation decision, arm and disarm: JSON lines, rotated by size.

Every record carries the wall time (``time``) and the boot id of the machine that wrote it
(``boot``, from ``/proc/sys/kernel/random/boot_id``; null where there is none), so that a later
process can tell whether the monotonic ``clock`` readings in it are on its own clock.

Durability. A durable :meth:`AuditLog.append` returns only after an fsync: the bridge writes
every ``start``, ``arm``, ``disarm`` and ``transmit`` record and every decision on an admitted
train that way, and sends no STIMULATE before its ``transmit`` record is on disk. Records of
blocked requests are appended without an fsync of their own (the next durable record's fsync
covers them), so a request loop that keeps being blocked does not fsync at its own rate.

Rotation. When the next record would take the file past ``max_bytes``, ``audit.jsonl`` becomes
``audit.jsonl.1`` (``.1`` becomes ``.2``, and so on) and a new ``audit.jsonl`` starts with a
``checkpoint`` record from the provider set by :meth:`AuditLog.set_checkpoint` (the bridge's
trains of the last day). Files past ``keep_files`` rotated ones are deleted only after that
checkpoint is on disk, so the newest file that starts with a checkpoint and the files after it
always hold everything the interlocks need (:func:`read_audit_history`). A file taken away
while in use (removed, renamed, replaced or truncated: a log cleaner, logrotate) is noticed at
the next append: what the path holds then is moved aside like a rotated file, and a new file
starts with a checkpoint, so its records are not lost to the next reader, nor the trains.

One writer. Each bridge counts, against refractory and budgets, the trains of its own lifetime
and those it read back at start; two bridges on one log (a second daemon started by hand beside
the service) would each miss the other's trains, and their rotations would move and prune each
other's files. So an :class:`AuditLog` holds an exclusive lock (``flock``) on ``path`` +
``.lock`` while it is open, and a second one on the same path, in this process or another, is
refused at open. The lock goes with the process: a crash leaves nothing to clean up.

Crashes. A torn last line (the process died mid-write, or the machine lost power before the
line's fsync) was never acknowledged as durable, so no STIMULATE can have followed it: readers
skip it with a warning. A log opened with a torn last line is rotated aside first, so a torn
line is always the last line of its file; anything unreadable elsewhere is an
:class:`~firmware_bridge.errors.AuditLogError` naming the file and line.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self

from firmware_bridge.errors import AuditLogError
from service.core.atomic_write import fsync_path
from service.core.checks import check_int
from service.core.torn_line import ends_torn

__all__ = ["LOCK_SUFFIX", "AuditLog", "audit_files", "read_audit_history", "read_audit_log"]

_log = logging.getLogger("corticast.bridge")

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")

LOCK_SUFFIX = ".lock"
"""The lock file of ``audit.jsonl`` is ``audit.jsonl.lock`` (it stays; only its lock comes and
goes)."""

Checkpoint = Callable[[], Mapping[str, Any]]
"""Returns the fields of the ``checkpoint`` record a new file starts with."""


class AuditLog:
    """One JSON object per line; see the module docstring for durability and rotation.

    Parameters
    ----------
    path
        File to append to; created (with its directory entry fsync'd) if missing. An existing
        log is never truncated.
    max_bytes
        Rotate before a record would take the file past this size; None: never rotate. A
        file may exceed it by its first record (a large checkpoint).
    keep_files
        Rotated files kept (``.1`` to ``.keep_files``); older ones are deleted when a rotation
        has written its checkpoint. Without a checkpoint provider nothing is deleted.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int | None = None,
        keep_files: int = 32,
    ) -> None:
        if max_bytes is not None:
            check_int("max_bytes", max_bytes, 1, None)
        check_int("keep_files", keep_files, 1, None)
        self.path = Path(path)
        self.boot_id = _read_boot_id()
        self._max_bytes = max_bytes
        self._keep_files = keep_files
        self._checkpoint: Checkpoint | None = None
        self._lock = threading.Lock()
        self._writing_since: float | None = None
        """Monotonic time the append in progress took the lock (None: none is): written under
        the lock, read without it (:meth:`writing_for`)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._holder = _hold_exclusively(self.path)
        except OSError as err:
            raise AuditLogError(f"cannot open audit log {str(self.path)!r}: {err}") from err
        try:
            if ends_torn(self.path):
                _log.warning(
                    "audit log %s ends with a torn line (a crash mid-write); it is rotated aside",
                    self.path,
                )
                self._shift_files()
            self._open()
        except OSError as err:
            self._holder.close()
            raise AuditLogError(f"cannot open audit log {str(self.path)!r}: {err}") from err

    @property
    def closed(self) -> bool:
        return self._file.closed

    def writing_for(self) -> float | None:
        """Seconds the append in progress has been writing (its rotation, write and fsync);
        None when none is. Read without the lock, which that append holds: it tells a stage
        stuck behind a disk whose fsync does not return from one stuck elsewhere
        (``service.daemon.stalls``)."""
        since = self._writing_since
        return None if since is None else time.monotonic() - since

    def set_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Start every file that rotation opens with ``{"event": "checkpoint", **checkpoint()}``.

        ``checkpoint`` is called under this log's lock, by whichever thread appends.
        """
        self._checkpoint = checkpoint

    def append(self, record: Mapping[str, Any], *, durable: bool = True) -> None:
        """Write ``record`` (plus ``time`` and ``boot``) as one line; fsync it if ``durable``.

        Raises
        ------
        AuditLogError
            If the log is closed, or the record cannot be serialised, written, or (when
            durable) made durable.
        """
        data = self._encode(record)
        with self._lock:
            if self._file.closed:
                raise AuditLogError(f"audit log {str(self.path)!r} is closed")
            self._writing_since = time.monotonic()
            try:
                if self._taken_away():
                    self._start_again()
                elif self._must_rotate(len(data)):
                    self._rotate()
                self._write(data, durable=durable)
            except OSError as err:
                raise AuditLogError(f"cannot append to {str(self.path)!r}: {err}") from err
            finally:
                self._writing_since = None

    def close(self) -> None:
        """Make everything written durable, close the file and free the path for another log
        (the bridge the supervisor reopens); idempotent. The path is freed too where the file
        was closed already: a log that could not start again (:meth:`_start_again`) is left so."""
        with self._lock:
            try:
                if not self._file.closed:
                    self._close_file()
            finally:
                self._holder.close()

    def _close_file(self) -> None:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError:
            _log.exception("could not fsync audit log %s on close", self.path)
        finally:
            self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ----------------------------------------------------------------- internals
    def _encode(self, record: Mapping[str, Any]) -> bytes:
        entry = {"time": time.time(), "boot": self.boot_id, **record}
        try:
            line = json.dumps(entry, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
        except (TypeError, ValueError) as err:
            raise AuditLogError(f"audit record is not plain JSON: {err}: {entry!r}") from err
        # A lone surrogate (a file name's byte that is not UTF-8, as Python decodes it) has no
        # UTF-8: written as its JSON escape, the record reads back as it was given.
        return (line + "\n").encode("utf-8", "backslashreplace")

    def _open(self) -> None:
        created = not self.path.exists()
        self._file = open(self.path, "ab")  # noqa: SIM115 - held open for the log's life
        self._size = os.fstat(self._file.fileno()).st_size
        self._header_size = 0
        if created:
            fsync_path(self.path.parent)

    def _write(self, data: bytes, *, durable: bool) -> None:
        self._file.write(data)
        self._file.flush()
        if durable:
            os.fsync(self._file.fileno())
        self._size += len(data)

    def _must_rotate(self, incoming: int) -> bool:
        return (
            self._max_bytes is not None
            and self._size + incoming > self._max_bytes
            and self._size > self._header_size  # something besides the checkpoint
        )

    def _rotate(self) -> None:
        """Move the full file aside, start a new one with a checkpoint, then prune."""
        header = self._checkpoint_line()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._shift_files()
        self._open()
        if header is None:
            return
        self._begin_with(header)
        for old in audit_files(self.path)[: -(self._keep_files + 1)]:
            old.unlink()
        fsync_path(self.path.parent)

    def _taken_away(self) -> bool:
        """The path no longer names the open file (removed, renamed, replaced), or the file
        is shorter than what was written to it (truncated): what goes on being written there
        would be lost to the next reader, and the trains before it with it."""
        opened = os.fstat(self._file.fileno())
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (named.st_dev, named.st_ino) != (opened.st_dev, opened.st_ino) or (
            opened.st_size < self._size
        )

    def _start_again(self) -> None:
        """After :meth:`_taken_away`: whatever the path holds now is moved aside, as a rotated
        file, and a new file starts with a checkpoint, so no train is forgotten."""
        _log.error(
            "audit log %s was removed, replaced or truncated while in use; it starts again "
            "with a checkpoint of the trains of the last day",
            self.path,
        )
        header = self._checkpoint_line()
        self._file.close()
        if self.path.exists():
            self._shift_files()
        self._open()
        if header is not None:
            self._begin_with(header)

    def _checkpoint_line(self) -> bytes | None:
        """The ``checkpoint`` record a new file starts with; None without a provider."""
        if self._checkpoint is None:
            return None
        return self._encode({"event": "checkpoint", **self._checkpoint()})

    def _begin_with(self, header: bytes) -> None:
        """Write the new file's checkpoint, durably; rotation never moves it alone."""
        self._write(header, durable=True)
        self._header_size = len(header)

    def _shift_files(self) -> None:
        """``path.k`` -> ``path.k+1`` (highest first, so nothing is overwritten), ``path`` ->
        ``path.1``; a crash half-way leaves a gap in the numbers, never a lost file."""
        for index in sorted(_rotated_indices(self.path), reverse=True):
            os.replace(_rotated(self.path, index), _rotated(self.path, index + 1))
        os.replace(self.path, _rotated(self.path, 1))
        fsync_path(self.path.parent)


def audit_files(path: str | os.PathLike[str]) -> list[Path]:
    """The log's files that exist, oldest first: ``path.N`` ... ``path.1``, ``path``."""
    path = Path(path)
    files = [_rotated(path, i) for i in sorted(_rotated_indices(path), reverse=True)]
    return [*files, path] if path.exists() else files


def read_audit_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record in the log and its rotated files, oldest first.

    Raises
    ------
    FileNotFoundError
        If there is no file of the log at all.
    AuditLogError
        If a line other than a file's torn last line is not a JSON object (names the file).
    """
    files = audit_files(path)
    if not files:
        raise FileNotFoundError(f"no audit log at {str(path)!r}")
    return [record for file in files for _, record in _read_file(file)]


def read_audit_history(path: str | os.PathLike[str]) -> list[tuple[str, dict[str, Any]]]:
    """The records that the interlock history needs, oldest first, each with its location.

    That is every record from the newest file that starts with a ``checkpoint`` on (every
    file, if none does); older files may have been deleted. Locations read ``file:line``.

    Raises
    ------
    AuditLogError
        If one of those files cannot be read, or holds a line (other than a torn last line)
        that is not a JSON object; the message names the file.
    """
    needed: list[list[tuple[str, dict[str, Any]]]] = []
    for file in reversed(audit_files(path)):
        lines = [(f"{file}:{number}", record) for number, record in _read_file(file)]
        needed.append(lines)
        if lines and lines[0][1].get("event") == "checkpoint":
            break
    return [line for lines in reversed(needed) for line in lines]


def _read_file(file: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        text = file.read_bytes()
    except OSError as err:
        raise AuditLogError(f"cannot read audit log {str(file)!r}: {err}") from err
    lines = text.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a newline, as every complete one does
    records = []
    for number, line in enumerate(lines, start=1):
        if line.strip():
            records.append((number, _parse(file, number, line)))
    if torn.strip():
        try:
            records.append((len(lines) + 1, _parse(file, len(lines) + 1, torn)))
        except AuditLogError as err:
            _log.warning("skipped the torn last line of the audit log (a crash mid-write): %s", err)
    return records


def _parse(file: Path, number: int, line: bytes) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except (UnicodeDecodeError, ValueError) as err:
        raise AuditLogError(
            f"audit log {str(file)!r} line {number} is not JSON ({err}): {line[:80]!r}"
        ) from err
    if not isinstance(record, dict):
        raise AuditLogError(
            f"audit log {str(file)!r} line {number} must be a JSON object, got {line[:80]!r}"
        )
    return record


def _rotated(path: Path, index: int) -> Path:
    return path.with_name(f"{path.name}.{index}")


def _rotated_indices(path: Path) -> list[int]:
    pattern = re.compile(re.escape(path.name) + r"\.([1-9][0-9]*)")
    if not path.parent.is_dir():
        return []
    return [
        int(match.group(1))
        for entry in path.parent.iterdir()
        if (match := pattern.fullmatch(entry.name))
    ]


def _hold_exclusively(path: Path) -> BinaryIO:
    """The open lock file of the log at ``path``, locked exclusively; closing it unlocks.

    Raises
    ------
    AuditLogError
        If another open :class:`AuditLog` holds it (names the log and the lock file).
    """
    lock = path.with_name(path.name + LOCK_SUFFIX)
    # Read access is all flock needs: a lock file another user created (0644) still serves.
    holder = open(os.open(lock, os.O_RDONLY | os.O_CREAT, 0o600), "rb")  # noqa: SIM115
    try:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder.close()
        raise AuditLogError(
            f"audit log {str(path)!r} is in use by another bridge (it holds {str(lock)!r}): "
            "two bridges on one log would each count only their own trains against refractory "
            "and budgets; stop the other one (another daemon on this configuration?)"
        ) from None
    except OSError:
        holder.close()
        raise
    return holder


def _read_boot_id() -> str | None:
    """This boot's id: monotonic clock readings compare only between records that share it."""
    try:
        return _BOOT_ID.read_text(encoding="ascii").strip() or None
    except OSError:
        return None
