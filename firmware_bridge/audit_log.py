"""Append-only record of every stimulation decision, arm and disarm: JSON lines, fsync'd."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from firmware_bridge.errors import AuditLogError


class AuditLog:
    """One JSON object per line, each on disk (fsync) before :meth:`append` returns.

    The bridge writes a ``transmit`` record *before* a STIMULATE leaves the host, and refuses to
    send when that write fails, so no train can be delivered without a durable record.

    Parameters
    ----------
    path
        File to append to; created (with its directory entry fsync'd) if missing. An existing
        log is never truncated.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        created = not self.path.exists()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held open
            if created:
                _fsync_directory(self.path.parent)
        except OSError as err:
            raise AuditLogError(f"cannot open audit log {str(self.path)!r}: {err}") from err

    @property
    def closed(self) -> bool:
        return self._file.closed

    def append(self, record: Mapping[str, Any]) -> None:
        """Write ``record`` (plus a wall-clock ``time``) as one line and fsync it.

        Raises
        ------
        AuditLogError
            If the log is closed, or the record cannot be serialised or made durable.
        """
        entry = {"time": time.time(), **record}
        try:
            line = json.dumps(entry, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
        except (TypeError, ValueError) as err:
            raise AuditLogError(f"audit record is not plain JSON: {err}: {entry!r}") from err
        with self._lock:
            if self._file.closed:
                raise AuditLogError(f"audit log {str(self.path)!r} is closed")
            try:
                self._file.write(line + "\n")
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as err:
                raise AuditLogError(f"cannot append to {str(self.path)!r}: {err}") from err

    def close(self) -> None:
        """Close the file; idempotent."""
        with self._lock:
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


def read_audit_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record in the log, oldest first."""
    with open(path, encoding="utf-8") as file:
        return [json.loads(line) for line in file if line.strip()]


def _fsync_directory(directory: Path) -> None:
    """Make a new file's directory entry durable, so the log survives a crash right after."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
