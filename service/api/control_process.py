"""The control plane in a process of its own (``[api] own_process``): the HTTP API and the
ZeroMQ query socket, serving the loop's daemon through the control link.

The loop's process starts it (:class:`ControlProcess`) as ``python -m
service.api.control_process`` and writes what it needs on its stdin: the settings (the token
included: never on a command line or in the environment), the link's address and key, and a
pipe to say "serving" on, then "alive" once a second while its HTTP event loop answers and the
watch over its query socket runs (the loop's process takes silence for a hang: ``[api]
control_hang_s``; a query socket whose thread ended is the watch's to restart,
``service.api.query_watch``). The child lowers its own priority (``[api] process_niceness``),
serves until SIGTERM, and ends by itself if the loop's process goes away. A fresh interpreter
rather than a fork: forking a process with running threads (ingest, inference) copies locks held by
threads that do not exist in the child.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from service.config import Settings
from service.core.errors import CorticastError
from service.core.python_module import python_module_command
from service.core.readable import readable_within
from service.daemon.link_protocol import LinkAddress

_log = logging.getLogger("corticast.control")

START_TIMEOUT_S = 60.0
"""Longest the loop's process waits for the control process to serve."""
STOP_TIMEOUT_S = 3.0
"""Longest a SIGTERM'd control process has to finish: its graceful shutdown is 1 s
(``service.api.serving.uvicorn_config``), then its query socket's and its watch's threads end
at their next poll. One still running is stuck, and its kill loses nothing of the loop's (the
audit log and every stage are the loop's process's); the stop's budget within systemd's
``TimeoutStopSec`` counts this (deploy/README.md, "Stopping")."""
STARTING_STOP_S = 2.0
"""Longest a control process that has yet to serve has to end on SIGTERM when the loop's
process stops: its start may be what hangs (uvicorn's signal handler only sets a flag that a
stuck startup never reads), and an operator's ``systemctl stop`` must not wait for it."""
SILENT_AT_STOP_S = 3.0
"""A serving control process silent this long (it says alive each second) when the loop's
process stops is taken for hung and killed at once: it answers no SIGTERM, and would only be
waited ``STOP_TIMEOUT_S`` for."""
KILLED_END_S = 1.0
"""Longest a SIGKILLed control process is waited for (it ends within milliseconds unless in
uninterruptible sleep): with ``STOP_TIMEOUT_S``, part of the stop's budget within systemd's
``TimeoutStopSec`` (deploy/README.md, "Stopping")."""
_STOP_CHECK_S = 0.1
"""How often a start waiting for the control process to serve looks for a stop."""
_PARENT_CHECK_S = 0.5
_SERVING = b"serving\n"
_ALIVE = b"."
ALIVE_EVERY_S = 1.0
"""How often the control process says it is alive (while it is)."""


class ControlPlaneError(CorticastError, RuntimeError):
    """The control process could not start (a port in use, a bad certificate: see its log)."""


@dataclass(frozen=True)
class ControlPlaneStart:
    """What the control process is given on its stdin."""

    settings: Settings
    link: LinkAddress
    parent_pid: int
    serving_fd: int
    log_level: str


class ControlProcess:
    """The control process, seen from the loop's: start it, notice when it ends, stop it."""

    def __init__(self, settings: Settings, link: LinkAddress) -> None:
        self._settings = settings
        self._link = link
        self._process: subprocess.Popen[bytes] | None = None
        self._alive_fd: int | None = None
        self._alive_at = 0.0
        self.alive_said = 0
        """Times the running process has said it is alive (counted as :meth:`silent_s` reads)."""

    def start(
        self, timeout_s: float = START_TIMEOUT_S, stopping: threading.Event | None = None
    ) -> bool:
        """Start it and wait until it serves: True then. False where ``stopping`` was set
        first: the wait ends at once and the process, still starting, is stopped
        (:meth:`_stop_starting`).

        Raises
        ------
        ControlPlaneError
            If it cannot be started (no interpreter to run, no process to spare), ends, or
            does not serve within ``timeout_s``; it is stopped first. Also while the last one,
            killed, has not yet ended (:meth:`kill`): a second would find its ports taken.
        """
        if self._process is not None and self._process.poll() is None:
            raise ControlPlaneError(
                f"the last control process ({self._process.pid}) has not yet ended (killed, it "
                "holds its ports until it does): another starts once it has"
            )
        self._close_alive()
        read_end, write_end = os.pipe()
        start = ControlPlaneStart(
            self._settings,
            self._link,
            os.getpid(),
            write_end,
            logging.getLevelName(logging.getLogger().getEffectiveLevel()),
        )
        said = b""
        try:
            try:
                self._process = subprocess.Popen(
                    python_module_command("service.api.control_process"),
                    stdin=subprocess.PIPE,
                    pass_fds=(write_end,),
                )
            finally:
                os.close(write_end)
            assert self._process.stdin is not None
            with self._process.stdin as stdin:
                stdin.write(pickle.dumps(start))
            said = _read_within(read_end, timeout_s, stopping)
        except OSError as err:  # the restart of a running daemon retries: one line, no trace
            raise ControlPlaneError(f"the control process could not be started: {err}") from None
        finally:
            if said != _SERVING:  # kept open only to hear it say it is alive
                os.close(read_end)
        if said != _SERVING and stopping is not None and stopping.is_set():
            self._stop_starting()
            return False
        if said != _SERVING:
            code = self.stop()
            from service.api.serving import why_not_listening  # uvicorn: the child's, as a rule

            why = why_not_listening(self._settings.api)
            raise ControlPlaneError(
                "the control process (HTTP API, ZeroMQ queries) did not start "
                + (f"within {timeout_s:g} s" if code is None else f"(exit status {code})")
                + (f": {why}; see its log above" if why else ": see its log above")
            )
        os.set_blocking(read_end, False)
        self._alive_fd, self._alive_at, self.alive_said = read_end, time.monotonic(), 0
        _log.info("control plane serving in process %d", self._process.pid)
        return True

    def _stop_starting(self) -> None:
        """The loop's process is stopping while this one has yet to serve: SIGTERM, SIGKILL
        past ``STARTING_STOP_S``, and say so (the longest a stop waits for it)."""
        assert self._process is not None
        _log.warning(
            "stopping while the control process (%d) was still starting: stopping it, "
            "killed if it has not ended within %g s",
            self._process.pid, STARTING_STOP_S,
        )  # fmt: skip
        self.stop(STARTING_STOP_S)

    def silent_s(self) -> float:
        """Seconds since it last said it is alive (or since it started serving)."""
        while self._alive_fd is not None:
            try:
                said = os.read(self._alive_fd, 4096)
            except BlockingIOError:
                break
            if not said:  # it closed its end: it is ending, and says nothing more
                break
            self._alive_at = time.monotonic()
            self.alive_said += len(said)
        return time.monotonic() - self._alive_at

    def kill(self, timeout_s: float = KILLED_END_S) -> int | None:
        """SIGKILL (a hung process answers no SIGTERM); its exit status, or None where it has
        not ended within ``timeout_s``, logged naming its pid: one in uninterruptible sleep (a
        hung disk, a hard NFS mount) dies only once its system call returns, and neither the
        watch nor a stop may wait for that. It keeps its sockets until then: :meth:`start`
        refuses to start another meanwhile."""
        process = self._process
        if process is None:
            return None
        process.kill()
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            _log.error(
                "the control process (%d) did not end within %g s of SIGKILL (in uninterruptible "
                "sleep: a hung disk or mount?); going on without waiting for it",
                process.pid, timeout_s,
            )  # fmt: skip
            return None

    def exit_status(self) -> int | None:
        """Its exit status once it has ended; None while it runs (or before it started)."""
        return None if self._process is None else self._process.poll()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM (a graceful shutdown), then SIGKILL past ``timeout_s``; SIGKILL at once if
        it serves but has said nothing for ``SILENT_AT_STOP_S``. Its exit status; None where it
        has not ended even ``KILLED_END_S`` after its SIGKILL (:meth:`kill`)."""
        process = self._process
        if process is None:
            return None
        silent = self.silent_s() if self._alive_fd is not None else 0.0
        if process.poll() is None and silent >= SILENT_AT_STOP_S:
            _log.error("the control process has said nothing for %.1f s: killed, not waited for",
                       silent)  # fmt: skip
            self.kill()
        elif process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                _log.error("the control process did not stop within %g s; killed", timeout_s)
                self.kill()
        self._close_alive()
        return process.returncode

    def _close_alive(self) -> None:
        if self._alive_fd is not None:
            os.close(self._alive_fd)
            self._alive_fd = None


def _read_within(fd: int, timeout_s: float, stopping: threading.Event | None = None) -> bytes:
    """What the child wrote on the pipe before it closed it, ``timeout_s`` passed or
    ``stopping`` was set (nothing then)."""
    deadline = time.monotonic() + timeout_s
    while stopping is None or not stopping.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            break
        if readable_within([fd], min(left, _STOP_CHECK_S)):
            return os.read(fd, len(_SERVING))
    return b""


# ---------------------------------------------------------------------- the child's side
def main() -> None:
    """Serve the HTTP API and the query socket until SIGTERM or the loop's process ends."""
    import uvicorn

    from service.api.app import create_app
    from service.api.http_loop_watch import answers
    from service.api.query_watch import QueryWatch
    from service.api.remote_daemon import RemoteDaemon
    from service.api.serving import exit_zero_after_graceful_shutdown, uvicorn_config
    from service.core.descriptors import raise_descriptor_limit
    from service.core.log_format import configure_logging
    from service.zmq_api.query import QueryServer

    start: ControlPlaneStart = pickle.load(sys.stdin.buffer)  # from our parent, over a pipe
    configure_logging(start.log_level, queued=True)
    api = start.settings.api
    _yield_to_the_loop(start.settings)
    raise_descriptor_limit()  # each connection to the API is one; anyone may connect
    daemon = RemoteDaemon(start.link, snapshot_max_age_s=api.snapshot_max_age_s)
    query = QueryServer(
        start.settings.zmq, daemon.history, daemon.status_kept, registry=daemon.registry
    )
    loops: list[asyncio.AbstractEventLoop] = []
    app = create_app(daemon, api, on_startup=lambda: loops.append(asyncio.get_running_loop()))
    server = uvicorn.Server(uvicorn_config(app, api))
    watch = QueryWatch(query, daemon, start.settings.loop.supervise_every_s)
    threading.Thread(
        target=_say_while_serving,
        args=(server, start.serving_fd, lambda: watch.running and answers(loops[0], ALIVE_EVERY_S)),
        daemon=True,
    ).start()
    threading.Thread(target=_end_with_parent, args=(server, start.parent_pid), daemon=True).start()
    try:
        query.start()
    except Exception as err:  # an endpoint in use or malformed: one line, the loop says the rest
        _log.error("the ZeroMQ query socket could not start: %s", err)
        sys.exit(1)
    watch.start()
    exit_zero_after_graceful_shutdown()
    try:
        server.run()
    finally:
        watch.stop()
        query.stop()
    sys.exit(0 if server.started else 1)


def _yield_to_the_loop(settings: Settings) -> None:
    """Run below the loop: the normal policy (a real-time one inherited from the unit is meant
    for the loop), ``[api] process_niceness`` more, and off the CPUs that ``[realtime]`` pins
    the loop's threads to while others remain. What is not permitted is logged and skipped.

    Linux sets all three per thread, so each thread the imports have started by now (OpenBLAS's
    workers) is moved too; threads started later inherit the main thread's."""
    loop_cpus = set(settings.realtime.ingest_cpus) | set(settings.realtime.inference_cpus)
    others = os.sched_getaffinity(0) - loop_cpus
    cpus = others if loop_cpus and others else None
    for tid in _own_threads():
        try:
            _step_aside(tid, settings.api.process_niceness, cpus)
        except ProcessLookupError:  # a thread that ended meanwhile
            continue
        except OSError as err:
            _log.warning("the control process's thread %d runs beside the loop: %s", tid, err)


def _step_aside(tid: int, niceness: int, cpus: set[int] | None) -> None:
    """Thread ``tid`` to the normal policy, ``niceness`` more, and onto ``cpus`` if given."""
    if os.sched_getscheduler(tid) != os.SCHED_OTHER:
        os.sched_setscheduler(tid, os.SCHED_OTHER, os.sched_param(0))
    os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + niceness)
    if cpus:
        os.sched_setaffinity(tid, cpus)


def _own_threads() -> list[int]:
    """The native ids of this process's threads, the calling one first."""
    me = threading.get_native_id()
    others = [int(task) for task in os.listdir("/proc/self/task") if int(task) != me]
    return [me, *others]


def _say_while_serving(server, fd: int, alive: Callable[[], bool]) -> None:
    """ "serving" once the server has started, then "alive" every ``ALIVE_EVERY_S`` while
    ``alive()``; ends when the server does or the loop's process stops reading."""
    try:
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if not server.started:
            return
        os.write(fd, _SERVING)
        while not server.should_exit:
            if alive():
                os.write(fd, _ALIVE)
            time.sleep(ALIVE_EVERY_S)
    except BrokenPipeError:  # the loop's process is gone: _end_with_parent stops the server
        pass
    finally:
        os.close(fd)


def _end_with_parent(server, parent_pid: int) -> None:
    """A control plane without its loop serves nothing true: shut down when it is gone."""
    while not server.should_exit:
        if os.getppid() != parent_pid:
            _log.error("the loop's process (%d) has gone; the control plane stops", parent_pid)
            server.should_exit = True
        time.sleep(_PARENT_CHECK_S)


if __name__ == "__main__":
    main()
