"""The loop process's end of the control link: the daemon's operations for a control plane
that runs in a process of its own (``[api] own_process``, ``service.api.control_process``).

Parsing HTTP, rendering JSON and answering scrapers and query clients all hold a Python
process's GIL; in the loop's process they delayed its wake-ups (issue 19). With the control
plane in its own process, what is left here is this link: a ``multiprocessing.connection``
listener on a unix socket in a directory only this user can enter, with a random key that each
connection must prove (an HMAC challenge, before any message is read). A call is
``(name, args)`` of plain values, the answer ``("ok", value)`` or ``("error", kind, message,
detail)``: exceptions cross as their kind and message, never pickled.

Every connection is served by a thread of its own, so a disarm never queues behind a model swap
that another request is waiting on. One that gets no thread (threads ran out) is closed, its
call failing, and counted as a ``control`` fault, disarming first: that call may have been a
disarm. The threads keep the process's priority on purpose: one
that holds the interpreter lock must finish quickly, and a thread niced (or moved off a
real-time policy) below the control process's own work would hold the lock while preempted,
the loop's threads waiting behind it (measured: p99 1.62x and a 130 ms stall with them lowered).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing import AuthenticationError
from multiprocessing.connection import (
    Connection,
    Listener,
    answer_challenge,
    deliver_challenge,
)
from pathlib import Path
from typing import Any

from prometheus_client import generate_latest

from service.core.checks import preview
from service.core.errors import CorticastError
from service.core.rate_limited_log import RateLimitedLog
from service.core.worker import BackgroundWorker
from service.daemon.daemon import Daemon
from service.daemon.link_protocol import LinkAddress, kind_of
from service.inference.model_files import ModelFileError
from service.policy.limits import PolicyLimitError
from service.policy.settings import PolicySettings

_log = logging.getLogger("corticast.control")

_POLL_S = 0.5
"""Longest a connection's thread waits for a call before re-checking for a stop request."""
_ACCEPT_RETRY_S = 0.05
"""Pause after a failed accept, so one that keeps failing does not spin a CPU."""
STOP_TIMEOUT_S = 2.0
"""Longest :meth:`ControlLink.stop` waits for its accepting thread (woken at once)."""
CALLS_END_S = _POLL_S * 4
"""Longest a stop then waits, for all of them together, for the calls in progress to end
(each one's thread looks for the stop every ``_POLL_S``)."""
STOP_BOUND_S = STOP_TIMEOUT_S + CALLS_END_S
"""The longest :meth:`ControlLink.stop` takes: part of `corticast serve`'s stop budget within
systemd's ``TimeoutStopSec`` (deploy/README.md, "Stopping")."""


def daemon_calls(daemon: Daemon) -> dict[str, Callable[..., Any]]:
    """What the control plane may ask of ``daemon``, by name: the operations its HTTP API and
    query socket serve, and its query socket's faults and state for the loop to act on and
    report (``service.api.query_watch``), and nothing else (no attribute access by name)."""
    history = daemon.publisher.history

    def swap_model(path: str, step_path: str | None) -> dict[str, Any]:
        return daemon.swap_model(Path(path), None if step_path is None else Path(step_path))

    return {
        "status": daemon.status,
        "readiness": daemon.readiness,
        "armed": lambda: daemon.armed,
        "arm": daemon.arm,
        "disarm": daemon.disarm,
        "disarm_then_armed": daemon.disarm_then_armed,
        "set_policy": lambda policy: daemon.set_policy(PolicySettings.model_validate(policy)),
        "swap_model": swap_model,
        "metrics": lambda: generate_latest(daemon.registry),
        "latest": history.latest,
        "by_seq": history.get,
        "describe_history": history.describe,
        "query_failing": daemon.supervisor.disarm_at_once("query"),
        "query_failed": daemon.control_query_failed,
        "queries_down": daemon.control_queries_report,
    }


def answer(calls: dict[str, Callable[..., Any]], message: object) -> tuple[Any, ...]:
    """The answer to one call; a fault is answered by kind and message, never raised."""
    if not (isinstance(message, tuple) and len(message) == 2 and message[0] in calls):
        return ("error", "BadCall", f"not a call this link serves: {preview(message)}", None)
    name, args = message
    try:
        return ("ok", calls[name](*args))
    except ModelFileError as err:
        return ("error", "ModelFileError", str(err), err.kind)
    except PolicyLimitError as err:
        return ("error", "PolicyLimitError", str(err), list(err.problems))
    except Exception as err:
        if not isinstance(err, CorticastError):
            _log.warning("control call %r failed", name, exc_info=True)
        return ("error", kind_of(err), str(err), None)


class ControlLink(BackgroundWorker):
    """Accepts the control process's connections and serves each on a thread of its own.

    The socket lives in a fresh ``0700`` directory, removed on :meth:`stop`.
    """

    def __init__(self, daemon: Daemon) -> None:
        super().__init__("corticast-control-link")
        self._calls = daemon_calls(daemon)
        self._directory = tempfile.mkdtemp(prefix="corticast-link-")  # mode 0700
        self.address = LinkAddress(
            os.path.join(self._directory, "control.sock"), secrets.token_bytes(32)
        )
        self._fault = functools.partial(daemon.supervisor.fault, "control")
        self._listener: Listener | None = None
        self._connections: list[threading.Thread] = []
        self._accept_log = RateLimitedLog(_log)

    def _prepare(self) -> None:
        # The key is proven on each connection's own thread (below), not in accept(): a client
        # that stalls in the handshake then holds up no one else.
        if self._listener is not None:  # started again after its thread ended: same address
            self._listener.close()
        self._listener = Listener(self.address.path, "AF_UNIX")

    def _work(self) -> None:
        assert self._listener is not None
        while not self._stop_requested.is_set():
            try:
                connection = self._listener.accept()
            except OSError as err:
                if not self._stop_requested.is_set():
                    # One that persists (EMFILE: out of file descriptors) fails at once on
                    # every try: logged at most every 10 s, tried again after a pause.
                    self._accept_log.log(
                        logging.WARNING, "control link: accepting a connection failed: %s", err
                    )
                    self._stop_requested.wait(_ACCEPT_RETRY_S)
                continue
            if self._stop_requested.is_set():
                connection.close()
                break
            thread = threading.Thread(
                target=self._serve, args=(connection,), name="corticast-control-call", daemon=True
            )
            try:
                thread.start()
            except RuntimeError as err:  # threads ran out: this call fails, the link goes on
                connection.close()
                self._no_thread(err)
                continue
            self._connections = [t for t in self._connections if t.is_alive()] + [thread]

    def _no_thread(self, err: RuntimeError) -> None:
        """A connection refused for want of a thread is a ``control`` fault (disarm first):
        its call, which fails, may have been an operator's disarm. A disarm that itself fails
        for want of a thread (the device's DISARM goes on one) has disarmed the host first."""
        try:
            self._fault(f"no thread to serve a control call (perhaps a disarm): {err}")
        except Exception:
            _log.exception("control link: no thread to serve a connection: %s", err)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        self._stop_requested.set()
        if self.running:  # wake accept(): a listener does not return when closed elsewhere
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as wake:
                # Not waiting for room in a queue that no accept drains (each failing, out of
                # descriptors): a failing accept sees the stop at its next try without it.
                wake.setblocking(False)
                wake.connect(self.address.path)
        return super().stop(timeout)

    def _release(self) -> None:
        # One wait for them all: each stuck in a call that does not return (an arm behind a
        # hung audit log write, left there by each retry) waited its own, and a stop with
        # twenty of them waited forty seconds.
        deadline = time.monotonic() + CALLS_END_S
        for thread in self._connections:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        shutil.rmtree(self._directory, ignore_errors=True)

    def _serve(self, connection: Connection) -> None:
        with connection:
            try:  # both ends prove the key, as Listener(authkey=...) and Client(authkey=...) do
                deliver_challenge(connection, self.address.authkey)
                answer_challenge(connection, self.address.authkey)
            except (AuthenticationError, EOFError, OSError) as err:
                if not self._stop_requested.is_set():
                    _log.warning("control link: refused a connection: %s", err)
                return
            while not self._stop_requested.is_set():
                try:
                    if not connection.poll(_POLL_S):
                        continue
                    message = connection.recv()
                except (EOFError, OSError):
                    return  # the control process closed it (or exited)
                try:
                    connection.send(answer(self._calls, message))
                except (OSError, ValueError) as err:  # gone, or an answer that cannot pickle
                    _log.warning("control link: could not answer %s: %s", preview(message), err)
                    return
