"""The command line's progress bar: drawn on a terminal, silent anywhere else."""

from __future__ import annotations

import fcntl
import io
import os
import struct
import termios

from service.core.progress import NO_PROGRESS, progress_bar


def test_a_bar_is_drawn_on_a_terminal():
    reader, writer = os.openpty()
    # A terminal 100 columns wide (a new pseudo-terminal has none, and a bar fits in none).
    fcntl.ioctl(writer, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    with os.fdopen(reader, "rb", buffering=0) as screen, os.fdopen(writer, "w") as terminal:
        bar = progress_bar(10, desc="synth", unit="frame", file=terminal, delay=0)
        terminal.flush()
        drawn = screen.read(65536).decode()  # what the terminal shows now
        bar.update(10)
        bar.close()
    assert drawn.startswith("\rsynth:   0%|") and "0/10" in drawn and "frame/s" in drawn


def test_a_log_file_or_pipe_gets_no_bar():
    captured = io.StringIO()
    bar = progress_bar(10, desc="synth", unit="frame", file=captured, delay=0)
    bar.update(10)
    bar.close()
    assert captured.getvalue() == ""


def test_no_progress_takes_updates_and_shows_nothing():
    NO_PROGRESS.update(3)
    NO_PROGRESS.close()
