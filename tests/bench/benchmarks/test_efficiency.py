"""FLOPs counted from ONNX graphs and the host's sgemm peak: the two halves of the efficiency
figure in bench.benchmarks.inference_latency."""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bench.benchmarks.efficiency import dense_flops, sgemm_peak_gflops
from tests.bench.benchmarks._graphs import UPSAMPLING_FLOPS, strided_upsampling

SHIPPED = Path(__file__).parents[3] / "models" / "weights"


def _conv_then_matmul(path: Path) -> None:
    """x (1, 3, 10, 12) -> Conv 8 filters 3x3 pad 1 -> Relu -> reshape (8, 120) @ (120, 5)."""
    weight = numpy_helper.from_array(np.ones((8, 3, 3, 3), np.float32), "w")
    shape = numpy_helper.from_array(np.array([8, 120], np.int64), "shape")
    right = numpy_helper.from_array(np.ones((120, 5), np.float32), "m")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Reshape", ["r", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "m"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 10, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 5])],
        [weight, shape, right],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_dense_flops_count_conv_and_matmul_and_nothing_else(tmp_path):
    path = tmp_path / "g.onnx"
    _conv_then_matmul(path)
    conv = 2 * 8 * 10 * 12 * 3 * 3 * 3  # every output: 27 multiply-adds
    matmul = 2 * 8 * 120 * 5
    assert dense_flops(path) == conv + matmul


def test_the_shipped_window_graph_is_counted_and_the_step_graph_is_not():
    flops = dense_flops(SHIPPED / "default.onnx")
    assert flops is not None and 1e8 < flops < 1e10  # 0.44 GFLOP for the 16-16 model
    assert dense_flops(SHIPPED / "default.step.onnx") is None  # If branches: data-dependent


def test_the_sgemm_peak_is_a_finite_positive_throughput():
    peak = sgemm_peak_gflops(threads=1, size=256, seconds=0.2)
    assert np.isfinite(peak) and peak > 0.1


def test_a_strided_transposed_convolution_counts_each_input_once_per_weight_it_meets(tmp_path):
    """A transposed convolution (the TrajGRU decoder's upsampling) multiplies every input
    element by its (Cout / group) x kernel-area weights; at stride 2 its output is 4x the
    input's area, so counting per output element (as a Conv is counted) doubles it here."""
    path = tmp_path / "up.onnx"
    strided_upsampling(path)
    assert dense_flops(path) == UPSAMPLING_FLOPS
