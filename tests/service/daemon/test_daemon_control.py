"""The daemon's control paths against each other: disarm and stop never wait for a model load,
and stop wins over an arm. Real rig process, emulator over UDP, uvicorn; the slowness is
injected around the real model load (``_fault_injection``)."""

import json
import logging
import threading
import uuid
from collections.abc import Iterator

import httpx
import pytest

from firmware_bridge import read_audit_log
from service.api.remote_daemon import LoopUnreachableError, RemoteDaemon
from service.api.served import ServedDaemon
from service.daemon.control_link import ControlLink
from service.daemon.daemon import Daemon, DaemonStateError
from tests.service._fault_injection import GATE_S, Call, ModelLoads
from tests.service._loop_harness import (
    AUTH,
    Emulator,
    Rig,
    arm_call_reaching,
    arm_device_when_ready,
    loop_settings,
    retried_while_passing,
    served_beside_rig,
    wait_until,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def settings(tmp_path, exported, source_id):
    _, window, step = exported
    return loop_settings(tmp_path, window, step, source_id)


def test_an_operator_disarm_returns_while_a_model_swap_is_still_loading(
    settings, exported, source_id, monkeypatch
):
    loads = ModelLoads(monkeypatch)
    rig = Rig(source_id).start()
    emulator = Emulator(settings).start()
    try:
        with ServedDaemon(settings) as served, httpx.Client(base_url=served.url) as http:
            daemon = served.daemon
            wait_until(lambda: http.get("/readyz").status_code == 200, 30, "ready")
            arm_device_when_ready(http, emulator)

            loads.slow()
            swap = Call(lambda: _put_model(served.url, exported[1]), "swap")
            assert loads.loaded.wait(30), "the swap never reached the model load"
            disarm = Call(
                lambda: httpx.post(f"{served.url}/control/disarm", headers=AUTH, timeout=GATE_S),
                "disarm",
            )
            try:
                assert disarm.done.wait(20), "the disarm is waiting for the model load"
                assert disarm.error is None and disarm.result.status_code == 200
                assert not swap.done.is_set()  # the load is still held: disarm did not wait
                assert not daemon.bridge.armed
                wait_until(lambda: not emulator.device.armed, 30, "the device to disarm")
            finally:
                loads.release.set()
            assert swap.done.wait(30) and swap.result.status_code == 200, swap.result.text
            assert http.get("/status").json()["armed"] is False  # and nothing re-armed it
    finally:
        rig.kill()
        emulator.stop()


def _put_model(url: str, path) -> httpx.Response:
    return httpx.put(f"{url}/control/model", headers=AUTH, json={"path": str(path)}, timeout=60)


def test_stop_returns_while_a_model_swap_is_loading_and_the_late_model_is_closed(
    settings, exported, monkeypatch
):
    loads = ModelLoads(monkeypatch)
    daemon = Daemon(settings).start()  # neither stream nor device is needed to swap
    try:
        loads.slow()
        swap = Call(lambda: daemon.swap_model(exported[1]), "swap")
        assert loads.loaded.wait(30), "the swap never reached the model load"
        stop = Call(daemon.stop, "stop")
        try:
            assert stop.done.wait(30), "stop() is waiting for the model load"
            assert stop.error is None
        finally:
            loads.release.set()
        assert swap.done.wait(30)
        assert isinstance(swap.error, DaemonStateError), swap.error
        assert "the daemon is stopping: not used" in str(swap.error)
        late = loads.made[-1]
        assert late.closed and daemon.predictor is not late  # closed by the swap, not leaked
        with pytest.raises(DaemonStateError, match="cannot arm: the daemon is stopping"):
            daemon.arm()
    finally:
        loads.release.set()
        daemon.stop()
    events = [record["event"] for record in read_audit_log(settings.bridge.audit_log)]
    assert events[0] == "start" and events[-1] == "close" and "disarm" in events


def test_a_stop_asks_every_stage_to_stop_before_it_waits_for_one_stuck(
    settings, source_id, monkeypatch
):
    """A stage stuck in a call (here the scheduler, in an inference that does not return) is
    waited for 2 s at the stop. The stages after it were asked to stop only once that wait
    was over, each one stuck adding its own wait before the bridge's close, one after
    another (deploy/README.md, "Stopping"). Now every stage is asked first: their waits
    overlap. Seen when the stop gives up on the scheduler: whether the others were asked."""
    loads = ModelLoads(monkeypatch)
    rig = Rig(source_id).start()
    daemon = Daemon(settings).start()
    predictor = loads.made[0]  # the model the scheduler runs
    others = (daemon.scale_updater, daemon.loop, daemon.ar_baseline, daemon.ingestor)
    asked: dict[str, bool] = {}

    class WhenGivenUp(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "corticast-scheduler did not stop" in record.getMessage():
                asked.update({w._thread_name: w._stop_requested.is_set() for w in others})

    handler = WhenGivenUp()
    logging.getLogger("corticast").addHandler(handler)
    try:
        wait_until(lambda: daemon.scheduler.predictions > 5, 30, "predictions")
        predictor.hold.set()
        assert predictor.inside.wait(30), "no inference reached the gate"
        daemon.stop()
    finally:
        logging.getLogger("corticast").removeHandler(handler)
        predictor.release.set()
        rig.kill()
        daemon.stop()
    assert asked and all(asked.values()), asked
    assert daemon.scheduler.stop(timeout=30)  # the inference returned; the thread ends
    predictor.close()


def test_an_arm_racing_stop_is_undone_and_arming_after_stop_is_refused(
    settings, source_id, monkeypatch
):
    """An arm whose device exchange is still under way when stop() disarms: whichever way
    they interleave, the loop must not stay armed, and the arm must say it was refused."""
    rig = Rig(source_id).start()
    emulator = Emulator(settings).start()
    try:
        with ServedDaemon(settings) as served, httpx.Client(base_url=served.url) as http:
            daemon = served.daemon
            wait_until(lambda: http.get("/readyz").status_code == 200, 30, "ready")
            bridge = daemon.bridge
            real_arm, real_disarm = bridge.arm, bridge.disarm_without_waiting
            in_arm, let_arm_go = threading.Event(), threading.Event()
            stop_disarmed, arm_returned = threading.Event(), threading.Event()
            after_both: dict[str, bool] = {}

            def arm_held_at_the_device() -> None:  # the ARM exchange, delayed
                in_arm.set()
                let_arm_go.wait(GATE_S)
                real_arm()

            def disarm_then_let_the_arm_finish(reason="operator request", *, cause="operator"):
                confirmed = real_disarm(reason, cause=cause)
                if reason == "daemon stopping":  # stop()'s own disarm
                    stop_disarmed.set()
                    arm_returned.wait(GATE_S)
                    after_both["host armed"] = bridge.armed
                    after_both["device armed"] = emulator.device.armed
                return confirmed

            monkeypatch.setattr(bridge, "arm", arm_held_at_the_device)
            monkeypatch.setattr(bridge, "disarm_without_waiting", disarm_then_let_the_arm_finish)
            arm = arm_call_reaching(daemon, in_arm)
            stop = Call(daemon.stop, "stop")
            try:
                assert stop_disarmed.wait(30), "stop() did not disarm while an arm was under way"
            finally:
                let_arm_go.set()
            assert arm.done.wait(30)
            arm_returned.set()
            assert stop.done.wait(60) and stop.error is None
            assert isinstance(arm.error, DaemonStateError), "the racing arm was not refused"
            assert "stopping" in str(arm.error)
            assert after_both == {"host armed": False, "device armed": False}
            # The HTTP server is still up (stop() was called directly): arming is refused.
            refused = http.post("/control/arm", headers=AUTH)
            assert refused.status_code == 409
            assert refused.json()["detail"] == "cannot arm: the daemon is stopping"
    finally:
        rig.kill()
        emulator.stop()


def test_a_swapped_in_model_is_never_called_healthy_on_the_old_models_scores(
    tmp_path, exported, source_id
):
    """The bridge's ``model`` interlock is told ``daemon.model_healthy()`` with every request.
    The swap used to hand the scheduler the new model first and reset the live scores after:
    in between (a swapping thread preempted there), predictions of the new, unscored model were
    requested on with the old model's record, ``healthy``. Here the swap is held just as it
    resets the scores, until the new model has predicted, if it already serves by then."""
    _, window, step = exported
    copy = window.with_name(f"copy-{source_id}.onnx")  # in the model directory, as swaps must be
    copy.write_bytes(window.read_bytes())
    settings = loop_settings(
        tmp_path, window, step, source_id, loop={"health_min_scored": 5, "health_margin_db": 20.0}
    )
    rig = Rig(source_id).start()
    try:
        with Daemon(settings) as daemon:
            wait_until(daemon.model_healthy, 60, "the model to be proven")
            old, accuracy = daemon.predictor, daemon.accuracy
            reset = accuracy.set_normalisation
            told = []

            def held_reset(*args, **kwargs):
                scheduler = daemon.scheduler
                if scheduler.predictor is not old:  # the new model serves already
                    made = scheduler.predictions
                    wait_until(lambda: scheduler.predictions >= made + 2, 30, "new predictions")
                    told.append(daemon.model_healthy())
                reset(*args, **kwargs)

            accuracy.set_normalisation = held_reset  # fault injection: the swap is preempted
            daemon.swap_model(copy)
            told.append(daemon.model_healthy())
            assert daemon.predictor is not old
    finally:
        rig.kill()
    assert True not in told, f"the new model was called healthy before it was scored: {told}"


def test_an_arm_that_a_fault_overtakes_is_undone(settings, source_id, monkeypatch):
    """A fault found while an arm is under way (here the control process found dead: no
    operator can disarm over HTTP until it serves again) disarms first. The arm had judged the
    daemon ready before the fault and reached the bridge after the fault's disarm, so nothing
    stopped it: the daemon stayed armed with its control plane down."""
    rig = Rig(source_id).start()
    emulator = Emulator(settings).start()
    try:
        with Daemon(settings) as daemon:
            wait_until(lambda: daemon.readiness().ready, 30, "ready")
            bridge = daemon.bridge
            real_arm = bridge.arm
            in_arm, let_arm_go = threading.Event(), threading.Event()

            def arm_held() -> None:  # ready was judged; the ARM exchange has not begun
                in_arm.set()
                let_arm_go.wait(GATE_S)
                real_arm()

            monkeypatch.setattr(bridge, "arm", arm_held)
            arm = arm_call_reaching(daemon, in_arm)
            try:
                daemon.control_plane_failed("exited with status 1")  # as its watchdog reports it
            finally:
                let_arm_go.set()
            assert arm.done.wait(30)
            assert isinstance(arm.error, DaemonStateError), "the arm a fault overtook stood"
            assert "fault" in str(arm.error)
            assert not daemon.armed
            wait_until(lambda: not emulator.device.armed, 5, "the device to disarm")
    finally:
        rig.kill()
        emulator.stop()


def test_an_arm_the_control_plane_gave_up_on_does_not_arm_later(settings, source_id, monkeypatch):
    """With the control plane in a process of its own, an arm that the loop's process answers
    too late is reported to the operator as failed (the call timed out); it went on in the
    loop's process all the same, and armed once its wait (here the bridge's lock, behind a
    stalled disk) was over. It now carries the caller's deadline, and arming after it is
    undone."""
    rig = Rig(source_id).start()
    emulator = Emulator(settings).start()
    try:
        with Daemon(settings) as daemon, ControlLink(daemon) as link:
            wait_until(lambda: daemon.readiness().ready, 30, "ready")
            bridge = daemon.bridge
            real_arm = bridge.arm
            in_arm, let_arm_go, armed = threading.Event(), threading.Event(), threading.Event()

            def arm_held() -> None:  # waits (a stalled disk, a held lock), then arms
                in_arm.set()
                let_arm_go.wait(GATE_S)
                try:
                    real_arm()
                finally:
                    armed.set()

            monkeypatch.setattr(bridge, "arm", arm_held)
            remote = RemoteDaemon(link.address, call_timeout_s=0.5)

            def arm_answered_late() -> LoopUnreachableError:
                with pytest.raises(LoopUnreachableError, match="did not answer 'arm'") as late:
                    remote.arm()
                return late.value

            try:
                late = retried_while_passing(arm_answered_late)
                assert str(late).endswith("it was sent: whether it took effect, /status says")
                assert in_arm.is_set()
            finally:
                let_arm_go.set()
            assert armed.wait(30)
            wait_until(lambda: not daemon.armed, 5, "the late arm to be undone")
            wait_until(lambda: not emulator.device.armed, 5, "the device to disarm")
            assert "stopped waiting" in daemon.bridge.status().last_disarm_reason
    finally:
        rig.kill()
        emulator.stop()


@pytest.fixture(scope="module")
def beside_rig(tmp_path_factory, exported) -> Iterator[tuple[ServedDaemon, httpx.Client, Emulator]]:
    """One daemon served beside a rig and the emulator for the disarm-body cases below (each
    started its own, ~5 s apiece); :func:`armed` arms it for each."""
    source_id = f"corticast-test-{uuid.uuid4().hex[:12]}"
    _, window, step = exported
    settings = loop_settings(tmp_path_factory.mktemp("disarm"), window, step, source_id)
    with served_beside_rig(settings, source_id) as served:
        yield served


@pytest.fixture
def armed(beside_rig) -> tuple[ServedDaemon, httpx.Client, Emulator]:
    """:func:`beside_rig` disarmed (should a case before have left it armed), ready, and armed
    by an operator's request, the device armed too: arming clears the last disarm's reason, so
    the reason a case reads is its own disarm's, as in a daemon started for it."""
    served, http, emulator = beside_rig
    if served.daemon.bridge.armed:
        assert http.post("/control/disarm", headers=AUTH).status_code == 200
    wait_until(lambda: not emulator.device.armed, 30, "the device to disarm")
    wait_until(lambda: http.get("/readyz").status_code == 200, 30, "ready")
    arm_device_when_ready(http, emulator)
    assert served.daemon.bridge.status().last_disarm_reason is None
    return beside_rig


@pytest.mark.parametrize(
    ("body", "status", "said"),
    [
        (json.dumps({"reason": "x" * 500}).encode(), 422, "at most 200 characters"),
        (json.dumps({"reasn": "typo"}).encode(), 422, "Extra inputs are not permitted"),
        (b"{not json", 400, "the body is not JSON this API can read"),
        (b'{"reason": "a", "reason": "b"}', 400, "the key 'reason' is given twice"),
        (b'{"reason": ' + b"1" * 5001 + b"}", 400, "value has 5001 digits; stimulation was"),
        (
            json.dumps({"reason": "ok\n2026-12-05 14:00:00,000 WARNING x: ARMED by op"}).encode(),
            422,
            '"where":"body.reason","problem":"Value error, must be one line of printable text: '
            "character 2 is '\\\\n', a control character\"",
        ),
    ],
    ids=["reason-too-long", "unknown-key", "not-json", "twice", "digits", "forged-log-line"],
)
def test_a_disarm_whose_body_is_refused_disarms_all_the_same(armed, body, status, said):
    """A disarm is an operator's stop: a reason too long, a misspelt key, a body that is not
    JSON or a reason that would write a line of its own into the log must not leave
    stimulation armed. The answer says what was wrong, and that it disarmed with the default
    reason."""
    served, http, emulator = armed
    answer = http.post(
        "/control/disarm",
        content=body,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert answer.status_code == status, answer.text
    assert not served.daemon.bridge.armed
    assert said in answer.text and "disarmed all the same" in answer.text
    assert "sys.set_int_max_str_digits" not in answer.text  # advice to the server
    assert served.daemon.bridge.status().last_disarm_reason == "operator: operator request"
    wait_until(lambda: not emulator.device.armed, 30, "the device to disarm")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_disarm_whose_body_is_too_large_disarms_all_the_same(armed, chunked):
    """A reason of 300 characters is refused (422) after disarming; one of 9,000 went past the
    request guard's 8 KiB for control requests, which answered 413 and left stimulation armed.
    The body is still never read past the limit: the disarm takes the default reason."""
    body = json.dumps({"reason": "x" * 9000}).encode()
    served, http, emulator = armed
    answer = http.post(
        "/control/disarm",
        content=iter([body[:4000], body[4000:]]) if chunked else body,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert answer.status_code == 413, answer.text
    assert not served.daemon.bridge.armed
    assert "at most 8192 bytes" in answer.text and "disarmed all the same" in answer.text
    assert served.daemon.bridge.status().last_disarm_reason == "operator: operator request"
    wait_until(lambda: not emulator.device.armed, 30, "the device to disarm")
