"""The plain-text log: one record, one line, whatever a logged value holds."""

from __future__ import annotations

import logging

import pytest

from service.core.log_format import configure_logging
from service.core.log_text import escape_controls

FORGED = "late\n2026-12-05 14:00:00,000 WARNING corticast.daemon: ARMED by operator"


@pytest.fixture
def terminal_logging(monkeypatch):
    """corticast's plain-text logging on the root logger; pytest's handlers put back after."""
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    monkeypatch.delenv("CORTICAST_LOG_FORMAT", raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("INFO")
    try:
        yield
    finally:
        root.handlers[:], root.level = handlers, level


def test_a_value_with_a_newline_cannot_forge_a_record(terminal_logging, capsys):
    """A disarm reason (or a path, a client's field) holding a newline and a whole fake record
    is escaped as ``repr`` would, so the log shows one record, not an 'ARMED by operator'."""
    logging.getLogger("corticast.bridge").warning("stimulation DISARMED (%s): %s", "x", FORGED)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].endswith(
        "stimulation DISARMED (x): late\\n2026-12-05 14:00:00,000 WARNING corticast.daemon: "
        "ARMED by operator"
    )


def test_other_line_breakers_are_escaped_and_plain_text_is_kept(terminal_logging, capsys):
    logging.getLogger("corticast.api").warning("%s", "\r\x1b[2K\x85\u2028\u202e µV ²")
    [line] = capsys.readouterr().err.splitlines()
    assert line.endswith(r"\r\x1b[2K\x85\u2028\u202e µV ²")


def test_a_lone_surrogate_is_escaped_as_the_terminal_log_writes_it():
    """Checked on the text, not through a logger: a record holding one would reach pytest's
    own log capture, which xdist cannot send between processes (it takes the worker down)."""
    assert escape_controls("\ud800 µV") == r"\ud800 µV"


def test_a_traceback_keeps_its_lines(terminal_logging, capsys):
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("corticast.api").exception("failed")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].endswith("failed") and lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == "ValueError: boom"
