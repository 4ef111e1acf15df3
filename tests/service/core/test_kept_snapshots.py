"""KeptSnapshots: one render a period however many read, and a drop shows a change at once."""

from collections.abc import Callable

import pytest

from service.core.kept_snapshots import KeptSnapshots


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
