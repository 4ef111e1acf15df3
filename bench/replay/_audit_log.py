"""A replay's dry-run bridge starts from an audit log of its own, not an earlier replay's,
and its audit log ends in the report directory without the lock file beside it.

A bridge rebuilds refractory and its budgets from the trains in its audit log at start, as a
restarted daemon must. A replay's log lies in the report directory, so a replay into a
directory an earlier replay (finished or stopped half-way) wrote to counted that replay's
trains as its own: on the session clock they all fell in the same minute, and its own trains
were blocked by budgets that no daemon on that session would have reached.

An open audit log holds a lock file beside it (``firmware_bridge.audit_log``), which stays
when the log closes: removing it then would let an opener that had opened it before the
removal lock the removed file while a third locks a new one, two writers on one log. So a
replay writes its logs in a scratch directory inside the report directory and moves them out
when it ends; the lock files go with the scratch directory, and nothing opens them after.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from firmware_bridge.audit_log import LOCK_SUFFIX, audit_files

_log = logging.getLogger("corticast.replay")


def fresh_audit_log(path: Path) -> Path:
    """``path``, with the files of an earlier replay's audit log there (``path`` and its
    rotated ``path.N``) removed, as the rest of the report it belongs to is replaced."""
    earlier = audit_files(path)
    for file in earlier:
        file.unlink()
    if earlier:
        _log.info("replay: removed the audit log an earlier replay left at %s", path)
    return path


@contextlib.contextmanager
def audit_logs_moved_into(report_dir: Path) -> Iterator[Path]:
    """A scratch directory in ``report_dir`` for the replay's audit logs, whose logs are moved
    into ``report_dir`` when the block ends, failed or not (each replacing an earlier replay's
    files of that log), and which is then removed with the logs' lock files."""
    with tempfile.TemporaryDirectory(prefix=".audit-", dir=report_dir) as scratch:
        try:
            yield Path(scratch)
        finally:
            written = sorted(os.listdir(scratch))
            for name in written:
                if name.endswith(".jsonl"):  # a log's own name: its rotated files end in .N
                    fresh_audit_log(report_dir / name)
            for name in written:
                if not name.endswith(LOCK_SUFFIX):
                    os.replace(os.path.join(scratch, name), report_dir / name)
