"""How every command line (``corticast`` and its subcommands, the bench tools) reports an error
its user can fix: one line, ``error: <message>``, on stderr, and an exit status that says
whether running again could help (:data:`~service.core.errors.EXIT_FAILED`,
:data:`~service.core.errors.EXIT_UNUSABLE`); never a traceback. A bug still shows its
traceback: only corticast's own errors and bad input or files (``ValueError``, ``OSError``) are
turned into a line. A warning (a crashed recording read up to its break) is one line too,
``warning: <message>``, without the source line Python would print under it."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import NoReturn, TypeVar

import typer

from service.core import log_queue
from service.core.errors import EXIT_FAILED, CorticastError

T = TypeVar("T")


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print ``error: message`` on stderr, after the log queued so far, and exit with
    ``code``."""
    log_queue.flush()
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def warnings_in_one_line() -> None:
    """Print every warning as ``warning: message``: a source line under it reads as a crash."""
    warnings.formatwarning = _one_line


def _one_line(message: Warning | str, *_args: object, **_kwargs: object) -> str:
    return f"warning: {message}\n"


def or_exit(make: Callable[[], T], *also: type[Exception]) -> T:
    """``make()``, or :func:`fail` with the error's message: a :class:`CorticastError` exits
    with its ``exit_code``, a ``ValueError``, ``OSError`` or one of ``also`` (errors a command
    knows its user causes, e.g. ``TypeError`` from a ``--set`` value) with ``EXIT_FAILED``."""
    try:
        return make()
    except CorticastError as err:
        fail(str(err), err.exit_code)
    except (ValueError, OSError, *also) as err:
        fail(str(err))
