"""One background thread with an explicit lifecycle, shared by every worker in corticast.

A worker is started and stopped explicitly (or used as a context manager); whatever exception
ends its loop is kept and re-raised to the next caller of :meth:`raise_if_failed`, so a failure
never vanishes with the thread.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from service.core.thread_placement import ThreadPlacement

_log = logging.getLogger("corticast")


class BackgroundWorker:
    """Base class: subclasses implement :meth:`_prepare`, :meth:`_work` and :meth:`_release`.

    Parameters
    ----------
    thread_name
        Name of the thread, as shown by debuggers and py-spy.
    niceness
        Raise the thread's nice value by this much (Linux: per thread) so that, when cores
        are short, the OS runs the inference path first; 0 leaves it as the process's.
    placement
        CPUs and real-time policy for the thread, applied by the thread itself as it starts
        (every start: a restarted worker keeps them); None leaves both as the process's.
    """

    stop_wait_s: float = 2.0
    """How long :meth:`stop` waits for the thread unless told: a thread that checks its stop
    request between short steps ends well within it; one past it is stuck in a call."""

    def __init__(
        self, thread_name: str, *, niceness: int = 0, placement: ThreadPlacement | None = None
    ) -> None:
        self._thread_name = thread_name
        self._niceness = niceness
        self._placement = placement
        self.placement_report: dict[str, Any] | None = None
        """What the thread last started under (``ThreadPlacement.apply``); None without a
        placement or before the thread ran."""
        self._thread: threading.Thread | None = None
        self._stop_requested = threading.Event()
        self._error: BaseException | None = None
        self.on_failure: Callable[[BaseException], None] | None = None
        """Called in the worker thread with the exception that ended its loop, before it is
        recorded or logged: the daemon disarms stimulation here, at once, rather than when its
        supervisor next comes round (which may be a backoff away)."""

    def start(self) -> Self:
        """Run :meth:`_prepare` in the caller's thread (its errors reach the caller), then
        start the worker thread (where none can be had, its RuntimeError reaches the caller, and
        :meth:`stop` still releases). The last failure is forgotten only once the new thread runs
        (a reader of it is told the worker is well only while it is), and before the thread
        begins its work (a new failure is never lost)."""
        if self.running:
            raise RuntimeError(
                f"{type(self).__name__} is already running; call stop() before start()"
            )
        self._stop_requested.clear()
        self._prepare()
        cleared = threading.Event()
        thread = threading.Thread(
            target=self._guarded, args=(cleared,), name=self._thread_name, daemon=True
        )
        thread.start()  # kept only once started: stop() cannot join one that never was
        self._thread = thread
        self._error = None
        cleared.set()
        return self

    def request_stop(self) -> None:
        """Ask the thread to finish, without waiting: several workers stopped together wait
        out their slowest, not the sum (:meth:`stop` then waits)."""
        self._stop_requested.set()

    def stop(self, timeout: float | None = None) -> bool:
        """Ask the thread to finish, wait up to ``timeout`` s (:attr:`stop_wait_s` unless
        given), release resources; idempotent.

        Returns
        -------
        bool
            True once the thread has ended (or never ran). False if it is still running,
            stuck in a call that did not return in time: it is then left as it is,
            :attr:`running` stays True, :meth:`_release` is not called, and whatever the thread
            uses (a predictor, a socket) must not be freed under it; calling :meth:`stop` again
            waits again.
        """
        self._stop_requested.set()
        if timeout is None:
            timeout = self.stop_wait_s
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                _log.error(
                    "%s did not stop within %.1f s; it is left running, and what it uses is "
                    "not released", self._thread_name, timeout,
                )  # fmt: skip
                return False
            self._thread = None
        self._release()
        return True

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def raise_if_failed(self) -> None:
        """Re-raise the exception that ended the worker's loop, if one did."""
        if self._error is not None:
            raise RuntimeError(f"{self._thread_name} stopped: {self._error}") from self._error

    def _guarded(self, cleared: threading.Event) -> None:
        """The thread's body. Whatever ends :meth:`_work` by raising is a failure, a
        :class:`BaseException` that is no :class:`Exception` too (a ``SystemExit`` from a
        library's ``sys.exit``, a ``KeyboardInterrupt`` raised in the thread): it ends the
        thread all the same, and let through it looked like a clean stop, with no disarm,
        nothing for :meth:`raise_if_failed`, and the supervisor restarting the stage as if it
        had merely stopped. Once recorded it is not raised again: in a thread other than the
        main one ``SystemExit`` would stop nothing more, and anything else would only reach
        ``threading.excepthook``, a second traceback of the one logged here."""
        cleared.wait()  # the last failure forgotten (start), so that a new one is kept
        name_os_thread(self._thread_name)
        if self._niceness:
            lower_thread_priority(self._thread_name, self._niceness)
        try:
            if self._placement is not None:
                self.placement_report = self._placement.apply(self._thread_name)
            self._work()
        except BaseException as err:  # SystemExit too (see the docstring)
            self._tell_failure(err)
            self._error = err
            _log.exception("%s failed; the next reader gets this error", self._thread_name)
        finally:
            self._finished()

    def _tell_failure(self, err: BaseException) -> None:
        """:attr:`on_failure`, whose own failure is logged and goes no further: the worker's
        failure is still recorded, for the supervisor to report and repair."""
        if self.on_failure is None:
            return
        try:
            self.on_failure(err)
        except Exception:
            _log.exception("%s: its failure callback failed", self._thread_name)

    def _prepare(self) -> None:
        """Acquire what the loop needs; runs in :meth:`start`, before the thread."""

    def _work(self) -> None:
        """The loop; return when ``self._stop_requested`` is set."""
        raise NotImplementedError

    def _finished(self) -> None:
        """Runs in the worker thread when :meth:`_work` ends, normally or not."""

    def _release(self) -> None:
        """Runs in :meth:`stop` after the thread has ended."""


def lower_thread_priority(thread_name: str, niceness: int) -> None:
    """Add ``niceness`` to the calling thread's nice value (a Linux thread is its own task)."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + niceness)
    except (AttributeError, OSError) as err:  # no setpriority here, or not allowed
        _log.warning("%s runs at the process's priority: %s", thread_name, err)


_PR_SET_NAME = 15
"""prctl(2): name the calling thread (its first 15 bytes)."""


def name_os_thread(name: str) -> None:
    """Give the calling thread ``name`` where the OS shows it (Linux: ``top -H``, ``ps -L``,
    ``/proc/PID/task/TID/comm``), as Python itself does only from 3.14: the engineer on call,
    and the chaos soak starving the wave stage, tell the daemon's threads apart by it. One
    prctl call, so no dependency; a no-op off Linux or where it fails (a name is no function)."""
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_NAME, ctypes.c_char_p(_first_15_bytes(name)), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as err:  # refused (a seccomp filter), or no prctl
        _log.debug("thread %s not named for the OS: %s", name, err)


def _first_15_bytes(name: str) -> bytes:
    """``name`` in UTF-8 cut to the 15 bytes the OS keeps, at a whole character: a character's
    first bytes alone are no UTF-8, for ``top``, ``ps`` and the soak's lookup to read."""
    return name.encode("utf-8", "replace")[:15].decode("utf-8", "ignore").encode("utf-8")
