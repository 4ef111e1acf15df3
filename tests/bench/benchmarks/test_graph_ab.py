"""Exports of one model timed against each other (bench.benchmarks.graph_ab): each graph is
timed, and its output compared with the baseline's."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from bench.benchmarks.graph_ab import _named, time_graphs
from tests.bench.benchmarks._graphs import conv_gate


def test_graphs_are_timed_and_compared_with_the_first(tmp_path):
    base, same, other = (tmp_path / f"{name}.onnx" for name in ("base", "same", "other"))
    conv_gate(base)
    conv_gate(same)
    model = onnx.load(str(base))
    weight = model.graph.initializer[0]
    weight.CopyFrom(numpy_helper.from_array(2 * numpy_helper.to_array(weight), weight.name))
    onnx.save(model, str(other))
    times, gaps = time_graphs([base, same, other], step=False, threads=1, runs=30, warmup=2)
    assert [len(t) for t in times] == [30, 30, 30]
    assert all(np.all(t > 0) for t in times)
    assert gaps[0] == 0.0 and gaps[1] == 0.0 and gaps[2] > 0.0


def test_a_graph_may_carry_session_config_entries(tmp_path):
    path = tmp_path / "g.onnx"
    conv_gate(path)
    name, parsed, config = _named(f"no-spin={path},session.intra_op.allow_spinning=0")
    assert (name, parsed, config) == ("no-spin", path, {"session.intra_op.allow_spinning": "0"})
    configs = [{}, config]
    times, gaps = time_graphs(
        [path, path], step=False, threads=1, runs=5, warmup=1, configs=configs
    )
    assert [len(t) for t in times] == [5, 5] and gaps == [0.0, 0.0]
    with pytest.raises(SystemExit, match="NAME=PATH"):
        _named(f"bad={path},no-value")
