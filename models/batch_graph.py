"""A batch-1 exported graph with its batch dimension made dynamic, for offline runs.

The daemon runs one window (or one frame) per call, so ``corticast export`` writes graphs with
a fixed batch of 1 (TensorRT wants static shapes). Offline consumers that know all their
windows in advance (``corticast evaluate``, ``replay --fast``, the accuracy benchmarks) run the
same file with many windows per call instead. The exporter hard-codes batch 1 in exactly one
kind of node: the ``ConstantOfShape`` that makes a zero state or a zero future (shape
``[1, ...]``, inside If branches of a step graph too); every other node takes its shape from its
inputs. So the batched graph is derived in memory from the shipped file, without torch and for
any exported model: graph inputs and outputs get a symbolic batch, those shapes take the
batch from the first input's shape, and the exporter's intermediate shape annotations are
dropped (ONNX Runtime infers them again). Nothing else changes: the weights and every node
that computes are the same, and :func:`batched_session` proves on random inputs that a batch
of windows gives each window's batch-1 result, or refuses the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

BATCH_DIM = "batch"
_BATCH_VALUE = "corticast_batch_dim"
"""Name of the new value holding the batch size, (1,) int64, from the first input's shape."""
PARITY_BATCH = 3
"""Windows (or frames) the load-time check runs batched and one at a time."""


class BatchGraphError(ValueError):
    """The graph cannot be run batched: a shape it fixes is not one this rewrite handles, or
    the batched graph does not reproduce batch 1."""


def dynamic_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose batch dimension (dim 0 of every input and output) is dynamic.

    Raises
    ------
    BatchGraphError
        An input or output whose batch is not 1, or a graph whose inputs have no batch.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    batched = [v for v in graph.input if _rank(v) > 1]
    if not batched:
        raise BatchGraphError(f"graph {graph.name!r} has no input with a batch dimension")
    for value in (*batched, *graph.output):
        _make_batch_dynamic(value)
    graph.node.insert(
        0, helper.make_node("Shape", [batched[0].name], [_BATCH_VALUE], start=0, end=1)
    )
    _rewrite(graph, {}, graph)
    _drop_unused_initializers(graph)
    onnx.checker.check_model(model)
    return model


def batched_session(path: str | Path, *, threads: int = 1):
    """An ``onnxruntime.InferenceSession`` of ``path`` with a dynamic batch, checked.

    Configured as the daemon configures its CPU sessions (explicit threads, sequential, full
    graph optimisation). Before it is returned, :data:`PARITY_BATCH` random inputs are run
    batched and one at a time on the shipped graph: every output must be bitwise the same.

    Raises
    ------
    BatchGraphError
        If the graph cannot be batched, or the batched graph differs from batch 1.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    original = onnx.load(str(path))
    batched = dynamic_batch(original).SerializeToString()
    providers = ["CPUExecutionProvider"]
    session = ort.InferenceSession(batched, options, providers=providers)
    single = ort.InferenceSession(original.SerializeToString(), options, providers=providers)
    _check_parity(single, session, str(path))
    return session


def _check_parity(single, batched, name: str) -> None:
    """Raise unless ``batched`` on a batch equals ``single`` on each of its members."""
    rng = np.random.default_rng(0)
    feeds = {}
    for value in single.get_inputs():
        shape = [PARITY_BATCH if k == 0 and len(value.shape) > 1 else d
                 for k, d in enumerate(value.shape)]  # fmt: skip
        feeds[value.name] = rng.uniform(-1, 1, shape).astype(np.float32)
    for flags in _flag_settings(single):
        feeds.update(flags)
        together = batched.run(None, feeds)
        alone = [
            single.run(None, {k: v[i : i + 1] if v.ndim > 1 else v for k, v in feeds.items()})
            for i in range(PARITY_BATCH)
        ]
        for k, output in enumerate(together):
            expected = np.concatenate([outputs[k] for outputs in alone])
            if not np.array_equal(output, expected):
                error = float(np.abs(output - expected).max())
                raise BatchGraphError(
                    f"{name!r} run batched differs from batch 1 by up to {error:.3g} in output "
                    f"{k}; run it one window at a time"
                )


def _flag_settings(session) -> list[dict[str, np.ndarray]]:
    """Every combination of a step graph's (1,) flags (``upper_due``, ``rollout``): each
    selects other If branches, whose shapes must all be batched."""
    flags = [v.name for v in session.get_inputs() if list(v.shape) == [1]]
    settings: list[dict[str, np.ndarray]] = [{}]
    for name in flags:
        settings = [
            {**s, name: np.array([value], dtype=np.float32)} for s in settings for value in (0, 1)
        ]
    return settings


def _rank(value: onnx.ValueInfoProto) -> int:
    return len(value.type.tensor_type.shape.dim)


def _make_batch_dynamic(value: onnx.ValueInfoProto) -> None:
    dims = value.type.tensor_type.shape.dim
    if len(dims) <= 1:
        return
    if dims[0].dim_param == BATCH_DIM:
        return
    if dims[0].dim_value != 1:
        raise BatchGraphError(
            f"{value.name!r} has batch {dims[0].dim_value or dims[0].dim_param!r}; "
            "only a batch-1 graph is made dynamic"
        )
    dims[0].dim_param = BATCH_DIM


def _rewrite(graph: onnx.GraphProto, outer: dict, main: onnx.GraphProto) -> None:
    """Batch every ``ConstantOfShape`` of a constant ``[1, ...]`` shape in ``graph`` and its
    subgraphs; drop intermediate shape annotations; batch subgraph outputs."""
    del graph.value_info[:]
    if graph is not main:
        for value in graph.output:
            if _rank(value) > 1 and value.type.tensor_type.shape.dim[0].dim_value == 1:
                value.type.tensor_type.shape.dim[0].dim_param = BATCH_DIM
    constants = {**outer, **{i.name: i for i in graph.initializer}}
    nodes = []
    for node in graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in constants:
            shape = numpy_helper.to_array(constants[node.input[0]])
            if shape.ndim == 1 and shape.size > 1 and shape[0] == 1:
                rest = f"{node.output[0]}__rest"
                full = f"{node.output[0]}__shape"
                graph.initializer.append(numpy_helper.from_array(shape[1:].astype(np.int64), rest))
                nodes.append(helper.make_node("Concat", [_BATCH_VALUE, rest], [full], axis=0))
                node.input[0] = full
        elif node.op_type in ("Reshape", "Expand", "Tile"):
            _refuse_fixed_shape(node, constants)
        nodes.append(node)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _rewrite(attribute.g, constants, main)
    del graph.node[:]
    graph.node.extend(nodes)


def _refuse_fixed_shape(node: onnx.NodeProto, constants: dict) -> None:
    """A constant target shape with a leading 1 would keep the batch at 1: refuse the graph
    (no exported family has one; the check at load would catch it too, less clearly)."""
    if len(node.input) > 1 and node.input[1] in constants:
        shape = numpy_helper.to_array(constants[node.input[1]])
        if shape.ndim == 1 and shape.size > 1 and shape[0] == 1:
            raise BatchGraphError(
                f"node {node.name!r} ({node.op_type}) fixes a shape {shape.tolist()} with batch "
                "1; this graph cannot be batched"
            )


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    """Remove the main graph's initializers no node reads any more (the old shapes)."""
    used: set[str] = set()

    def collect(g: onnx.GraphProto) -> None:
        for node in g.node:
            used.update(node.input)
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    collect(attribute.g)

    collect(graph)
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
