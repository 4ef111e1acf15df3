"""`corticast serve`'s watch over its control process: one that ends on its own, or hangs, is a
fault, reported as one. A real control process serves a real daemon (not started: none of its
stages is needed) over the real link, its bridge armed in dry run; it is killed or stopped
(SIGSTOP), and the watch (``_keep_serving``, on a thread here as on the main thread there)
disarms and restarts it."""

import errno
import logging
import os
import resource
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from service.api.control_process import SILENT_AT_STOP_S, ControlProcess
from service.api.remote_daemon import LoopUnreachableError, RemoteDaemon
from service.api.serving import base_url
from service.cli.daemon_commands import _begin_stop_now, _keep_serving
from service.core.descriptors import MOST_DESCRIPTORS
from service.daemon import control_link
from service.daemon.control_link import ControlLink
from service.daemon.daemon import Daemon
from service.zmq_api.client import PredictionClient
from tests.service._fault_injection import thread_refused
from tests.service._loop_harness import free_port, loop_settings, wait_until

pytestmark = pytest.mark.slow  # two control processes start per test: ~6-12 s on two loaded cores

HANG_AFTER_S = 3.0
"""The watch's ``[api] control_hang_s`` here: its least."""
RESTART_EVERY_S = 0.5
"""The watch's ``[api] control_restart_every_s`` here: its least (5 s by default, which the
tests retrying a failed start waited out two or three times)."""
_QUERY_FAULT_SITE = Path(__file__).parent / "_child_query_fault"
"""Put on a control process's ``PYTHONPATH``: a fault in its query server (its docstring)."""
_ROOT = Path(__file__).parents[3]


@pytest.fixture
def daemon(tmp_path, exported, source_id):
    _, window, step = exported
    endpoint = f"tcp://127.0.0.1:{free_port()}"  # known, for a query client to reach the child
    settings = loop_settings(tmp_path, window, step, source_id, zmq={"query_endpoint": endpoint})
    settings = settings.model_copy(
        update={"bridge": settings.bridge.model_copy(update={"dry_run": True})}
    )
    daemon = Daemon(settings, serve_queries=False)
    daemon._open_bridge()  # what start() opens; the rest of the loop is not needed here
    yield daemon
    daemon.bridge.close()


@contextmanager
def _watched_control_process(daemon) -> Iterator[tuple[ControlLink, ControlProcess]]:
    """Arm; the link, a control process and the watch over both, on a thread, as `corticast
    serve` runs them, until the block ends; yields once the process says it is alive."""
    daemon.bridge.arm()
    stopping = threading.Event()
    with ControlLink(daemon) as link:
        control = ControlProcess(daemon.settings, link.address)
        control.start()
        watch = threading.Thread(
            target=_keep_serving,
            args=(control, link, daemon, stopping, HANG_AFTER_S, RESTART_EVERY_S),
        )
        watch.start()
        try:
            # A serving process says it is alive (the watch reads it), before any harm.
            wait_until(lambda: control.silent_s() >= 0 and control.alive_said > 0, 30, "a beat")
            yield link, control
        finally:
            stopping.set()
            watch.join(30)
            control.stop()


def _fault_seen_through_the_restarted_process(daemon, harm) -> tuple[dict, str]:
    """``harm(pid)`` the watched control process, wait for the disarm and for another process
    to serve; /status and /metrics as that one serves them."""
    with _watched_control_process(daemon) as (_, control):
        harmed = control._process.pid
        harm(harmed)
        wait_until(lambda: not daemon.bridge.armed, 30, "the bridge to be disarmed")
        wait_until(
            lambda: (
                control.exit_status() is None
                and control._process.pid != harmed
                and daemon.control_plane_down is None
            ),
            60,
            "the control process to serve again",
        )
        with httpx.Client(base_url=base_url(daemon.settings.api)) as http:
            status = http.get("/status").json()
            metrics = http.get("/metrics").text
    return status, metrics


def test_a_control_process_that_dies_is_a_fault_in_status_and_metrics_not_an_operator_disarm(
    daemon,
):
    status, metrics = _fault_seen_through_the_restarted_process(
        daemon, lambda pid: os.kill(pid, signal.SIGKILL)
    )
    assert status["bridge"]["last_disarm_cause"] == "fault", status["bridge"]
    assert "control plane process exited with status -9" in status["bridge"]["last_disarm_reason"]
    assert status["faults"] == {"control": 1.0}
    assert 'corticast_daemon_faults_total{stage="control"} 1.0' in metrics
    assert 'corticast_bridge_disarms_total{cause="operator"} 0.0' in metrics


def test_a_control_process_that_hangs_is_disarmed_for_killed_and_started_again(daemon):
    """Stopped (SIGSTOP), it keeps its sockets and answers nothing: an operator's disarm over
    HTTP would wait forever. Silent past the watch's limit, it is a fault like a death."""
    status, metrics = _fault_seen_through_the_restarted_process(
        daemon, lambda pid: os.kill(pid, signal.SIGSTOP)
    )
    assert status["bridge"]["last_disarm_cause"] == "fault", status["bridge"]
    reason = status["bridge"]["last_disarm_reason"]
    assert "control plane process hung (silent for" in reason and "killed)" in reason
    assert status["faults"] == {"control": 1.0}
    assert 'corticast_daemon_faults_total{stage="control"} 1.0' in metrics


def test_the_loops_end_of_the_link_ending_is_a_fault_and_it_is_started_again(daemon, monkeypatch):
    """The control process lives on, but the loop's end of the link dies (here a MemoryError
    starting a call's thread): every call, a disarm's included, would be answered 503 while
    the loop stayed armed. The watch disarms it as a fault and starts the link again, and the
    control process's next call is served."""
    with _watched_control_process(daemon) as (link, _):
        _next_call_thread_fails(monkeypatch)
        with httpx.Client(base_url=base_url(daemon.settings.api), timeout=30) as http:
            assert http.get("/status").status_code == 503  # the call that met it
            wait_until(lambda: not daemon.bridge.armed, 30, "the bridge to be disarmed")
            wait_until(lambda: link.running and daemon.control_plane_down is None, 30,
                       "the link to be started again")  # fmt: skip
            status = http.get("/status")
        assert status.status_code == 200, status.text
        reason = status.json()["bridge"]["last_disarm_reason"]
        assert "lost its link to the loop's process" in reason
        assert "no memory for a thread" in reason
        assert status.json()["faults"] == {"control": 1.0}


def _next_call_thread_fails(monkeypatch) -> None:
    """The next thread the loop's end of the link starts for a call raises MemoryError,
    which ends the link's own thread."""
    thread_refused(
        monkeypatch,
        "corticast-control-call",
        once=True,
        error=MemoryError("no memory for a thread"),
    )


def test_the_control_process_takes_the_file_descriptors_the_host_allows(daemon):
    """Each connection to the API is a descriptor of the control process, and anyone may
    connect: started at the 1024 a process is given, it raises its own limit before it
    serves, so a flood of idle connections cannot shut out an operator's disarm."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 1024:
        pytest.skip(f"the hard descriptor limit is {hard}: nothing to raise")
    with ControlLink(daemon) as link:
        control = ControlProcess(daemon.settings, link.address)
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # what it inherits
        try:
            control.start()
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        try:
            limits = Path(f"/proc/{control._process.pid}/limits").read_text()
        finally:
            control.stop()
    [line] = [row for row in limits.splitlines() if row.startswith("Max open files")]
    expected = MOST_DESCRIPTORS if hard == resource.RLIM_INFINITY else min(hard, MOST_DESCRIPTORS)
    assert int(line.split()[3]) == expected, line


def _query_fault_in_the_control_process(monkeypatch, fault: str) -> None:
    """Control processes started from here on inject ``fault`` into their query server."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join((str(_QUERY_FAULT_SITE), str(_ROOT))))
    monkeypatch.setenv("CORTICAST_TEST_QUERY_FAULT", fault)


def test_a_query_server_that_dies_in_the_control_process_is_a_query_fault_restarted_there(
    daemon, monkeypatch
):
    """The control process's query server had no supervisor: its thread's end only silenced the
    process (it said "alive" only while the query socket ran), which was killed, HTTP API and
    all, as a hung ``control`` process after ``control_hang_s``. Now its own watch reports it to
    the loop's process as the loop's own query server's end is reported (a ``query`` fault:
    disarmed first, counted) and starts it again, in the same process."""
    _query_fault_in_the_control_process(monkeypatch, "first_request")
    endpoint = daemon.settings.zmq.query_endpoint
    with (
        _watched_control_process(daemon) as (_, control),
        PredictionClient(None, endpoint, query_timeout_s=1.0) as client,
    ):
        serving = control._process.pid
        with pytest.raises(TimeoutError):
            client.status()  # unanswered: the socket was closed under the server
        wait_until(lambda: not daemon.bridge.armed, 30, "the bridge to be disarmed")
        client.query_timeout_s = 30.0
        assert client.status()["armed"] is False  # answered again, on the same endpoint
        wait_until(lambda: daemon.control_queries_down is None, 30, "the queries reported up")
        with httpx.Client(base_url=base_url(daemon.settings.api), timeout=30) as http:
            status = http.get("/status").json()
        assert control._process.pid == serving and control.exit_status() is None
    assert status["faults"] == {"query": 1.0}, status["faults"]
    assert status["bridge"]["last_disarm_cause"] == "fault", status["bridge"]
    reason = status["bridge"]["last_disarm_reason"]
    assert reason.startswith("query fault: ") and "Socket operation on non-socket" in reason
    assert not any("query" in why for why in status["not_ready_reasons"]), status


def test_a_control_process_whose_query_server_cannot_start_again_leaves_the_daemon_not_ready(
    daemon, monkeypatch
):
    """Its query server's thread ended and every restart fails (its endpoint taken): one
    ``query`` fault, the control process serving the HTTP API on (it is not hung), and the
    daemon not ready, naming the restart's error, so no one arms a loop whose queries go
    unanswered."""
    _query_fault_in_the_control_process(monkeypatch, "no_restart")
    with _watched_control_process(daemon) as (_, control):
        daemon.control_plane_down = None  # as `corticast serve` says once it serves
        serving = control._process.pid
        wait_until(lambda: not daemon.bridge.armed, 30, "the bridge to be disarmed")
        wait_until(
            lambda: "restart failed" in (daemon.control_queries_down or ""),
            30,
            "a failed restart to be reported",
        )
        reasons = daemon.readiness().reasons
        assert any(
            "query server (control process) not running: restart failed: " in reason
            and "simulated: Address already in use" in reason
            for reason in reasons
        ), reasons
        assert control._process.pid == serving and control.exit_status() is None
    assert daemon.supervisor.fault_counts() == {"query": 1.0}


def test_a_control_process_that_cannot_start_again_is_one_fault_retried_until_it_serves(
    daemon, caplog
):
    """Killed, its HTTP port then taken: each failed restart was read, at the watch's next
    look, as the process having ended again ("exited with status 1"), another ``control``
    fault counted and a disarm sent, every 5 s while the port stayed taken, and the reason
    the daemon was not ready named the exit, not the start's error. Now the death is one
    fault; failed restarts are retried, named in the readiness, until one serves."""
    caplog.set_level(logging.ERROR, logger="corticast")
    api = daemon.settings.api
    with _watched_control_process(daemon) as (_, control):
        harmed = control._process.pid
        with socket.socket() as taken:
            os.kill(harmed, signal.SIGKILL)
            wait_until(lambda: _bound(taken, api.host, api.port), 30, "the API's port taken")
            taken.listen()
            wait_until(
                lambda: (
                    len([r for r in caplog.records if "trying again in" in r.getMessage()]) >= 2
                ),
                60,
                "two failed restarts",
            )
            assert daemon.supervisor.fault_counts() == {"control": 1.0}
            reasons = daemon.readiness().reasons
            assert any("restart failed" in why and "did not start" in why for why in reasons)
        wait_until(
            lambda: control.exit_status() is None and daemon.control_plane_down is None,
            60,
            "the control process to serve again",
        )
    assert daemon.supervisor.fault_counts() == {"control": 1.0}


def _bound(sock: socket.socket, host: str, port: int) -> bool:
    """Whether ``sock`` could be bound at ``host:port`` now (False while it is in use)."""
    try:
        sock.bind((host, port))
    except OSError:
        return False
    return True


def test_a_query_thread_dying_in_the_control_process_disarms_at_once_not_at_the_watchs_round(
    daemon, monkeypatch
):
    """In the loop's process a query thread that fails disarms from that thread, as it fails
    (``Supervisor.disarm_at_once``), not at the supervisor's next round. In the control
    process only its watch's round reported it: with the watch's period an hour here, the
    bridge stayed armed. Now the dying thread has the loop's process disarm at once; the
    watch's round still counts the fault and restarts it."""
    daemon.settings = daemon.settings.model_copy(
        update={"loop": daemon.settings.loop.model_copy(update={"supervise_every_s": 3600.0})}
    )
    _query_fault_in_the_control_process(monkeypatch, "first_request")
    with (
        _watched_control_process(daemon),
        PredictionClient(None, daemon.settings.zmq.query_endpoint, query_timeout_s=1.0) as client,
    ):
        with pytest.raises(TimeoutError):
            client.status()  # unanswered: the socket was closed under the server
        wait_until(lambda: not daemon.bridge.armed, 30, "the bridge to be disarmed")
        status = daemon.bridge.status()
    assert status.last_disarm_cause == "fault"
    assert status.last_disarm_reason.startswith("query fault: "), status.last_disarm_reason


def test_a_link_restarted_while_the_control_process_cannot_start_leaves_the_daemon_not_ready(
    daemon, caplog, monkeypatch
):
    """The watch said the control plane served again as soon as it had restarted the loop's
    end of the link, though the control process was down (its restarts failing, its port
    taken): the daemon was ready, and could be armed, until the next start failed. Every
    reason the daemon is given is recorded here; none may say "serving" while it is down."""
    told: list[str | None] = []
    monkeypatch.setattr(
        Daemon,
        "control_plane_down",
        property(lambda self: told[-1] if told else None, lambda self, why: told.append(why)),
        raising=False,
    )
    caplog.set_level(logging.ERROR, logger="corticast")
    api = daemon.settings.api

    def failed_restarts() -> int:
        return len([r for r in caplog.records if "trying again in" in r.getMessage()])

    def failed_after_the_link_restarted() -> bool:
        """Whether a restart failed after the watch restarted the link: one logged after that
        was begun after it (a restart begun before the link ended, which may fail meanwhile
        as restarts are half a second apart here, is logged before)."""
        said = [r.getMessage() for r in caplog.records]
        ended = [
            k for k, message in enumerate(said) if message.startswith("the control link ended")
        ]
        return bool(ended) and any("trying again in" in message for message in said[ended[-1] :])

    with _watched_control_process(daemon) as (link, control), socket.socket() as taken:
        os.kill(control._process.pid, signal.SIGKILL)
        wait_until(lambda: _bound(taken, api.host, api.port), 30, "the API's port taken")
        taken.listen()
        wait_until(lambda: failed_restarts() >= 1, 60, "a failed restart")
        since = len(told)
        _next_call_thread_fails(monkeypatch)  # the loop's end of the link ends at a call
        with pytest.raises(LoopUnreachableError):
            RemoteDaemon(link.address).call("armed")
        wait_until(failed_after_the_link_restarted, 60, "the link restarted, a restart failed")
        assert link.running
        assert None not in told[since:], told[since:]


def test_a_stop_does_not_wait_for_a_control_process_whose_restart_hangs(
    daemon, monkeypatch, caplog
):
    """The watch restarts a control process that died; the new one hangs in its start
    (uvicorn's startup never ends, and its SIGTERM handler only sets a flag). A stop (SIGTERM to
    `corticast serve`) waited out that start's 60 s bound: `systemctl stop` took a minute.
    Now the start is abandoned at the stop, the process killed once it has not ended within
    ``STARTING_STOP_S``, and the log says so."""
    caplog.set_level(logging.WARNING, logger="corticast")
    stopping = threading.Event()
    with ControlLink(daemon) as link:
        control = ControlProcess(daemon.settings, link.address)
        control.start()
        watch = threading.Thread(
            target=_keep_serving,
            args=(control, link, daemon, stopping, HANG_AFTER_S, RESTART_EVERY_S),
        )
        watch.start()
        try:
            _query_fault_in_the_control_process(monkeypatch, "start_hangs")
            harmed = control._process.pid
            os.kill(harmed, signal.SIGKILL)
            wait_until(lambda: control._process.pid != harmed, 30, "a restart to begin")
            hanging = control._process.pid
            wait_until(lambda: _catches_sigterm(hanging), 30, "the restart in uvicorn's start")
            stopping.set()
            watch.join(30)
            assert not watch.is_alive(), "the stop still waits on the control process's start"
        finally:
            stopping.set()
            watch.join(90)
            control.stop()
    assert control.exit_status() == -signal.SIGKILL
    assert f"stopping while the control process ({hanging}) was still starting" in caplog.text
    assert "did not stop within 2 s; killed" in caplog.text


def _catches_sigterm(pid: int) -> bool:
    """Whether process ``pid`` has a SIGTERM handler of its own (uvicorn's, once it serves)."""
    status = Path(f"/proc/{pid}/status").read_text()
    [caught] = [line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")]
    return bool(int(caught, 16) >> (signal.SIGTERM - 1) & 1)


def test_a_link_that_cannot_start_again_at_once_is_retried_not_the_end_of_serve(
    daemon, monkeypatch, caplog
):
    """The loop's end of the link ended, and its restarts failed (here its socket could not be
    made: no descriptor to spare): the first failure ended the watch, and with it `corticast
    serve`. Now it is the one ``control`` fault, the daemon not ready naming the failed
    restart, and the link started again once it can be."""
    caplog.set_level(logging.ERROR, logger="corticast")
    real_listener, seen_not_ready = control_link.Listener, threading.Event()

    def listener_refused_until_seen(*args, **kwargs):
        if not seen_not_ready.is_set():
            raise OSError(errno.EMFILE, "Too many open files")
        return real_listener(*args, **kwargs)

    with _watched_control_process(daemon) as (link, _):
        monkeypatch.setattr(control_link, "Listener", listener_refused_until_seen)
        _next_call_thread_fails(monkeypatch)
        with pytest.raises(LoopUnreachableError):
            RemoteDaemon(link.address, call_timeout_s=1).call("armed")
        wait_until(lambda: "link restart failed" in (daemon.control_plane_down or ""), 30,
                   "the daemon not ready, naming the failed restart")  # fmt: skip
        seen_not_ready.set()
        wait_until(lambda: link.running and daemon.control_plane_down is None, 30,
                   "the link to be started again")  # fmt: skip
        assert not daemon.bridge.armed
    assert daemon.supervisor.fault_counts() == {"control": 1.0}
    assert any("control link could not start again" in r.getMessage() for r in caplog.records)


def test_a_stop_signal_for_which_no_thread_can_be_had_still_disarms(daemon, monkeypatch):
    """The signal handler disarms on a thread of its own, so as not to wait on the device in
    a handler; where threads ran out, starting it raised out of the handler: no disarm, and
    (under uvicorn) no graceful shutdown to stop the daemon. It now disarms in the handler."""
    daemon.bridge.arm()
    thread_refused(monkeypatch, "corticast-signal-disarm")
    _begin_stop_now(daemon)
    status = daemon.bridge.status()
    assert not status.armed and status.last_disarm_reason == "daemon stopping", status


def test_a_control_process_silent_at_the_stop_is_killed_not_waited_for(daemon, caplog):
    """A control process hung when the loop's process stops (not yet silent for
    ``control_hang_s``, so not yet killed by the watch) answers no SIGTERM: the stop waited
    ``STOP_TIMEOUT_S`` (10 s) for it, of systemd's 15 s for the whole stop. Silent past
    ``SILENT_AT_STOP_S``, it is killed at once."""
    caplog.set_level(logging.ERROR, logger="corticast")
    with ControlLink(daemon) as link:
        control = ControlProcess(daemon.settings, link.address)
        control.start()
        try:
            os.kill(control._process.pid, signal.SIGSTOP)
            wait_until(lambda: control.silent_s() >= SILENT_AT_STOP_S, 30, "it to fall silent")
        finally:
            status = control.stop()
    assert status == -signal.SIGKILL
    said = [r.getMessage() for r in caplog.records]
    assert any("has said nothing for" in line and "killed, not waited for" in line
               for line in said), said  # fmt: skip


@contextmanager
def _sigkill_held(process: subprocess.Popen) -> Iterator[None]:
    """SIGKILL reaches ``process`` only when the block ends, as it reaches one in uninterruptible
    sleep (a hung disk, a hard NFS mount) only once its system call returns: killed, it lives
    on, holding its sockets. The one fault injected; the process and its waits are real."""
    held: list[int] = []
    process.kill = lambda: held.append(signal.SIGKILL)  # type: ignore[method-assign]
    try:
        yield
    finally:
        del process.kill
        if held:
            process.kill()


def test_a_hung_control_process_is_disarmed_before_its_kill_and_one_that_lives_on_is_waited_out(
    daemon, caplog
):
    """The watch killed a hung control process, waiting for its end without a bound, and only
    then disarmed: one that SIGKILL does not end at once (in uninterruptible sleep) held the
    watch, and stimulation armed, for as long as it lived on. Now the disarm comes first; the
    kill's wait is bounded, logged naming the pid, and no second process is started on the
    port the first still holds until it has ended, the daemon not ready, naming it, meanwhile."""
    caplog.set_level(logging.ERROR, logger="corticast")
    with _watched_control_process(daemon) as (_, control):
        hung = control._process
        with _sigkill_held(hung):
            os.kill(hung.pid, signal.SIGSTOP)
            wait_until(lambda: not daemon.bridge.armed, 30, "the bridge to be disarmed")
            wait_until(lambda: "not yet ended" in (daemon.control_plane_down or ""), 30,
                       "the daemon not ready, naming the process killed but not ended")  # fmt: skip
            assert control._process is hung and hung.poll() is None
        wait_until(
            lambda: control._process is not hung and daemon.control_plane_down is None,
            60,
            "another control process to serve once the first has ended",
        )
    assert hung.returncode == -signal.SIGKILL
    assert daemon.supervisor.fault_counts() == {"control": 1.0}
    said = [r.getMessage() for r in caplog.records]
    disarmed = [k for k, line in enumerate(said) if "stimulation disarmed" in line]
    unended = [k for k, line in enumerate(said) if f"({hung.pid}) did not end within" in line]
    assert disarmed and unended and disarmed[0] < unended[0], said  # the disarm did not wait


def test_a_stop_does_not_wait_for_a_control_process_that_lives_on_after_its_kill(daemon, caplog):
    """A stop killed a silent control process and waited for its end without a bound: one in
    uninterruptible sleep held the loop's own stop past systemd's ``TimeoutStopSec``. Now the
    wait is bounded; the pid is logged, and the stop goes on."""
    caplog.set_level(logging.ERROR, logger="corticast")
    with ControlLink(daemon) as link:
        control = ControlProcess(daemon.settings, link.address)
        control.start()
        hung = control._process
        with _sigkill_held(hung):
            os.kill(hung.pid, signal.SIGSTOP)
            wait_until(lambda: control.silent_s() >= SILENT_AT_STOP_S, 30, "it to fall silent")
            stop = threading.Thread(target=control.stop)
            stop.start()
            stop.join(30)
            assert not stop.is_alive(), "the stop still waits on the killed control process"
    assert hung.wait(30) == -signal.SIGKILL
    assert f"the control process ({hung.pid}) did not end within" in caplog.text


def test_a_control_process_started_from_a_folder_holding_a_models_folder_serves(
    daemon, monkeypatch, tmp_path
):
    """`corticast serve` run from a rig's folder that keeps its ONNX files in ``models/``, with
    corticast installed editable (as `make demo` and `make test` install it): the control
    process, run as ``python -m``, had that folder first on its ``sys.path``, where ``models``
    (a namespace package of no code) hid ours, and it exited at its imports (``models.__file__``
    is None), so the daemon did not start. It runs with ``-P`` now. Without ``PYTHONPATH``, as
    a rig runs it: a path to this checkout there would find our ``models`` before that one."""
    rig_folder = tmp_path / "rig"
    (rig_folder / "models").mkdir(parents=True)
    (rig_folder / "models" / "tuned.onnx").write_bytes(b"")
    monkeypatch.chdir(rig_folder)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    with _watched_control_process(daemon) as (_, control):
        assert control.exit_status() is None
