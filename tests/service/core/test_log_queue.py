"""The closed loop's log queue: a stderr nobody reads (a real pipe, full) holds up no logging
thread; what cannot wait is dropped, counted (``corticast_log_records_dropped_total``) and said
once the writer writes again, and the process's end waits for the writer a bounded time."""

from __future__ import annotations

import logging
import os
import re
import threading
from logging.handlers import QueueHandler

import pytest
from prometheus_client import CollectorRegistry

from service.config import Settings
from service.core import log_queue
from service.core.log_format import configure_logging
from service.daemon.metrics import DaemonMetrics
from tests.service._stalled_stderr import full_pipe, read_until

_log = logging.getLogger("corticast.test")


@pytest.fixture
def stall(monkeypatch):
    """corticast's queued plain-text logging; ``stall()`` makes its stderr a full pipe and
    returns the pipe's read end (called in the test: pytest's capture puts its own stderr back
    between a fixture's setup and the test). pytest's handlers are put back after, the
    listener stopped."""
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    monkeypatch.delenv("CORTICAST_LOG_FORMAT", raising=False)
    monkeypatch.setattr(log_queue, "QUEUE_RECORDS", 100)
    read_end, write_end = full_pipe()
    stream = os.fdopen(write_end, "w", encoding="utf-8")

    def stalled() -> int:
        monkeypatch.setattr("sys.stderr", stream)
        return read_end

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("INFO", queued=True)
    try:
        yield stalled
    finally:
        root.handlers[:], root.level = handlers, level
        os.close(read_end)  # a writer still held up fails now: its thread goes on
        log_queue.stop(timeout_s=30)
        stream.close()


def _on_a_thread(work) -> None:
    """``work()`` on a thread of its own, which must end (a logging call, or a flush, waiting
    on the writer would hold it for good)."""
    thread = threading.Thread(target=work)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "still waiting on the log's writer"


def test_a_full_queue_drops_without_waiting_counts_and_says_so_once_written_again(stall):
    stalled_stderr = stall()
    before = log_queue.records_dropped()
    _on_a_thread(lambda: [_log.warning("record %d", k) for k in range(250)])
    dropped = log_queue.records_dropped() - before
    assert 149 <= dropped <= 150, dropped  # the writer holds one; the queue, 100
    scraped = CollectorRegistry()
    DaemonMetrics(scraped, Settings())
    total = scraped.get_sample_value("corticast_log_records_dropped_total")
    assert total == log_queue.records_dropped() >= dropped
    text = read_until(stalled_stderr, "log record(s) dropped")  # the writer writes again
    log_queue.flush(30)  # the rest, in the pipe's room now
    _log.warning("after")  # no note before it: none dropped since
    text += read_until(stalled_stderr, "corticast.test: after\n")
    assert "corticast.test: record 0\n" in text
    said = re.findall(r"WARNING corticast\.log: (\d+) log record\(s\) dropped: ", text)
    assert sum(map(int, said)) == dropped, (said, dropped)  # in one or more notes
    assert "dropped" not in text.rsplit("corticast.test: record", 1)[1]


def test_a_records_arguments_and_traceback_are_rendered_before_it_waits_in_the_queue(stall):
    stalled_stderr = stall()
    """The listener's thread formats nothing: a value changed after the call, or a traceback's
    frames gone by then, cannot change or break the line."""
    reason = ["stale"]
    _log.warning("disarmed: %s", reason)
    reason[0] = "changed"
    try:
        raise ValueError("boom")
    except ValueError:
        _log.exception("failed")
    text = read_until(stalled_stderr, "ValueError: boom\n")
    assert "disarmed: ['stale']\n" in text
    assert "failed\nTraceback (most recent call last):\n" in text


def test_the_end_gives_up_on_a_writer_held_up_for_good(stall):
    """``QueueListener.stop`` joins its thread without a bound: a stderr that never drains
    would hold the process's end past systemd's ``TimeoutStopSec``. The wait is bounded, and
    once given up (at the command's end) not waited again (at the process's) while the writer
    has written nothing since."""
    stall()
    _log.warning("never written")
    _on_a_thread(lambda: log_queue.flush(timeout_s=0.5))
    _on_a_thread(lambda: log_queue.stop(timeout_s=600))


def test_a_record_that_cannot_be_formatted_is_one_line_in_the_log_not_a_traceback(stall):
    """The standard handler's ``handleError`` prints a traceback on stderr from the logging
    thread, the write that must not wait; the queue takes one line naming it instead. (Handed
    to our handler alone: pytest's own raises on it.)"""
    stalled_stderr = stall()
    [queued] = [h for h in logging.getLogger().handlers if isinstance(h, QueueHandler)]
    queued.handle(_log.makeRecord(_log.name, logging.WARNING, "f.py", 7, "%d trains", ("x",), None))
    text = read_until(stalled_stderr, "could not be formatted")
    assert "ERROR corticast.test: a log record could not be formatted ('%d trains'): " in text
    assert "Traceback" not in text
