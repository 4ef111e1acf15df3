"""The closed loop's log, written by a thread of its own: no thread of the loop waits on it.

Under systemd stderr is journald's stream socket; when journald stops reading (stalled,
rotating, its disk full), or a terminal is paused (Ctrl-S) or piped into a pager that stopped
reading, a write to it blocks. A handler that wrote each record on the logging thread, holding
its lock, stopped every thread that logged behind it: the ingest thread, the scheduler, the
supervisor (whose fault rounds log around the disarm), the bridge's heartbeat. Here a record is
formatted on the logging thread (its arguments and traceback rendered before it crosses
threads: they may change, or hold frames, afterwards) and put on a bounded queue without
waiting; a full queue drops the record and counts it (``corticast_log_records_dropped_total``).
One listener thread writes the lines, and says how many were dropped once it writes again.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import sys
import threading
import time
from logging.handlers import QueueHandler, QueueListener

QUEUE_RECORDS = 10_000
"""Records held while the writer is held up: minutes of the daemon's log, a few MB at most."""
STOP_WAIT_S = 2.0
"""The longest the process's end waits for the queued records to be written: a healthy
journald takes them in milliseconds, and one that never reads again must not hold the stop past
the unit's ``TimeoutStopSec`` (15 s, shared with the disarm and the bridge's close)."""


class _Tally:
    """Records dropped in this process, counted from the logging threads and the writer's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, count: int = 1) -> None:
        with self._lock:
            self.value += count


_dropped = _Tally()


def records_dropped() -> int:
    """Records this process dropped, never written (the queue full, or the write failed)."""
    return _dropped.value


class _DroppingQueueHandler(QueueHandler):
    """``QueueHandler`` whose ``enqueue`` never waits: a full queue drops the record."""

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            _dropped.add()

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        """The standard one prints a traceback on stderr from the logging thread: the very
        write that must not block. One line on the queue names the record instead."""
        note = logging.LogRecord(
            record.name, logging.ERROR, record.pathname, record.lineno,
            "a log record could not be formatted (%r): %r", (record.msg, sys.exc_info()[1]), None,
        )  # fmt: skip
        try:
            self.enqueue(self.prepare(note))
        except Exception:
            _dropped.add()


class _Flushed:
    """Put behind the records to flush: set by the listener once it reaches it."""

    def __init__(self) -> None:
        self.reached = threading.Event()


class _Listener(QueueListener):
    """``QueueListener`` writing each prepared record's line to the current ``sys.stderr``.

    Lines are written to the stream's file descriptor itself where it has one: a write held up
    there holds no lock of Python's (``sys.stderr``'s buffer lock, a handler's), which the
    process's end would wait on (``logging.shutdown``, the final flush of the standard
    streams), so a writer stuck for good is left behind and the process still exits."""

    def __init__(self, records: queue.Queue, formatter: logging.Formatter) -> None:
        super().__init__(records)
        self._formatter = formatter
        self._reported = _dropped.value  # an earlier listener's drops are its to say
        self._written = 0
        self._given_up_at: int | None = None
        """``_written`` when a flush last gave up on the writer: not waited for again (the
        command's end, then the process's) until it has written since."""

    def handle(self, record: logging.LogRecord | _Flushed) -> None:
        dropped = _dropped.value
        if dropped > self._reported:
            self._write_line(self._dropped_note(dropped - self._reported))
            self._reported = dropped
        if isinstance(record, _Flushed):
            record.reached.set()
        else:
            self._write_line(record.getMessage())  # formatted already (QueueHandler.prepare)

    def _dropped_note(self, count: int) -> str:
        note = logging.LogRecord(
            "corticast.log", logging.WARNING, __file__, 0,
            "%d log record(s) dropped: the log's writer (stderr: journald or a terminal) was "
            "held up and the queue of %d was full", (count, QUEUE_RECORDS), None,
        )  # fmt: skip
        return self._formatter.format(note)

    def _write_line(self, line: str) -> None:
        try:
            _write(sys.stderr, line + "\n")
            self._written += 1
        except (OSError, ValueError, AttributeError):  # stderr closed or None, its reader gone
            _dropped.add()
            self._reported += 1

    def start(self) -> None:
        """``QueueListener.start``, its thread named for the stacks and the log's lines."""
        self._thread = threading.Thread(target=self._monitor, name="corticast-log", daemon=True)
        self._thread.start()

    def flush(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the records queued so far to be written; whether they
        were."""
        if self._thread is None or self._given_up_at == self._written:
            return False
        deadline = time.monotonic() + timeout_s
        flushed = _Flushed()
        try:
            self.queue.put(flushed, timeout=timeout_s)
        except queue.Full:
            self._given_up_at = self._written
            return False
        if flushed.reached.wait(max(0.0, deadline - time.monotonic())):
            return True
        self._given_up_at = self._written
        return False

    def stop_within(self, timeout_s: float) -> None:
        """Write what is queued and end the thread, waiting ``timeout_s`` at most (``stop``
        would wait forever for a writer held up for good: that thread is left behind)."""
        if self.flush(timeout_s):
            try:
                self.enqueue_sentinel()
            except queue.Full:  # records came meanwhile; the thread ends with the process
                return
            self._thread.join(timeout_s)
        self._thread = None


def _write(stream, text: str) -> None:
    """``text`` to ``stream``, through its file descriptor where it has one."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # a test runner's stream: no descriptor
        stream.write(text)
        stream.flush()
        return
    data = text.encode(stream.encoding or "utf-8", "backslashreplace")
    while data:
        data = data[os.write(fd, data) :]


_listener: _Listener | None = None


def queued_handler(formatter: logging.Formatter) -> logging.Handler:
    """A handler putting records formatted by ``formatter`` on a queue, and the listener that
    writes them started (one per process: one started before is stopped first). Its records are
    written at the process's end too, ``STOP_WAIT_S`` at most (``stop``)."""
    global _listener
    stop()
    records: queue.Queue = queue.Queue(QUEUE_RECORDS)
    handler = _DroppingQueueHandler(records)
    handler.setFormatter(formatter)
    _listener = _Listener(records, formatter)
    _listener.start()
    return handler


def flush(timeout_s: float = STOP_WAIT_S) -> None:
    """Wait up to ``timeout_s`` for the records queued so far to be written (none queued:
    nothing to wait for). A command's last line (``error: ...``) comes after its log."""
    if _listener is not None:
        _listener.flush(timeout_s)


def stop(timeout_s: float = STOP_WAIT_S) -> None:
    """Write what is queued and stop the listener, waiting ``timeout_s`` at most. Records
    logged afterwards are dropped once the queue is full: the process is ending."""
    global _listener
    if _listener is not None:
        _listener.stop_within(timeout_s)
        _listener = None


atexit.register(stop)
