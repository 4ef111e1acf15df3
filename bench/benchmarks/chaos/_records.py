"""The chaos soak's own reading of the records: the host's audit log, the device's pulse log, the
emulator's log of its own disarms and the other tool's marker log.

Written apart from ``firmware_bridge.audit_log`` on purpose: the auditor must not share a bug
with the code whose records it checks. It relies only on the files' documented form: JSON
lines; the audit log rotated by renaming (``audit.jsonl`` -> ``audit.jsonl.1`` -> ``.2`` ...);
a line is complete once its newline is written.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

_ROTATED = r"\.([1-9][0-9]*)"
_DEVICE_DISARM = re.compile(r"device DISARMED \((\w+)\)")
_SNAPSHOT_TRIES = 50


class RecordsUnreadableError(RuntimeError):
    """A complete line of a log is not a JSON object (a log the interlocks rebuild from)."""


def read_host_records(path: Path) -> list[dict[str, Any]]:
    """Every complete record of the audit log at ``path`` and its rotated files, oldest first.

    The files are read as one snapshot: the names are listed (with their inodes) before and
    after reading, and the read is repeated if a rotation renamed anything in between. A last
    line without its newline is still being written (or was torn by a crash) and is left out.

    Raises
    ------
    RecordsUnreadableError
        If a complete line is not a JSON object.
    RuntimeError
        If the log kept rotating through every attempt.
    """
    for _ in range(_SNAPSHOT_TRIES):
        before = _files_by_inode(path)
        contents = []
        for file in before:
            try:
                contents.append((file, file.read_bytes()))
            except FileNotFoundError:
                break
        if _files_by_inode(path) == before and len(contents) == len(before):
            return [record for file, data in contents for record in _parse(file, data)]
        time.sleep(0.02)
    raise RuntimeError(f"the audit log {str(path)!r} kept rotating while it was being read")


def read_pulses(path: Path) -> list[dict[str, Any]]:
    """Every train in the emulator's pulse log (complete lines), in the order delivered."""
    if not path.exists():
        return []
    return [r for r in _parse(path, path.read_bytes()) if r.get("event") == "train"]


def read_marker_times(path: Path) -> tuple[float, ...]:
    """The stamp of every marker in the other tool's log (``bench.benchmarks.chaos._pulser``;
    complete lines), in the order pushed."""
    if not path.exists():
        return ()
    return tuple(record["time"] for record in _parse(path, path.read_bytes()))


def device_disarms(log_path: Path) -> Counter[str]:
    """The emulator's own disarms, by cause, from its log (``device DISARMED (CAUSE)``)."""
    if not log_path.exists():
        return Counter()
    text = log_path.read_text(encoding="utf-8", errors="replace")
    return Counter(match.group(1) for match in _DEVICE_DISARM.finditer(text))


def _files_by_inode(path: Path) -> dict[Path, int]:
    """The log's files, oldest first (``.N`` ... ``.1``, then ``path``), with their inodes."""
    pattern = re.compile(re.escape(path.name) + _ROTATED)
    rotated = []
    for entry in os.scandir(path.parent):
        match = pattern.fullmatch(entry.name)
        if match:
            rotated.append((int(match.group(1)), Path(entry.path)))
    files = [file for _, file in sorted(rotated, reverse=True)]
    if path.exists():
        files.append(path)
    found = {}
    for file in files:
        try:
            found[file] = file.stat().st_ino
        except FileNotFoundError:
            continue
    return found


def _parse(file: Path, data: bytes) -> list[dict[str, Any]]:
    lines = data.split(b"\n")
    lines.pop()  # after the last newline: empty, or a line not yet complete
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as err:
            raise RecordsUnreadableError(
                f"{file}:{number} is not JSON ({err}): {line[:120]!r}"
            ) from None
        if not isinstance(record, dict):
            raise RecordsUnreadableError(f"{file}:{number} is not a JSON object: {line[:120]!r}")
        records.append(record)
    return records
