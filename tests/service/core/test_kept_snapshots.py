"""KeptSnapshots: one render a period however many read, and a drop shows a change at once."""

import threading
import time
import traceback
from collections.abc import Callable

import pytest

from service.core.kept_snapshots import KeptSnapshots

_WAIT_S = 30.0


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _numbered() -> tuple[list[int], Callable[[], dict]]:
    renders: list[int] = []

    def render() -> dict:
        renders.append(len(renders) + 1)
        return {"render": renders[-1]}

    return renders, render


def test_a_snapshot_is_rendered_once_a_period_and_again_after_it():
    clock = _Clock()
    kept = KeptSnapshots(0.5, clock)
    renders, render = _numbered()
    first = kept.get("status", render)
    clock.now += 0.49
    assert all(kept.get("status", render) is first for _ in range(100))
    clock.now += 0.01
    assert kept.get("status", render) == {"render": 2}
    assert kept.get("readiness", render) == {"render": 3}  # each name its own copy
    assert renders == [1, 2, 3]


def test_each_answer_says_how_long_ago_its_render_ended():
    """0.0 for the reader that rendered it, then the time since, until it is rendered again."""
    clock = _Clock()
    kept = KeptSnapshots(0.5, clock)
    _, render = _numbered()
    assert kept.get_kept("status", render) == ({"render": 1}, 0.0)
    clock.now += 0.25
    assert kept.get_kept("status", render) == ({"render": 1}, 0.25)
    clock.now += 0.25
    assert kept.get_kept("status", render) == ({"render": 2}, 0.0)


def test_forget_drops_every_copy_and_a_read_begun_before_it_is_not_kept():
    clock = _Clock()
    kept = KeptSnapshots(60.0, clock)
    _, render = _numbered()
    kept.get("status", render)
    kept.forget()
    assert kept.get("status", render) == {"render": 2}

    def render_while_an_operator_changes_something() -> dict:
        kept.forget()  # the change returns while this render is under way
        return render()

    assert kept.get("readiness", render_while_an_operator_changes_something) == {"render": 3}
    assert kept.get("readiness", render) == {"render": 4}  # the one before was not kept


def test_zero_keeps_nothing_and_a_negative_age_is_refused():
    renders, render = _numbered()
    never = KeptSnapshots(0.0)
    never.get("status", render)
    never.get("status", render)
    assert renders == [1, 2]
    with pytest.raises(ValueError, match=r"'max_age_s' must be a finite number >= 0, got -1"):
        KeptSnapshots(-1)


def _held_render(*, fails: bool = False) -> tuple[list[int], threading.Event, Callable[[], dict]]:
    """A render that notes each call in ``renders`` and waits for ``release``, then answers
    its number, or ``fails`` as a loop's process that does not answer: (renders, release, the
    render)."""
    renders: list[int] = []
    release = threading.Event()

    def render() -> dict:
        renders.append(len(renders) + 1)
        assert release.wait(_WAIT_S), "the test never released the render"
        if fails:
            raise ConnectionError("the loop's process did not answer")
        return {"render": renders[-1]}

    return renders, release, render


def _until_rendering(renders: list[int]) -> None:
    """Wait (within the tests' bound) for a render to have begun."""
    deadline = time.monotonic() + _WAIT_S
    while not renders and time.monotonic() < deadline:
        time.sleep(0.01)


def _in_threads(read: Callable[[], None], count: int) -> list[threading.Thread]:
    """``count`` threads each calling ``read`` at once, once all have started."""
    together = threading.Barrier(count)

    def run() -> None:
        together.wait(_WAIT_S)
        read()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


def _release_once_under_way(
    renders: list[int], release: threading.Event, threads: list[threading.Thread]
) -> None:
    """Let the render finish once it has begun and the other readers have reached get()."""
    _until_rendering(renders)
    time.sleep(0.5)  # the other readers, past the barrier, call get() while it renders
    release.set()
    for thread in threads:
        thread.join(_WAIT_S)


def test_readers_that_come_while_a_snapshot_renders_share_that_render():
    """Polled by many clients at once (each request a thread of its own), the snapshot must
    still be rendered once: the readers that come while it renders wait for it."""
    renders, release, render = _held_render()
    kept = KeptSnapshots(60.0)
    answers: list[dict] = []
    threads = _in_threads(lambda: answers.append(kept.get("status", render)), 8)
    _release_once_under_way(renders, release, threads)
    assert renders == [1]
    assert answers == [{"render": 1}] * 8


def test_a_failed_render_fails_every_reader_that_waited_for_it_and_is_not_kept():
    """A loop's process that does not answer is asked once for all the readers waiting on it,
    not once by each (each would wait out the call's timeout, a thread each)."""
    renders, release, unreachable = _held_render(fails=True)
    kept = KeptSnapshots(60.0)
    failures: list[BaseException] = []

    def read() -> None:
        try:
            kept.get("status", unreachable)
        except ConnectionError as err:
            failures.append(err)

    _release_once_under_way(renders, release, _in_threads(read, 4))
    assert renders == [1]
    assert [str(err) for err in failures] == ["the loop's process did not answer"] * 4
    assert kept.get("status", lambda: {"render": 2}) == {"render": 2}  # the failure not kept


def test_each_reader_of_a_failed_render_raises_a_traceback_of_its_own():
    """One exception object raised in many threads gathers each raise's frames: the k-th
    reader's traceback held the frames of the k-1 before it, so a burst of readers of one
    failed render (each a request logged with its traceback) logged ever longer ones, each
    naming requests that were not its own."""
    renders, release, failing = _held_render(fails=True)
    kept = KeptSnapshots(60.0)
    seen: list[tuple[str, int]] = []

    def read() -> None:
        try:
            kept.get("status", failing)
        except ConnectionError as err:
            frames = traceback.extract_tb(err.__traceback__)
            seen.append((str(err), sum(frame.name == "read" for frame in frames)))

    _release_once_under_way(renders, release, _in_threads(read, 8))
    assert renders == [1]
    assert seen == [("the loop's process did not answer", 1)] * 8


def test_a_reader_after_forget_does_not_share_a_render_begun_before_it():
    renders, release, render = _held_render()
    kept = KeptSnapshots(60.0)
    answers: list[dict] = []
    threads = _in_threads(lambda: answers.append(kept.get("status", render)), 1)
    _until_rendering(renders)
    kept.forget()  # an operator's change returns while the render is under way
    assert kept.get("status", lambda: {"render": "after"}) == {"render": "after"}
    release.set()
    for thread in threads:
        thread.join(_WAIT_S)
    assert answers == [{"render": 1}]
