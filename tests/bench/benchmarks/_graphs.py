"""Tiny real ONNX graphs for the profiling benchmarks' tests."""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def conv_gate(path: Path) -> None:
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


def strided_upsampling(path: Path) -> None:
    """x (1, 4, 5, 5) -> ConvTranspose to 2 channels, 4x4 kernel, stride 2 -> (1, 2, 10, 10):
    the TrajGRU decoder's upsampling in small."""
    weight = numpy_helper.from_array(np.ones((4, 2, 4, 4), np.float32), "w")
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1])
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 10, 10])],
        [weight],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


UPSAMPLING_FLOPS = 2 * (4 * 5 * 5) * (2 * 4 * 4)
""":func:`strided_upsampling`'s: every input element times its 2 x 4 x 4 weights."""
