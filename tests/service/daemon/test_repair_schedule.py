"""The supervisor's retry schedule: each failing step waits on its own, doubling up to a cap."""

from prometheus_client import CollectorRegistry, Counter

from service.daemon._repair_schedule import MAX_RETRY_S, RepairSchedule


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _schedule() -> tuple[RepairSchedule, _Clock, CollectorRegistry]:
    registry = CollectorRegistry()
    failures = Counter("test_step_failures", "failures", ["step"], registry=registry)
    clock = _Clock()
    return RepairSchedule(failures, first_retry_s=0.1, clock=clock), clock, registry


def test_a_failing_step_waits_twice_as_long_each_time_up_to_the_cap_and_alone():
    schedule, clock, registry = _schedule()
    for wait in (0.1, 0.2, 0.4, 0.8, 1.6, 3.2, MAX_RETRY_S, MAX_RETRY_S):
        schedule.failed("predictor", OSError("model file unreadable"))
        failed_at = clock.now
        clock.now = failed_at + wait - 1e-6
        assert not schedule.due("predictor")
        assert schedule.due("bridge")  # another step is never held up
        clock.now = failed_at + wait
        assert schedule.due("predictor")
    assert schedule.failing() == {"predictor": "OSError: model file unreadable"}
    assert registry.get_sample_value("test_step_failures_total", {"step": "predictor"}) == 8


def test_a_step_that_works_again_is_forgotten_and_starts_over():
    schedule, clock, _ = _schedule()
    for _ in range(3):
        schedule.failed("bridge", RuntimeError("device away"))
    schedule.succeeded("bridge")
    assert schedule.failing() == {} and schedule.due("bridge")
    schedule.failed("bridge", RuntimeError("device away"))
    clock.now += 0.1
    assert schedule.due("bridge")  # the first wait again, not the fourth
