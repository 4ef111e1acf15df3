"""Log format: JSON lines under systemd (the journal keeps fields), readable on a terminal.

On a terminal one record is one line: a newline or other control character in a message (a
disarm reason, a path, a client's field) is escaped, so that no value can forge a record. JSON
escapes them already. A traceback keeps its lines.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from service.core import log_queue
from service.core.log_text import escape_controls

_TERMINAL_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "logger": record.name,
            "thread": record.threadName,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class _OneLinePerRecord(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        return escape_controls(super().formatMessage(record))


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record, as the standard
    library's last-resort handler does: a handler bound to the stream at start would write to
    a closed file once something that replaced stderr (a CLI test runner, a redirect) is gone.
    """

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        """``StreamHandler.__init__`` assigns a stream; the current one is always used."""


def configure_logging(level: str, *, queued: bool = False) -> None:
    """JSON lines when started by systemd (``INVOCATION_ID`` set) or asked for with
    ``CORTICAST_LOG_FORMAT=json``; plain text otherwise.

    ``queued`` for the closed loop's processes: records are written by a thread of their own
    (:mod:`service.core.log_queue`), so that no thread of the loop waits on stderr. A one-shot
    command writes each record as it comes: a test runner reads its output when it returns."""
    as_json = os.environ.get("CORTICAST_LOG_FORMAT") == "json" or "INVOCATION_ID" in os.environ
    formatter = _JsonLines() if as_json else _OneLinePerRecord(_TERMINAL_FORMAT)
    if queued:
        handler = log_queue.queued_handler(formatter)
    else:
        log_queue.stop()
        handler = _CurrentStderr()
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
