import os
import threading
import time

import pytest

from service.core.worker import BackgroundWorker
from tests.service._fault_injection import thread_refused
from tests.service._loop_harness import wait_until


class _Counter(BackgroundWorker):
    """Counts loop turns; fails on turn ``fail_at``; ``_prepare`` may refuse to start."""

    def __init__(self, fail_at: int | None = None, refuse: bool = False) -> None:
        super().__init__("test-worker")
        self.fail_at, self.refuse = fail_at, refuse
        self.turns = 0
        self.released = 0
        self.finished = threading.Event()

    def _prepare(self) -> None:
        if self.refuse:
            raise ValueError("nothing to connect to")

    def _work(self) -> None:
        while not self._stop_requested.wait(0.001):
            self.turns += 1
            if self.turns == self.fail_at:
                raise OSError("device vanished")

    def _finished(self) -> None:
        self.finished.set()

    def _release(self) -> None:
        self.released += 1


class _SlowToEnd(_Counter):
    """Its thread takes a while to end after :meth:`_finished` has begun."""

    def _finished(self) -> None:
        super()._finished()
        time.sleep(0.2)


def test_a_loop_failure_is_kept_and_re_raised_to_the_reader():
    worker = _SlowToEnd(fail_at=3).start()
    assert worker.finished.wait(5)
    # _finished runs on the thread: the thread ends after it, not with it.
    wait_until(lambda: not worker.running, 30, "the failed thread to end")
    with pytest.raises(RuntimeError, match="test-worker stopped: device vanished") as raised:
        worker.raise_if_failed()
    assert isinstance(raised.value.__cause__, OSError)
    worker.stop()


def test_start_twice_is_refused_and_stop_is_idempotent():
    with _Counter() as worker:
        with pytest.raises(RuntimeError, match="_Counter is already running; call stop"):
            worker.start()
        assert worker.running
    assert not worker.running
    worker.stop()
    assert worker.released == 2
    worker.raise_if_failed()


def test_prepare_errors_reach_the_caller_and_no_thread_starts():
    worker = _Counter(refuse=True)
    with pytest.raises(ValueError, match="nothing to connect to"):
        worker.start()
    assert not worker.running and worker.turns == 0


def test_a_thread_that_cannot_start_leaves_the_worker_to_stop_and_start_again(monkeypatch):
    """Where threads ran out, start() raised but kept the thread it had made, never started:
    every stop() after it raised "cannot join thread before it is started", out of a
    daemon's stop (its HTTP API's watch, its control link), which skipped the rest. Now no
    such thread is kept: stop() releases what _prepare took, and a later start runs."""
    worker = _Counter()
    thread_refused(monkeypatch, "test-worker")
    with pytest.raises(RuntimeError, match="can't start new thread"):
        worker.start()
    assert not worker.running
    assert worker.stop() and worker.released == 1
    monkeypatch.undo()
    with worker:
        wait_until(lambda: worker.turns > 0, 30, "the worker started again to run")


def test_a_stopped_worker_can_start_again_with_a_clean_slate():
    worker = _Counter(fail_at=2).start()
    assert worker.finished.wait(5)
    worker.stop()
    worker.fail_at = None
    worker.finished.clear()
    worker.start()
    worker.raise_if_failed()
    assert worker.running
    worker.stop()


class _SlowToPrepare(_Counter):
    """Its :meth:`_prepare` takes a while (a model's statistics read, a resolver made)."""

    def _prepare(self) -> None:
        time.sleep(0.3)


def _failure_kept(worker: BackgroundWorker) -> bool:
    try:
        worker.raise_if_failed()
    except RuntimeError:
        return True
    return False


def test_a_restarted_worker_forgets_its_failure_only_once_its_thread_runs():
    """What a worker's failure says is read as its health (``ScaleUpdater.not_ready_reason``
    is None once it is forgotten); a restart forgot it before preparing and starting the
    thread, so a reader in between was told all was well of a worker not running."""
    worker = _SlowToPrepare(fail_at=2).start()
    wait_until(lambda: not worker.running, 30, "the failed thread to end")
    worker.fail_at = None
    restart = threading.Thread(target=worker.start)
    restart.start()
    try:
        wait_until(lambda: not _failure_kept(worker), 30, "the failure to be forgotten")
        assert worker.running
    finally:
        restart.join(30)
        worker.stop()


class _PriorityProbe(BackgroundWorker):
    """Records the nice value its own thread runs at."""

    def __init__(self, niceness: int) -> None:
        super().__init__("test-priority", niceness=niceness)
        self.seen: int | None = None
        self.done = threading.Event()

    def _work(self) -> None:
        self.seen = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        self.done.set()


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="no per-thread priority here")
def test_niceness_lowers_the_worker_thread_only():
    process = os.getpriority(os.PRIO_PROCESS, 0)
    if process + 3 > 19:
        pytest.skip("this process already runs at the lowest priority")
    probe = _PriorityProbe(niceness=3).start()
    assert probe.done.wait(5)
    probe.stop()
    assert probe.seen == process + 3
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == process


class _Stuck(BackgroundWorker):
    """A loop stuck in a call that ignores stop requests until ``unblock`` is set."""

    def __init__(self) -> None:
        super().__init__("test-stuck")
        self.entered, self.unblock = threading.Event(), threading.Event()
        self.released = 0

    def _work(self) -> None:
        self.entered.set()
        self.unblock.wait(60)

    def _release(self) -> None:
        self.released += 1


def test_stop_reports_a_thread_that_did_not_end_and_releases_nothing_under_it():
    worker = _Stuck().start()
    try:
        assert worker.entered.wait(10)
        assert worker.stop(timeout=0.05) is False
        # Still running: nothing it uses is released, and no second thread can start beside it.
        assert worker.running and worker.released == 0
        with pytest.raises(RuntimeError, match="_Stuck is already running"):
            worker.start()
    finally:
        worker.unblock.set()
    assert worker.stop(timeout=10) is True
    assert not worker.running and worker.released == 1
    assert worker.stop() is True  # idempotent


class _NameProbe(BackgroundWorker):
    """Records the name the OS shows for its own thread."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.seen: str | None = None
        self.done = threading.Event()

    def _work(self) -> None:
        comm = f"/proc/self/task/{threading.get_native_id()}/comm"
        with open(comm, "rb") as file:  # bytes: what the OS shows need not be UTF-8
            self.seen = file.read().strip().decode("utf-8", "replace")
        self.done.set()


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="no per-thread names here")
def test_the_os_shows_a_worker_thread_by_its_name_cut_to_15_bytes():
    """What ``top -H`` and the chaos soak read: without it every thread of the daemon is
    'corticast' (Python names OS threads only from 3.14)."""
    for name, shown in (
        ("corticast-waves", "corticast-waves"),
        ("corticast-markers-x", "corticast-marke"),
        # Cut at a whole character: 'corticast-stim' and the first of é's two bytes would
        # leave bytes that are not UTF-8 for top, ps and the soak to read.
        ("corticast-stimé", "corticast-stim"),
    ):
        probe = _NameProbe(name).start()
        assert probe.done.wait(5)
        probe.stop()
        assert probe.seen == shown


def test_a_loop_failure_is_told_first_in_the_thread_and_still_kept_if_the_callback_fails():
    """``on_failure`` runs in the worker's thread before anything else (the daemon disarms
    there, before the thread ends); a callback that raises loses none of the failure."""
    worker = _Counter(fail_at=3)
    told: list[tuple[BaseException, bool, bool]] = []

    def disarm(err: BaseException) -> None:
        told.append((err, worker.finished.is_set(), worker._error is None))
        raise RuntimeError("the callback failed too")

    worker.on_failure = disarm
    worker.start()
    assert worker.finished.wait(5)
    wait_until(lambda: not worker.running, 30, "the failed thread to end")
    [(err, finished, unrecorded)] = told
    assert isinstance(err, OSError) and not finished and unrecorded
    with pytest.raises(RuntimeError, match="test-worker stopped: device vanished"):
        worker.raise_if_failed()
    worker.stop()


class _Exits(_Counter):
    """Its loop ends in ``SystemExit`` (a library calling ``sys.exit`` on the thread)."""

    def _work(self) -> None:
        raise SystemExit("a library called sys.exit(2)")


def test_a_loop_ended_by_a_base_exception_is_a_failure_told_and_kept():
    """A ``SystemExit`` (a ``BaseException``, no ``Exception``) ended the thread as a clean stop
    did: ``on_failure`` was never called (no disarm) and :meth:`raise_if_failed` raised
    nothing, so the supervisor restarted the stage as if it had merely stopped."""
    worker = _Exits()
    told: list[BaseException] = []
    worker.on_failure = told.append
    worker.start()
    assert worker.finished.wait(5)
    wait_until(lambda: not worker.running, 30, "the failed thread to end")
    [err] = told
    assert isinstance(err, SystemExit)
    with pytest.raises(RuntimeError, match=r"test-worker stopped: a library called sys.exit\(2\)"):
        worker.raise_if_failed()
    worker.stop()
