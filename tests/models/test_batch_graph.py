"""A batch-1 export run batched: the same numbers per window, or a clear refusal."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from models.batch_graph import BATCH_DIM, BatchGraphError, batched_session, dynamic_batch
from tests.data.tiny_model import DIRECTORY, STEP, WINDOW


def _dims(values) -> list[list]:
    return [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values]


@pytest.mark.parametrize("name", [WINDOW, STEP])
def test_inputs_and_outputs_get_a_dynamic_batch_and_flags_stay_fixed(name):
    model = dynamic_batch(onnx.load(str(DIRECTORY / name)))
    for dims in _dims(model.graph.input) + _dims(model.graph.output):
        assert dims[0] == (BATCH_DIM if len(dims) > 1 else 1)  # upper_due, rollout stay (1,)


def test_a_batch_of_windows_gives_each_windows_batch_1_future():
    path = DIRECTORY / WINDOW
    batched = batched_session(path)
    single = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    past = np.random.default_rng(3).uniform(-1, 1, (5, 16, 1, 18, 20)).astype(np.float32)
    together = batched.run(None, {"past": past})[0]
    alone = np.concatenate([single.run(None, {"past": p[None]})[0] for p in past])
    assert together.shape == (5, 16, 1, 18, 20)
    np.testing.assert_array_equal(together, alone)


def test_the_shipped_default_batched_gives_every_window_its_batch_1_future():
    """Its gates convolve the input and the hidden state apart; with a symbolic batch ONNX
    Runtime fused their sum at batch 1 only and a batch came out 3.6e-7 away. 21 windows run as
    16 + 4 + 1; the step graph's check (every flag combination) runs as it loads."""
    weights = Path(__file__).parents[2] / "models" / "weights"
    batched_session(weights / "default.step.onnx")
    path = weights / "default.onnx"
    batched = batched_session(path)
    single = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    past = np.random.default_rng(5).normal(0, 1, (21, 16, 1, 18, 20)).astype(np.float32)
    alone = np.concatenate([single.run(None, {"past": p[None]})[0] for p in past])
    np.testing.assert_array_equal(batched.run(None, {"past": past})[0], alone)


def test_a_graph_whose_rows_mix_within_a_batch_is_refused_naming_the_batch(tmp_path):
    path = tmp_path / "mixing.onnx"
    onnx.save(_row_mixing_graph(), path)
    with pytest.raises(BatchGraphError, match=r"run at batch 16 differs from batch 1"):
        batched_session(path)


def _graph(
    op: str, shape_value: list[int], batch: int = 1, *, node: bool = False
) -> onnx.ModelProto:
    """x (batch, 4) -> op with a constant shape -> y (of that shape); the shape an initializer,
    or with ``node`` the output of a ``Constant`` node (as other exporters and tools write)."""
    shape = numpy_helper.from_array(np.array(shape_value, dtype=np.int64), "shape")
    inputs = ["x", "shape"] if op != "ConstantOfShape" else ["shape"]
    nodes = [helper.make_node(op, inputs, ["y"], name="fixer")]
    if node:
        nodes.insert(0, helper.make_node("Constant", [], ["shape"], value=shape))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape_value)],
        initializer=[] if node else [shape],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("node", [False, True])
def test_a_reshape_that_fixes_batch_1_is_refused_by_name(node):
    with pytest.raises(BatchGraphError, match=r"'fixer' \(Reshape\).*\[1, 2, 2\].*cannot be bat"):
        dynamic_batch(_graph("Reshape", [1, 2, 2], node=node))


@pytest.mark.parametrize("node", [False, True])
def test_an_expand_to_a_leading_1_keeps_the_inputs_batch(node):
    """Expand broadcasts, so a 1 keeps the input's batch (TrajGRU's warp expands its state by
    ``[1, L, 1, 1, 1]``); it was refused as if it fixed batch 1, like a Reshape's 1."""
    model = dynamic_batch(_graph("Expand", [1, 4], node=node))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(8).uniform(-1, 1, (3, 4)).astype(np.float32)
    (y,) = session.run(None, {"x": x})
    np.testing.assert_array_equal(y, x)


def test_a_graph_of_another_batch_is_refused():
    with pytest.raises(BatchGraphError, match="has batch 2; only a batch-1 graph"):
        dynamic_batch(_graph("Reshape", [2, 2, 2], batch=2))


@pytest.mark.parametrize("node", [False, True])
def test_a_zero_tensor_of_batch_1_takes_the_inputs_batch(node):
    model = dynamic_batch(_graph("ConstantOfShape", [1, 3], node=node))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": np.zeros((4, 4), dtype=np.float32)})
    assert y.shape == (4, 3)


def test_an_onnx_file_is_scored_a_batch_per_call_with_batch_1s_numbers():
    """``corticast evaluate`` (``models.loading``) runs each batch in one call."""
    from models.loading import load_predictor

    model = load_predictor(DIRECTORY / WINDOW)
    assert "batched" in model.description
    past = np.random.default_rng(4).uniform(-1, 1, (4, 16, 1, 18, 20)).astype(np.float32)
    single = ort.InferenceSession(str(DIRECTORY / WINDOW), providers=["CPUExecutionProvider"])
    alone = np.concatenate([single.run(None, {"past": p[None]})[0] for p in past])
    np.testing.assert_array_equal(model.predict(past), alone)


def test_an_unchanged_file_keeps_its_checked_session_and_a_rewritten_one_is_checked_again(
    tmp_path,
):
    path = tmp_path / "model.onnx"
    path.write_bytes((DIRECTORY / WINDOW).read_bytes())
    first = batched_session(path)
    assert batched_session(path) is first
    assert batched_session(path, threads=2) is not first
    onnx.save(_row_mixing_graph(), path)
    with pytest.raises(BatchGraphError, match="differs from batch 1"):
        batched_session(path)  # a new file at the same path: built and checked again


@pytest.mark.parametrize(
    ("then", "error"),
    [
        (None, "gives output 0 the shape \\(1, 64\\), not \\(16, 4\\)"),
        ("MatMul", "fails at batch 16"),
    ],
)
def test_a_graph_that_folds_the_batch_into_a_row_is_refused_naming_the_batch(tmp_path, then, error):
    """Flatten at axis 0 keeps batch 1's (1, 4) but folds a batch of 16 into one (1, 64) row,
    which a later MatMul cannot take: no shape this rewrite sees, so the check at load must say
    what went wrong, as a BatchGraphError (``corticast evaluate`` then runs one window a call)."""
    path = tmp_path / "folding.onnx"
    onnx.save(_folding_graph(then), path)
    with pytest.raises(BatchGraphError, match=error):
        batched_session(path)


def _folding_graph(then: str | None) -> onnx.ModelProto:
    """x (1, 4) -> Flatten(axis=0) -> y (1, 4), then optionally MatMul by a (4, 4) weight."""
    nodes = [helper.make_node("Flatten", ["x"], ["flat"], axis=0, name="fold")]
    weights = []
    if then == "MatMul":
        weights = [numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")]
        nodes.append(helper.make_node("MatMul", ["flat", "w"], ["y"], name="mix"))
    else:
        nodes.append(helper.make_node("Identity", ["flat"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=weights,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_model_with_its_weights_in_an_external_file_is_batched(tmp_path):
    """ONNX's external data (weights beside the graph), which the daemon's predictor loads
    from the path: the batched session reads them from there too."""
    path = tmp_path / "model.onnx"
    onnx.save(
        onnx.load(str(DIRECTORY / WINDOW)), str(path), save_as_external_data=True,
        location="model.onnx.data", size_threshold=1024,
    )  # fmt: skip
    past = np.random.default_rng(7).uniform(-1, 1, (2, 16, 1, 18, 20)).astype(np.float32)
    single = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    alone = np.concatenate([single.run(None, {"past": p[None]})[0] for p in past])
    np.testing.assert_array_equal(batched_session(path).run(None, {"past": past})[0], alone)


def _row_mixing_graph() -> onnx.ModelProto:
    """y = x - mean over the batch: 0 for a batch of 1, not for a batch of different rows."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["x"], ["m"], axes=[0], keepdims=1),
            helper.make_node("Sub", ["x", "m"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_file_replaced_keeping_its_size_and_modification_time_is_run_as_it_now_is(tmp_path):
    """``cp -p`` / ``rsync -a`` of retrained weights of the same architecture over the file:
    same size, same modification time, other numbers. The batched session must be the new
    file's, as the daemon's predictor, which loads the file, would be."""
    path = tmp_path / "model.onnx"
    path.write_bytes((DIRECTORY / WINDOW).read_bytes())
    before = path.stat()
    batched_session(path)
    retrained = onnx.load(str(path))
    for weights in retrained.graph.initializer:  # every weight 1.5x: the same bytes in number
        if weights.data_type == TensorProto.FLOAT and weights.raw_data:
            weights.raw_data = (numpy_helper.to_array(weights) * np.float32(1.5)).tobytes()
    path.write_bytes(retrained.SerializeToString())
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)

    past = np.random.default_rng(6).uniform(-1, 1, (4, 16, 1, 18, 20)).astype(np.float32)
    single = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    alone = np.concatenate([single.run(None, {"past": p[None]})[0] for p in past])
    np.testing.assert_array_equal(batched_session(path).run(None, {"past": past})[0], alone)
