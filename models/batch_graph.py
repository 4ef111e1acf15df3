"""A batch-1 exported graph run on many windows per call, for offline runs.

The daemon runs one window (or one frame) per call, so ``corticast export`` writes graphs with
a fixed batch of 1 (TensorRT wants static shapes). Offline consumers that know all their
windows in advance (``corticast evaluate``, ``replay --fast``, the accuracy benchmarks) run the
same file with many windows per call instead. In the ConvLSTM families the exporter hard-codes
batch 1 in exactly one kind of node: the ``ConstantOfShape`` that makes a zero state or a zero
future (shape ``[1, ...]``, inside If branches of a step graph too); every other node takes its
shape from its inputs. So the batched graph is derived in memory from the shipped file, without
torch: graph inputs and outputs get a symbolic batch, those shapes take the batch from the
first input's shape, and the exporter's intermediate shape annotations are dropped (ONNX
Runtime infers them again). Nothing else changes: the weights and every node that computes are
the same. A graph that fixes batch 1 elsewhere (a Reshape to ``[1, ...]``; TrajGRU's exports
did so in their warp until its reshapes left the batch to ``-1``) is refused, and its consumers
run it one window per call.

ONNX Runtime runs that graph at a few fixed batches (:data:`BATCH_SIZES`), each a session whose
batch is pinned when it loads, and cuts any batch into those: with every shape static, its
optimiser makes the choices it makes for the batch-1 graph the daemon runs. With the batch left
symbolic it did not: it fused the sum of the gate convolutions (``ConvLSTMCell``) into a
convolution at batch 1 only, and a batch then came out up to 3.6e-7 away from batch 1.
:func:`batched_session` proves on random inputs that each of those sessions gives every window
its batch-1 result, or refuses the file.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from service.core.ort_options import session_options

BATCH_DIM = "batch"
_BATCH_VALUE = "corticast_batch_dim"
"""Name of the new value holding the batch size, (1,) int64, from the first input's shape."""
PARITY_BATCH = 3
"""Distinct windows (or frames) the load-time check runs one at a time; each fixed batch is
filled with them in turn."""
BATCH_SIZES = (16, 4, 1)
"""The fixed batches a batched session runs, largest first; any batch is cut into these. For
the shipped default on one thread, 16 windows per call cost least per window (4: about the
same; 64 and 256 more, as their working set outgrows the cache)."""
_LOAD_THREADS = min(len(BATCH_SIZES), os.cpu_count() or 1)
"""Threads that build and check the sessions of a file: ONNX Runtime releases the GIL while it
optimises a graph and runs it, so the sessions load side by side (a cold replay waits for
them before its first window). Batch 1 is the shipped graph's own session."""


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


def batched_session(path: str | Path, *, threads: int = 1) -> BatchedSession:
    """``path`` run batched (see the module docstring), each fixed batch checked.

    Configured as the daemon configures its CPU sessions (``service.core.ort_options``:
    explicit threads, sequential, full graph optimisation). Before it is first returned, each
    of :data:`BATCH_SIZES` above 1 is filled with :data:`PARITY_BATCH` random inputs in turn and
    run against the shipped graph on each input alone: every output must be bitwise the same.
    Batch 1 runs the shipped graph itself. The
    checked sessions of a file are then kept while its contents are unchanged (compared
    whole: a file replaced by ``cp -p`` or ``rsync -a`` keeps its size and modification time;
    a few files per process): a session only runs, so a replay or evaluation of the same
    model again does not build and check its sessions again.

    Raises
    ------
    BatchGraphError
        If the graph cannot be batched, or a batch differs from batch 1.
    """
    file = Path(path).resolve()
    return _checked_session(str(file), file.read_bytes(), threads)


@functools.lru_cache(maxsize=8)
def _checked_session(path: str, content: bytes, threads: int) -> BatchedSession:
    """:func:`batched_session`'s work, once per file contents and thread count."""
    import onnxruntime as ort

    original = onnx.load_model_from_string(content)
    onnx.load_external_data_for_model(original, str(Path(path).parent))  # as onnx.load(path)
    batched = dynamic_batch(original).SerializeToString()
    providers = ["CPUExecutionProvider"]

    def load(size: int | None):
        """The batch-1 graph as shipped (None), or the batched one pinned at ``size``."""
        options = session_options(threads)
        if size is None:
            return ort.InferenceSession(original.SerializeToString(), options, providers=providers)
        options.add_free_dimension_override_by_name(BATCH_DIM, size)
        with _refused_at(size, path):
            return ort.InferenceSession(batched, options, providers=providers)

    with ThreadPoolExecutor(_LOAD_THREADS, thread_name_prefix="corticast-batch-load") as pool:
        single = pool.submit(load, None)
        loading = {size: pool.submit(load, size) for size in BATCH_SIZES if size > 1}
        batched_sizes = {size: future.result() for size, future in loading.items()}
        _check_parity(single.result(), batched_sizes, path, pool)
    # One window at a time is the shipped graph itself: nothing to prove, one load less.
    return BatchedSession({**batched_sizes, 1: single.result()})


class BatchedSession:
    """Runs a batch of any size as consecutive calls of fixed-batch sessions.

    Parameters
    ----------
    sessions
        Batch size -> ONNX Runtime session whose inputs and outputs have that batch; must
        include 1, so that every batch can be cut into them.
    """

    def __init__(self, sessions: dict) -> None:
        if 1 not in sessions:
            raise ValueError(f"'sessions' must include batch 1, got batches {sorted(sessions)}")
        self._sessions = dict(sorted(sessions.items(), reverse=True))

    def get_inputs(self) -> list:
        """The graph's inputs as ``InferenceSession.get_inputs`` gives them (batch 1's)."""
        return self._sessions[1].get_inputs()

    def get_outputs(self) -> list:
        """The graph's outputs as ``InferenceSession.get_outputs`` gives them (batch 1's)."""
        return self._sessions[1].get_outputs()

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs of ``feeds``, as ``InferenceSession.run`` returns them: inputs of rank
        > 1 are batched (dim 0), the step graph's (1,) flags are given to every call."""
        rows = {len(v) for v in feeds.values() if v.ndim > 1}
        if len(rows) != 1 or 0 in rows:
            raise ValueError(f"batched inputs must share one batch of at least 1, got {rows}")
        (total,) = rows
        parts, start = [], 0
        for size, session in self._sessions.items():
            while total - start >= size:
                chunk = {k: v[start : start + size] if v.ndim > 1 else v for k, v in feeds.items()}
                parts.append(session.run(output_names, chunk))
                start += size
        if len(parts) == 1:
            return parts[0]
        return [np.concatenate(outputs) for outputs in zip(*parts, strict=True)]


def _check_parity(single, sessions: dict, name: str, pool: Executor) -> None:
    """Raise unless each fixed-batch session, on a batch of the parity inputs in turn, gives
    every row what ``single`` gives its input alone (the sessions checked side by side on
    ``pool``)."""
    rng = np.random.default_rng(0)
    inputs = single.get_inputs()
    distinct = {
        v.name: rng.uniform(-1, 1, [PARITY_BATCH, *v.shape[1:]]).astype(np.float32)
        for v in inputs
        if len(v.shape) > 1
    }
    cases = [
        (flags, [single.run(None, {**{k: v[i : i + 1] for k, v in distinct.items()}, **flags})
                 for i in range(PARITY_BATCH)])
        for flags in _flag_settings(single)
    ]  # fmt: skip
    checks = [
        pool.submit(_check_batch, size, session, distinct, flags, alone, name)
        for size, session in sessions.items()
        for flags, alone in cases
    ]
    for check in checks:
        check.result()


def _check_batch(
    size: int,
    session,
    distinct: dict[str, np.ndarray],
    flags: dict[str, np.ndarray],
    alone: list[list[np.ndarray]],
    name: str,
) -> None:
    """Raise unless ``session`` (batch ``size``), under ``flags``, gives each row the outputs
    its input gave alone (``alone[i]``: distinct input ``i``'s outputs at batch 1)."""
    order = np.arange(size) % PARITY_BATCH
    with _refused_at(size, name):
        together = session.run(None, {**{k: v[order] for k, v in distinct.items()}, **flags})
    for k, output in enumerate(together):
        expected = np.concatenate([alone[i][k] for i in order])
        if output.shape != expected.shape:
            raise BatchGraphError(
                f"{name!r} run at batch {size} gives output {k} the shape {output.shape}, "
                f"not {expected.shape}; run it one window at a time"
            )
        if not np.array_equal(output, expected):
            error = float(np.abs(output - expected).max())
            raise BatchGraphError(
                f"{name!r} run at batch {size} differs from batch 1 by up to "
                f"{error:.3g} in output {k}; run it one window at a time"
            )


@contextmanager
def _refused_at(size: int, name: str) -> Iterator[None]:
    """ONNX Runtime's failure to load or run the graph at batch ``size`` as a BatchGraphError:
    the file is refused by name, as when its numbers differ (ORT raises its own types)."""
    try:
        yield
    except Exception as err:
        raise BatchGraphError(
            f"{name!r} fails at batch {size}: {err}; run it one window at a time"
        ) from None


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
    """Batch every ``ConstantOfShape`` of a constant ``[1, ...]`` shape (an initializer or a
    ``Constant`` node's) in ``graph`` and its subgraphs; drop intermediate shape annotations;
    batch subgraph outputs."""
    del graph.value_info[:]
    if graph is not main:
        for value in graph.output:
            if _rank(value) > 1 and value.type.tensor_type.shape.dim[0].dim_value == 1:
                value.type.tensor_type.shape.dim[0].dim_param = BATCH_DIM
    constants = {**outer, **{i.name: i for i in graph.initializer}}
    nodes = []
    for node in graph.node:
        if node.op_type == "Constant" and (value := _constant_value(node)) is not None:
            constants[node.output[0]] = value
        elif node.op_type == "ConstantOfShape" and node.input[0] in constants:
            shape = numpy_helper.to_array(constants[node.input[0]])
            if shape.ndim == 1 and shape.size > 1 and shape[0] == 1:
                rest = f"{node.output[0]}__rest"
                full = f"{node.output[0]}__shape"
                graph.initializer.append(numpy_helper.from_array(shape[1:].astype(np.int64), rest))
                nodes.append(helper.make_node("Concat", [_BATCH_VALUE, rest], [full], axis=0))
                node.input[0] = full
        elif node.op_type == "Reshape":
            _refuse_fixed_shape(node, constants)
        nodes.append(node)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _rewrite(attribute.g, constants, main)
    del graph.node[:]
    graph.node.extend(nodes)


def _constant_value(node: onnx.NodeProto) -> onnx.TensorProto | None:
    """A ``Constant`` node's tensor or integer list (how the exporter writes its constants
    without its optimiser, ``optimize=False``, and other tools too); None for its other
    forms."""
    for attribute in node.attribute:
        if attribute.name == "value":
            return attribute.t
        if attribute.name == "value_ints":
            return numpy_helper.from_array(np.array(attribute.ints, dtype=np.int64))
    return None


def _refuse_fixed_shape(node: onnx.NodeProto, constants: dict) -> None:
    """A Reshape to a constant shape with a leading 1 would keep the batch at 1: refuse the
    graph by the node's name (a shape computed in the graph is left to the check at load, which
    names the node through ONNX Runtime's error). ``Expand`` and ``Tile`` are not refused for a
    leading 1: Expand broadcasts (a 1 keeps the input's dimension) and Tile repeats once, so
    both keep whatever batch they are given (TrajGRU's warp expands its state over the links
    by ``[1, L, 1, 1, 1]``)."""
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
