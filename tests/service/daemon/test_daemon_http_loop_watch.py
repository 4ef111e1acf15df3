"""The HTTP API served in the loop's process (``[api] own_process = false``, ``ServedDaemon``):
its event loop blocked is a fault, as a hung control process is. Real rig process, emulator,
uvicorn; the block is a callback on the server's own event loop, as a handler that blocks
would be."""

import threading

import pytest

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
