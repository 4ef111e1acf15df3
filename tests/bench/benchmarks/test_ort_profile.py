"""ONNX Runtime's profile aggregated per op type, kind and node (bench.benchmarks.ort_profile),
on a tiny real graph and on the shipped step graph."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bench.benchmarks.efficiency import dense_flops
from bench.benchmarks.ort_profile import profile, stream_flops, table, useful_flops
from tests.bench.benchmarks._graphs import UPSAMPLING_FLOPS, conv_gate, strided_upsampling

SHIPPED = Path(__file__).parents[3] / "models" / "weights"


def test_every_kernel_is_counted_once_per_run_with_the_convolution_flops(tmp_path):
    path = tmp_path / "g.onnx"
    conv_gate(path)
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


def test_useful_flops_of_the_window_graph_agree_with_the_static_count():
    window = SHIPPED / "default.onnx"
    # onnx-tool counts each bias add as one more multiply-add per output: 0.5 % here
    assert useful_flops(window) == pytest.approx(dense_flops(window), rel=0.01)
    assert useful_flops(window) < dense_flops(window)
    # the step graph: one encoder step and a 16-frame rollout, about half a window's work
    assert 0.3 < useful_flops(SHIPPED / "default.step.onnx", step=True) / dense_flops(window) < 0.7


def test_a_stream_prediction_counts_the_rollout_and_the_encoder_steps_of_a_rebuild():
    step = SHIPPED / "default.step.onnx"
    rollout = useful_flops(step, step=True)
    encoder = useful_flops(step, step=True, rollout=False)
    assert 0 < encoder < rollout / 5  # one frame through the encoder, no 16-frame rollout
    assert stream_flops(step, 16, None) == pytest.approx(rollout)  # never rebuilt
    # a fresh state every 16 frames is fed beside the carried one for 15 frames of 16
    assert stream_flops(step, 16, 16) == pytest.approx(rollout + 15 / 16 * encoder)


def test_a_batched_matmul_counts_its_inner_dimension_once(tmp_path):
    """An attention's MatMul of two activations, (2, 8, 120) @ (2, 120, 5): 2 x 8 x 5
    outputs of 120 multiply-adds each, not of the right operand's 120 x 5 elements."""
    nodes = [helper.make_node("MatMul", ["a", "b"], ["y"])]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 8, 120]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 120, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8, 5])],
    )  # fmt: skip
    path = tmp_path / "bmm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert useful_flops(path) == 2 * (2 * 8 * 5) * 120


def test_a_linear_layer_s_gemm_is_counted_though_its_weight_is_pre_packed(tmp_path):
    """A Linear exported as Gemm (x (3, 120), weight (5, 120), transB): ONNX Runtime
    pre-packs the weight and leaves its shape out of the profile; K is the input's."""
    weight = numpy_helper.from_array(np.ones((5, 120), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 120])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 5])],
        [weight],
    )  # fmt: skip
    path = tmp_path / "linear.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    assert useful_flops(path) == 2 * (3 * 5) * 120


def test_a_transposed_convolution_counts_each_input_once_per_weight_it_meets(tmp_path):
    """The TrajGRU decoder's upsampling, (1, 4, 5, 5) -> (1, 2, 10, 10) at stride 2: every
    input element times its 2 x 4 x 4 weights, as efficiency.dense_flops counts it; ONNX
    Runtime pre-packs its weight, which must not leave it uncounted."""
    path = tmp_path / "up.onnx"
    strided_upsampling(path)
    assert useful_flops(path) == dense_flops(path) == UPSAMPLING_FLOPS
