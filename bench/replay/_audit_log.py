"""A replay's dry-run bridge starts from an audit log of its own, not an earlier replay's.

A bridge rebuilds refractory and its budgets from the trains in its audit log at start, as a
restarted daemon must. A replay's log lies in the report directory, so a replay into a
directory an earlier replay (finished or stopped half-way) wrote to counted that replay's
trains as its own: on the session clock they all fell in the same minute, and its own trains
were blocked by budgets that no daemon on that session would have reached.
"""

from __future__ import annotations

import logging
from pathlib import Path

from firmware_bridge import audit_files

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
