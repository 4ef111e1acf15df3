"""The one command-line convention: a user's error is one line and a status, a bug a traceback."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from service.config import ConfigError
from service.core.errors import EXIT_FAILED, EXIT_UNUSABLE, CorticastError
from service.core.user_errors import or_exit


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
