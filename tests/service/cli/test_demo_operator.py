"""The demo's scripted operator against the real loop: it re-arms after a fault, only then."""

import time

import pytest

from bench.demo import DemoOperator
from service.api.served import ServedDaemon
from tests.service._loop_harness import Emulator, Rig, loop_settings, wait_until

pytestmark = pytest.mark.slow


def _tend_for(operator: DemoOperator, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        operator.tend()
        time.sleep(0.1)


def test_the_demo_operator_rearms_after_a_stream_fault_but_not_after_a_person_disarms(
    tmp_path, exported, source_id
):
    _, window, step = exported
    # The 3-step test model is no better than persistence; a margin that wide keeps it from
    # being judged unhealthy, so the only thing between the operator and an arm is the loop's
    # readiness (an unproven model may be armed).
    settings = loop_settings(tmp_path, window, step, source_id, loop={"health_margin_db": 20.0})
    rig = Rig(source_id).start()
    emulator = Emulator(settings).start()
    lines: list[str] = []
    try:
        with ServedDaemon(settings) as served:
            daemon = served.daemon
            operator = DemoOperator(daemon, lines.append, rearm_after_s=0.5)
            assert operator.arm_when_ready(30.0)
            assert daemon.bridge.armed

            # The stream stops: the daemon disarms itself; the operator notes it and waits.
            rig.kill()
            wait_until(lambda: not daemon.bridge.armed, 5, "the fault to disarm")
            _tend_for(operator, 1.0)
            assert not daemon.bridge.armed and operator.rearms == 0
            (reason,) = operator.fault_disarms
            assert "stream" in reason and operator.fault_disarms[reason] == 1
            assert any("DISARMED by a fault" in line for line in lines)

            # Back and ready for rearm_after_s: re-armed, once.
            rig.start()
            wait_until(lambda: daemon.readiness().ready, 20, "ready again")
            wait_until(lambda: (operator.tend(), daemon.bridge.armed)[1], 5, "the re-arm")
            assert operator.rearms == 1 and operator.fault_disarms[reason] == 1
            assert any("RE-ARMED" in line for line in lines)

            # A person disarms: that decision stands.
            daemon.disarm("operator request")
            _tend_for(operator, 1.5)
            assert not daemon.bridge.armed and operator.rearms == 1
    finally:
        rig.kill()
        emulator.stop()
