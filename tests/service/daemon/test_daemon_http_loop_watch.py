"""The HTTP API served in the loop's process (``[api] own_process = false``, ``ServedDaemon``):
its event loop blocked is a fault, as a hung control process is. Real rig process, emulator,
uvicorn; the block is a callback on the server's own event loop, as a handler that blocks
would be."""

import logging
import threading

import pytest

from service.api import http_loop_watch
from service.api.served import ServedDaemon, ServedDaemonError
from tests.service._fault_injection import thread_refused
from tests.service._loop_harness import armed_and_served, loop_settings, wait_until

pytestmark = pytest.mark.slow


def test_an_http_event_loop_blocked_in_the_loops_process_disarms_and_is_not_ready(
    tmp_path, exported, source_id
):
    """A control process silent for ``[api] control_hang_s`` is killed as hung; in the loop's
    process nothing watched the event loop: blocked, it answered no one, a disarm included,
    while stimulation stayed armed and the daemon ready. Now it is a ``control`` fault
    (disarmed first, counted), the daemon not ready while it lasts, and ready again after."""
    _, window, step = exported
    settings = loop_settings(tmp_path, window, step, source_id, api={"control_hang_s": 3.0})
    with armed_and_served(settings, source_id) as (served, http, emulator):
        daemon = served.daemon
        release = threading.Event()
        served.server.servers[0].get_loop().call_soon_threadsafe(release.wait, 60)
        try:
            wait_until(lambda: "control" in daemon.supervisor.fault_counts(), 30, "a fault")
            armed = daemon.bridge.armed
            reasons = daemon.readiness().reasons
        finally:
            release.set()
        wait_until(lambda: daemon.control_plane_down is None, 30, "the loop answering again")
        wait_until(lambda: http.get("/readyz").status_code == 200, 30, "ready again")
        wait_until(lambda: not emulator.device.armed, 30, "the device to disarm")
        faults = daemon.supervisor.fault_counts()
        disarm = daemon.bridge.status()
    assert not armed
    assert any(reason.startswith("HTTP API event loop blocked") for reason in reasons), reasons
    assert faults["control"] == 1.0, faults
    assert disarm.last_disarm_cause == "fault"


def test_an_http_loop_watch_that_cannot_start_stops_the_daemon_naming_why(
    tmp_path, exported, source_id, monkeypatch, caplog
):
    """The watch's thread could not start (threads ran out): its error, raised out of the
    app's startup, skipped the lifespan's end, so the daemon was left running, and the reason
    given was only that the HTTP API did not start. Now the daemon is stopped, never served
    unwatched, and the error names the watch and why."""
    caplog.set_level(logging.INFO, logger="corticast")
    _, window, step = exported
    settings = loop_settings(tmp_path, window, step, source_id)
    thread_refused(monkeypatch, "corticast-http-loop-watch")
    with pytest.raises(ServedDaemonError) as refused, ServedDaemon(settings):
        pass
    assert str(refused.value) == (
        "the daemon could not start: the watch over the HTTP API's event loop could not start: "
        "can't start new thread"
    )
    assert "daemon stopped" in caplog.text


def test_an_http_loop_watch_whose_thread_fails_is_a_fault_and_not_ready(
    tmp_path, exported, source_id, monkeypatch
):
    """The watch's thread failed (an error in its probe): its error was kept for a reader
    there is none of, and nothing watched the event loop any more while the daemon stayed
    armed and ready. Now it is a ``control`` fault (disarmed first, counted), the daemon not
    ready, naming it."""
    _, window, step = exported
    settings = loop_settings(tmp_path, window, step, source_id)

    def failing(loop, within_s=http_loop_watch.PROBE_EVERY_S) -> bool:
        raise RuntimeError("simulated: the probe failed")

    with armed_and_served(settings, source_id) as (served, http, emulator):
        daemon = served.daemon
        monkeypatch.setattr(http_loop_watch, "answers", failing)
        wait_until(lambda: "control" in daemon.supervisor.fault_counts(), 30, "a fault")
        armed = daemon.bridge.armed  # a fault disarms before it is counted
        wait_until(lambda: not emulator.device.armed, 30, "the device to disarm")
        reasons = daemon.readiness().reasons
        ready = http.get("/readyz").status_code
        faults = daemon.supervisor.fault_counts()
    assert not armed
    assert ready == 503
    assert any(
        "the watch over the HTTP API's event loop failed (RuntimeError('simulated: the probe "
        "failed'))" in why
        for why in reasons
    ), reasons
    assert faults["control"] == 1.0, faults
