"""The replay report's figures say what an empty one means."""

from bench.replay._plots import plot_decisions
from bench.replay.report import NO_TARGET


def test_an_empty_decision_timeline_says_why(tmp_path):
    empty = plot_decisions(tmp_path / "d.png", {"model": []}, None, 10.0, none_because=NO_TARGET)
    assert [t.get_text() for t in empty.axes[0].texts] == [NO_TARGET]
    assert (tmp_path / "d.png").stat().st_size > 0

    row = {"time_s": 2.0, "trigger": True, "interlocks": [], "outcome": "sent"}
    shown = plot_decisions(tmp_path / "e.png", {"model": [row]}, None, 10.0, none_because="x")
    assert not shown.axes[0].texts and shown.axes[0].get_legend() is not None
