"""The replay report's figures say what an empty one means."""

import numpy as np

from bench.replay._plots import plot_decisions, plot_strips, plot_sweep
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


def _sweep_point(pgd: float, sensitivity: float, per_hour: float | None, configured=False) -> dict:
    """One row of a model's ``sweep`` in report.json, as the plot reads it."""
    return {
        "values": {"min_pgd": pgd},
        "configured": configured,
        "sensitivity": sensitivity,
        "false_triggers_per_hour": per_hour,
    }


def test_the_sweep_marks_the_configured_policy_as_the_reference(tmp_path):
    """The configured policy is what each variant is read against; the plot left it out."""
    points = [_sweep_point(0.5, 1.0, 2.0, configured=True), _sweep_point(0.7, 0.5, 1.0)]
    figure = plot_sweep(tmp_path / "sweep.png", {"model": points})
    axes = figure.axes[0]
    assert [t.get_text() for t in axes.texts] == ["min_pgd=0.5 (configured)", "min_pgd=0.7"]
    legend = [t.get_text() for t in axes.get_legend().get_texts()]
    assert legend == ["model", "model: configured policy"]
    ringed = axes.get_lines()[1]
    assert (ringed.get_xdata().tolist(), ringed.get_ydata().tolist()) == ([2.0], [1.0])
    assert (tmp_path / "sweep.png").stat().st_size > 0


def test_a_sweep_point_without_a_false_trigger_rate_is_left_out_and_said_so(tmp_path):
    """A session with no time outside seizures has no false-trigger rate (null): the point
    was drawn at 0 per hour, read as a perfect policy."""
    points = [
        _sweep_point(0.5, 1.0, None, configured=True),
        _sweep_point(0.7, 0.5, float("nan")),
        _sweep_point(0.9, 0.5, 3.0),
    ]
    figure = plot_sweep(tmp_path / "sweep.png", {"model": points})
    axes = figure.axes[0]
    assert [line.get_xdata().tolist() for line in axes.get_lines()] == [[3.0]]
    assert [t.get_text() for t in axes.texts] == ["min_pgd=0.9"]
    assert "2 variant(s) without a sensitivity or false-trigger rate left out" in axes.get_title()
