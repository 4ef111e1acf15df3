import os
import threading

import pytest

from service.core.realtime_rest import check_idle_share, rest_per_busy
from service.core.thread_placement import ThreadPlacement


def _in_a_thread(policy: int | None) -> float:
    """``rest_per_busy(0.2)`` as a thread under ``policy`` (None: the normal one) sees it."""
    seen: list[float] = []

    def run() -> None:
        if policy is not None:
            os.sched_setscheduler(0, policy, os.sched_param(1))
        seen.append(rest_per_busy(0.2))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return seen[0]


@pytest.mark.skipif(
    not ThreadPlacement("fifo", 1, frozenset()).realtime_permitted(),
    reason="SCHED_FIFO is not permitted here",
)
@pytest.mark.parametrize(
    "policy",
    [os.SCHED_FIFO, os.SCHED_RR, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK],
    ids=["fifo", "rr", "fifo-reset-on-fork"],  # chrt -R, systemd's CPUSchedulingResetOnFork=
)
def test_a_real_time_thread_rests_a_quarter_of_its_work_for_a_fifth_idle(policy):
    assert _in_a_thread(policy) == pytest.approx(0.25)  # 0.2 / (1 - 0.2)


def test_a_normal_thread_never_rests():
    assert _in_a_thread(None) == 0.0


@pytest.mark.parametrize("share", [-0.1, 1.0, 1.5])
def test_an_idle_share_outside_0_to_1_is_refused_naming_it(share):
    with pytest.raises(ValueError, match=rf"'idle_share' must be in \[0, 1\), got {share}"):
        check_idle_share(share)
