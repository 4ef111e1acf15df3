"""The supervisor and the ZeroMQ query server: a real daemon, a rig process, the emulator over
UDP, a real client on a real socket. The server's socket is closed under it by its own thread
(``_fault_injection``), which ends the thread as any ZeroMQ error would."""

import itertools
import threading

import pytest

import service.daemon.daemon as daemon_module
from service.zmq_api.client import PredictionClient
from tests.service._fault_injection import (
    socket_closed_at_every_start,
    socket_closed_at_first_request,
    socket_closed_then_no_restart,
)
from tests.service._loop_harness import (
    LOAD_FAULTS,
    Emulator,
    Rig,
    arm_daemon_when_ready,
    free_port,
    loop_settings,
    wait_until,
)

pytestmark = pytest.mark.slow

_WAIT_S = 30.0
"""Generous: the suite runs on a loaded 2-core machine."""


def test_a_query_server_whose_thread_dies_disarms_is_counted_and_answers_again(
    tmp_path, exported, source_id, monkeypatch
):
    """Researchers' queries went unanswered until the daemon restarted, and nothing said so:
    the supervisor did not watch the query server. Now its thread's end disarms (a fault, as
    every stage's), is counted under ``query``, and the server is started again on its
    endpoint, where the same client is answered."""
    _, window, step = exported
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    settings = loop_settings(tmp_path, window, step, source_id, zmq={"query_endpoint": endpoint})
    closed = threading.Event()
    monkeypatch.setattr(daemon_module, "QueryServer", socket_closed_at_first_request(closed))
    rig = Rig(source_id).start()
    emulator = Emulator(settings).start()
    try:
        with (
            daemon_module.Daemon(settings) as daemon,
            PredictionClient(None, endpoint, query_timeout_s=1.0) as client,
        ):
            arm_daemon_when_ready(daemon)
            with pytest.raises(TimeoutError):
                client.status()  # unanswered: the socket was closed under the server
            assert closed.is_set()
            faults = "corticast_daemon_faults_total"
            wait_until(
                lambda: daemon.registry.get_sample_value(faults, {"stage": "query"}) == 1,
                _WAIT_S,
                "the query server's fault to be counted",
            )
            status = daemon.bridge.status()
            assert not daemon.bridge.armed and status.last_disarm_cause == "fault"
            reason = status.last_disarm_reason or ""
            if any(fault in reason for fault in LOAD_FAULTS):  # the machine's, not ours
                pytest.skip(f"disarmed by a load fault first: {reason}")
            assert reason.startswith("query fault: "), reason
            assert "Socket operation on non-socket" in reason
            client.query_timeout_s = _WAIT_S
            assert client.status()["armed"] is False  # answered again, on the same endpoint
            assert daemon.query.running
            assert daemon.registry.get_sample_value(faults, {"stage": "query"}) == 1
    finally:
        rig.kill()
        emulator.stop()


def test_a_daemon_whose_query_server_is_down_is_not_ready_naming_it(
    tmp_path, exported, source_id, monkeypatch
):
    """Until the supervisor has started it again (its next round, an hour here), the daemon
    is not ready and says why, as when the control process serving the queries has ended."""
    _, window, step = exported
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    settings = loop_settings(
        tmp_path, window, step, source_id,
        zmq={"query_endpoint": endpoint}, loop={"supervise_every_s": 3600.0},
    )  # fmt: skip
    closed = threading.Event()
    monkeypatch.setattr(daemon_module, "QueryServer", socket_closed_at_first_request(closed))
    with (
        daemon_module.Daemon(settings) as daemon,
        PredictionClient(None, endpoint, query_timeout_s=1.0) as client,
    ):
        assert not any("query" in reason for reason in daemon.readiness().reasons)
        with pytest.raises(TimeoutError):
            client.status()
        wait_until(lambda: not daemon.query.running, _WAIT_S, "the query thread to end")
        assert "ZeroMQ query server not running" in daemon.readiness().reasons


def test_a_query_server_that_fails_again_after_each_restart_is_restarted_at_doubling_waits(
    tmp_path, exported, source_id, monkeypatch
):
    """A worker whose thread ended at once after every restart was restarted every supervisor
    round, each time a fault counted, disarming (a DISARM exchange with the device) and an
    ERROR with its traceback: ten a second, for as long as it lasted. Now each failure found
    soon after its last restart waits twice as long as the one before (from one round, as a
    failing repair step does, up to 5 s), and each is counted once. Only lower bounds on the
    waits are asserted: a loaded machine lengthens them, never shortens them."""
    _, window, step = exported
    every_s = 0.1
    settings = loop_settings(
        tmp_path, window, step, source_id, loop={"supervise_every_s": every_s}
    )  # fmt: skip
    starts: list[float] = []
    monkeypatch.setattr(daemon_module, "QueryServer", socket_closed_at_every_start(starts))
    with daemon_module.Daemon(settings) as daemon:
        wait_until(lambda: len(starts) >= 6, _WAIT_S, "six starts of the query server")
        seen = list(starts)
        gaps = [later - earlier for earlier, later in itertools.pairwise(seen[1:])]
        # After the first restart: waits of one round, then 2, 4 and 8.
        for k, least in enumerate((1, 2, 4, 8)):
            assert gaps[k] >= least * every_s, (k, gaps)
        faults = daemon.registry.get_sample_value(
            "corticast_daemon_faults_total", {"stage": "query"}
        )
        assert len(seen) - 1 <= faults <= len(starts), (faults, len(seen), len(starts))


def test_a_query_server_whose_restart_keeps_failing_is_one_fault(
    tmp_path, exported, source_id, monkeypatch
):
    """Its thread failed once, then every start the supervisor tried raised (its endpoint
    taken): each try found the same failure and counted it, and disarmed for it, again. Now
    the failure is one fault; the failed starts are the ``query`` step's failures, retried at
    doubling waits and listed as failing, and the daemon is not ready, naming the restart's
    error."""
    _, window, step = exported
    settings = loop_settings(tmp_path, window, step, source_id)
    starts: list[float] = []
    monkeypatch.setattr(daemon_module, "QueryServer", socket_closed_then_no_restart(starts))
    with daemon_module.Daemon(settings) as daemon:
        failures = "corticast_daemon_supervisor_step_failures_total"
        wait_until(
            lambda: (daemon.registry.get_sample_value(failures, {"step": "query"}) or 0) >= 3,
            _WAIT_S,
            "three failed restarts",
        )
        faults = daemon.registry.get_sample_value(
            "corticast_daemon_faults_total", {"stage": "query"}
        )
        assert faults == 1
        assert "simulated: Address already in use" in daemon.supervisor.failing()["query"]
        assert any(
            reason.startswith("ZeroMQ query server not running: restart failed: ")
            for reason in daemon.readiness().reasons
        ), daemon.readiness()
