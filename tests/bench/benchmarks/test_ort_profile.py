"""ONNX Runtime's profile aggregated per op type, kind and node (bench.benchmarks.ort_profile),
on a tiny real graph and on the shipped step graph."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench.benchmarks.ort_profile import profile, table

SHIPPED = Path(__file__).parents[3] / "models" / "weights"


def _conv_gate(path: Path) -> None:
    """x (1, 16, 8, 10) -> Conv 32 filters 3x3 pad 1 -> Sigmoid -> Mul by x twice over."""
    weight = numpy_helper.from_array(np.full((32, 16, 3, 3), 0.01, np.float32), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c"], ["s"]),
        helper.make_node("Split", ["s"], ["a", "b"], axis=1, num_outputs=2),
        helper.make_node("Mul", ["a", "x"], ["m"]),
        helper.make_node("Mul", ["b", "m"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 8, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 8, 10])],
        [weight],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)


def test_every_kernel_is_counted_once_per_run_with_the_convolution_flops(tmp_path):
    path = tmp_path / "g.onnx"
    _conv_gate(path)
    prof = profile(path, runs=5, warmup=2)
    assert prof.runs == 5 and prof.p50_ms > 0
    conv = {op: row for op, row in prof.by_op.items() if op.endswith("Conv")}
    assert sum(row.calls for row in conv.values()) == 5  # one convolution per run
    # channels are whole NCHWc blocks (8 or 16): nothing padded, so exactly 2 x MACs
    assert sum(row.flops for row in conv.values()) == 5 * 2 * 32 * 8 * 10 * 16 * 9
    assert prof.by_kind["elementwise"].calls >= 5 * 2  # the Muls (Sigmoid may be fused)
    assert sum(r.micros for r in prof.by_kind.values()) == pytest.approx(
        sum(r.micros for r in prof.by_node.values())
    )
    lines = table(prof.by_op, prof, "op type").splitlines()
    shares = [float(line.split("|")[4].strip(" %")) for line in lines[2:]]
    assert sum(shares) == pytest.approx(100, abs=0.1 * len(shares))


def test_a_step_graph_is_profiled_without_its_if_nodes():
    prof = profile(SHIPPED / "default.step.onnx", step=True, runs=2, warmup=1)
    assert "If" not in prof.by_op
    assert prof.by_kind["conv"].calls > 0 and prof.by_kind["conv"].flops > 0


def test_a_missing_graph_is_named():
    with pytest.raises(FileNotFoundError, match=r"nowhere\.onnx"):
        profile("nowhere.onnx")
