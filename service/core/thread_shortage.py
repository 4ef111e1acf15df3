"""A thread that cannot start: the process, or its systemd unit, is at its task limit.

Python then raises a bare ``RuntimeError`` ("can't start new thread"), which no caller that
turns a failed start into one line catches (they catch :class:`CorticastError`, ``ValueError``
and ``OSError``): it ended a command with a traceback. :func:`threads_ran_out` tells it from
the ``RuntimeError`` of a mistake, which should keep its traceback.
"""

from __future__ import annotations

from service.core.errors import CorticastError

_NO_THREAD = "can't start new thread"
"""What CPython's ``Thread.start`` says where no thread can be had."""


class ThreadsRanOutError(CorticastError, RuntimeError):
    """No thread could be started: a restart, once the host has tasks to spare, may work."""


def threads_ran_out(err: BaseException) -> bool:
    """Whether ``err`` is a thread's start refused for want of threads."""
    return isinstance(err, RuntimeError) and str(err) == _NO_THREAD
