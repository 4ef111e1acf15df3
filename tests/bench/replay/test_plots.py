"""The replay report's figures say what an empty one means."""

import numpy as np

from bench.replay._plots import plot_decisions, plot_strips
from bench.replay.report import NO_TARGET


def test_an_empty_decision_timeline_says_why(tmp_path):
    empty = plot_decisions(tmp_path / "d.png", {"model": []}, None, 10.0, none_because=NO_TARGET)
    assert [t.get_text() for t in empty.axes[0].texts] == [NO_TARGET]
    assert (tmp_path / "d.png").stat().st_size > 0

    row = {"time_s": 2.0, "trigger": True, "interlocks": [], "outcome": "sent"}
    shown = plot_decisions(tmp_path / "e.png", {"model": [row]}, None, 10.0, none_because="x")
    assert not shown.axes[0].texts and shown.axes[0].get_legend() is not None


def test_strips_leave_out_a_window_the_session_ends_within(tmp_path):
    """An example window is the first prediction at or just after the requested slot, which
    near a short session's end can predict frames never recorded: there is no truth to show
    beside it, so it is left out (the figure used to fail with an IndexError)."""
    n = 100
    frames = np.random.default_rng(0).normal(size=(n, 18, 20)).astype(np.float32)
    future = np.zeros((16, 18, 20), dtype=np.float32)
    kept = {"model": {60: (60, future), n - 17: (n - 5, future)}}
    examples = [("inside", 60), ("at the end", n - 17)]
    figure = plot_strips(
        tmp_path / "s.png", frames, np.arange(n) / 277.78, examples, kept, (1, 16), 3.6
    )
    labels = [axes.get_ylabel() for axes in figure.axes if "\n" in axes.get_ylabel()]
    assert [label.split(",")[0] for label in labels] == ["inside", "inside"]
    assert (tmp_path / "s.png").stat().st_size > 0
