"""The one command-line convention: a user's error is one line and a status, a bug a traceback."""

from __future__ import annotations

import warnings

import pytest
import typer
from typer.testing import CliRunner

from service.config import ConfigError
from service.core.errors import EXIT_FAILED, EXIT_UNUSABLE, CorticastError
from service.core.user_errors import or_exit, warnings_in_one_line

_PYTHONS_FORMATWARNING = warnings.formatwarning
"""Taken at import, during collection: before any CLI test replaces it process-wide."""


def _run(error: Exception, *also: type[Exception]):
    app = typer.Typer()

    @app.command()
    def command() -> None:
        def make() -> None:
            raise error

        or_exit(make, *also)

    return CliRunner().invoke(app, [])


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError("[model] path: no such file"), EXIT_UNUSABLE),
        (CorticastError("the stream went away"), EXIT_FAILED),
        (ValueError("bad value"), EXIT_FAILED),
        (FileNotFoundError(2, "No such file or directory"), EXIT_FAILED),
    ],
)
def test_a_users_error_is_one_line_and_an_exit_status(error, code):
    result = _run(error)
    assert result.exit_code == code
    assert result.output == f"error: {error}\n"


def test_an_error_the_command_names_is_reported_and_anything_else_is_left_to_show_itself():
    assert _run(TypeError("hidden must be ints"), TypeError).exit_code == EXIT_FAILED
    bug = _run(KeyError("a bug"))
    assert isinstance(bug.exception, KeyError)


def test_a_warning_prints_as_one_line_without_its_source(monkeypatch):
    """What Python prints for a warning is ``warnings.formatwarning``'s text."""
    # Python's own, whatever a CLI test run earlier in this process installed; restored after.
    monkeypatch.setattr(warnings, "formatwarning", _PYTHONS_FORMATWARNING)
    message = RuntimeWarning("rec.xdf: file ends at byte 9; read the 3 samples")
    before = warnings.formatwarning(message, RuntimeWarning, "reader.py", 7, "warn(...)")
    assert "reader.py:7" in before and "warn(...)" in before
    warnings_in_one_line()
    after = warnings.formatwarning(message, RuntimeWarning, "reader.py", 7, "warn(...)")
    assert after == "warning: rec.xdf: file ends at byte 9; read the 3 samples\n"
