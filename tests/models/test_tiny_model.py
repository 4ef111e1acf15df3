"""The committed tiny models (``tests/data/tiny_model.py`` and its irregular sibling,
``tests/data/tiny_irregular_model.py``) still are what today's code exports.

The service tests run on committed files instead of exporting a model per run (that takes
minutes). These checks fail when the files go stale, in the ways the service tests depend on,
without the costly export: the metadata is what the exporter would write for the committed
checkpoint today (and parses: keys, ``format_version``); the graphs have the inputs, outputs
and branches a fresh export has (the short graphs ``tests/models/test_export.py`` exports
anyway); and they compute what today's model code computes from the committed weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from models.export import (
    OPSET,
    PARITY_TOLERANCE,
    ROLLOUT,
    UPPER_DUE,
    example_input,
    metadata_from_checkpoint,
    run_onnx,
    step_metadata,
)
from models.metadata import PAST_TIMES_INPUT, ModelMetadata, read_model_metadata
from models.training import generator_from_checkpoint, load_checkpoint
from tests.data import tiny_irregular_model
from tests.data.tiny_model import DIRECTORY, RUN, STEP, WINDOW

REGENERATE = "regenerate it: `python -m tests.data.tiny_model`, then commit tests/data/tiny_model"
IRREGULAR = tiny_irregular_model.DIRECTORY
REGENERATE_IRREGULAR = (
    "regenerate it: `python -m tests.data.tiny_irregular_model`, then commit "
    "tests/data/tiny_irregular_model"
)
FLOAT = onnx.TensorProto.FLOAT


def _stale(what: str) -> str:
    return f"the committed tiny model is stale: {what}; {REGENERATE}"


def _stale_irregular(what: str) -> str:
    return f"the committed tiny irregular model is stale: {what}; {REGENERATE_IRREGULAR}"


def _committed_metadata(name: str) -> ModelMetadata:
    try:
        return read_model_metadata(DIRECTORY / name)
    except ValueError as err:
        pytest.fail(_stale(f"{name}'s metadata no longer parses ({err})"))


def _rebuilt(directory: Path, stale: Callable[[str], str]) -> tuple[dict, torch.nn.Module]:
    """The committed run's checkpoint in ``directory`` and its generator, rebuilt by today's
    model code; a failure says how to make the files again (``stale``)."""
    state = load_checkpoint(directory / RUN)
    try:
        generator = generator_from_checkpoint(state)
    except (RuntimeError, KeyError, TypeError, ValueError) as err:
        pytest.fail(stale(f"today's model code cannot load its checkpoint ({err})"))
    return state, generator


@pytest.fixture(scope="module")
def checkpoint():
    """The committed run's checkpoint and its generator, rebuilt by today's model code."""
    return _rebuilt(DIRECTORY, _stale)


def _without_code_revision(metadata: ModelMetadata) -> ModelMetadata:
    provenance = {k: v for k, v in metadata.provenance.items() if k != "code_revision"}
    return dataclasses.replace(metadata, provenance=provenance)


def _interface(path: Path) -> tuple[list, list]:
    """A graph's inputs and outputs as (name, element type, shape), in order."""
    graph = onnx.load(str(path), load_external_data=False).graph

    def described(values) -> list:
        tensors = [(v.name, v.type.tensor_type) for v in values]
        return [(name, t.elem_type, [d.dim_value for d in t.shape.dim]) for name, t in tensors]

    return described(graph.input), described(graph.output)


def _declared_interface(metadata: ModelMetadata) -> tuple[list, list]:
    """The inputs and outputs ``models.export`` gives a graph that ``metadata`` describes."""
    rows, cols = metadata.grid_rows, metadata.grid_cols
    future = (metadata.output_name, FLOAT, [1, metadata.future_frames, 1, rows, cols])
    if metadata.graph == "window":
        inputs = [(metadata.input_name, FLOAT, [1, metadata.past_frames, 1, rows, cols])]
        if metadata.irregular:
            inputs.append((PAST_TIMES_INPUT, FLOAT, [1, metadata.past_frames]))
        return inputs, [future]
    states = list(enumerate(metadata.state_shapes))
    inputs = [
        (metadata.input_name, FLOAT, [1, 1, rows, cols]),
        *((f"state_in_{k}", FLOAT, shape) for k, shape in states),
        (UPPER_DUE, FLOAT, [1]),
        (ROLLOUT, FLOAT, [1]),
    ]
    return inputs, [future, *((f"state_out_{k}", FLOAT, shape) for k, shape in states)]


def _outline(path: Path) -> dict:
    """What the service relies on beyond the interface: the branches (one If per stage that can
    be skipped), the opset, who wrote it, which metadata entries it carries."""
    model = onnx.load(str(path), load_external_data=False)
    return {
        "branches": sum(node.op_type == "If" for node in model.graph.node),
        "loops": sum(node.op_type in ("Loop", "Scan") for node in model.graph.node),
        "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        "producer": model.producer_name,
        "metadata_keys": sorted(entry.key for entry in model.metadata_props),
    }


def test_its_metadata_is_what_the_exporter_writes_for_its_checkpoint_today(checkpoint):
    state, generator = checkpoint
    window, step = _committed_metadata(WINDOW), _committed_metadata(STEP)
    expected = metadata_from_checkpoint(state)
    assert _without_code_revision(window) == _without_code_revision(expected), _stale(
        "the window graph's metadata differs from what export writes today"
    )
    assert step == step_metadata(generator, window), _stale(
        "the step graph's metadata differs from what export writes today"
    )


@pytest.mark.parametrize(("name", "graph"), [(WINDOW, "window"), (STEP, "step")])
def test_its_graphs_have_the_interface_and_branches_of_a_fresh_export(short_export, name, graph):
    fresh = short_export("mr_layer_lstm", graph)
    assert _interface(fresh.path) == _declared_interface(fresh.metadata), (
        "models.export no longer writes the interface _declared_interface describes: update it, "
        f"then {REGENERATE}"
    )
    committed = DIRECTORY / name
    assert _interface(committed) == _declared_interface(_committed_metadata(name)), _stale(
        f"{name}'s inputs or outputs are not what export writes today"
    )
    assert _outline(committed) == _outline(fresh.path), _stale(
        f"{name}'s branches, opset, producer or metadata entries are not what export writes today"
    )
    assert _outline(committed)["opset"] == OPSET


def test_its_window_graph_computes_what_the_model_code_computes(checkpoint):
    _, generator = checkpoint
    past = example_input((1, 16, 1, 18, 20), seed=3)
    with torch.no_grad():
        expected = generator.predict(past).numpy()
    got = run_onnx(DIRECTORY / WINDOW, past.numpy())
    np.testing.assert_allclose(
        got, expected, atol=PARITY_TOLERANCE, err_msg=_stale("its window graph's output differs")
    )


def test_its_step_graph_computes_what_the_model_code_computes(checkpoint):
    """At both phases of the temporal skip; without the rollout, the same state and no future."""
    _, generator = checkpoint
    metadata = _committed_metadata(STEP)
    frame = example_input((1, 1, 18, 20), seed=4)
    state = [example_input(tuple(s), seed=5 + k) for k, s in enumerate(metadata.state_shapes)]
    session = ort.InferenceSession(str(DIRECTORY / STEP), providers=["CPUExecutionProvider"])
    for due in (0.0, 1.0):
        with torch.no_grad():
            pairs = [(state[i], state[i + 1]) for i in range(0, len(state), 2)]
            future, new_state = generator.stream_step(frame, pairs, due == 1.0)
        expected = [future.numpy(), *(t.numpy() for pair in new_state for t in pair)]
        feeds = {"frame": frame.numpy(), UPPER_DUE: np.array([due], np.float32)}
        feeds |= {f"state_in_{k}": s.numpy() for k, s in enumerate(state)}
        got = session.run(None, feeds | {ROLLOUT: np.ones(1, np.float32)})
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(
                g, e, atol=PARITY_TOLERANCE, err_msg=_stale("its step graph's output differs")
            )
        skipped, *skipped_state = session.run(None, feeds | {ROLLOUT: np.zeros(1, np.float32)})
        assert not skipped.any()
        for g, e in zip(skipped_state, got[1:], strict=True):
            np.testing.assert_array_equal(g, e)


def test_its_files_are_the_four_it_needs_and_stay_small():
    files = [path for path in DIRECTORY.rglob("*") if path.is_file()]
    sizes = {str(path.relative_to(DIRECTORY)): path.stat().st_size for path in files}
    assert sorted(sizes) == sorted([WINDOW, STEP, f"{RUN}/checkpoint.pt", f"{RUN}/run.json"])
    assert sum(sizes.values()) < 1 << 20, sizes


# -- the tiny model that takes irregular input (tests/data/tiny_irregular_model.py) -----------
@pytest.fixture(scope="module")
def irregular_checkpoint():
    """The committed irregular run's checkpoint and its generator, rebuilt by today's code."""
    return _rebuilt(IRREGULAR, _stale_irregular)


def test_the_irregular_models_metadata_is_what_the_exporter_writes_today(irregular_checkpoint):
    state, _ = irregular_checkpoint
    try:
        committed = read_model_metadata(IRREGULAR / WINDOW)
    except ValueError as err:
        pytest.fail(_stale_irregular(f"its metadata no longer parses ({err})"))
    assert committed.irregular
    assert _without_code_revision(committed) == _without_code_revision(
        metadata_from_checkpoint(state)
    ), _stale_irregular("its metadata differs from what export writes today")


def test_the_irregular_graph_has_the_interface_and_outline_of_a_fresh_export(short_export):
    """Its interface is the one ``models.export`` gives an irregular window graph; the rest of
    the outline (no branches or loops, opset, producer, metadata entries) is any fresh window
    graph's."""
    committed = IRREGULAR / WINDOW
    assert _interface(committed) == _declared_interface(read_model_metadata(committed)), (
        _stale_irregular("its inputs or outputs are not what export writes today")
    )
    fresh = short_export("mr_layer_lstm", "window").path
    assert _outline(committed) == _outline(fresh), _stale_irregular(
        "its branches, opset, producer or metadata entries are not what export writes today"
    )


def test_the_irregular_graph_computes_what_the_model_code_computes(irregular_checkpoint):
    """On irregular times (frames 3, 4 and 10 back lost), where the attention reads them."""
    _, generator = irregular_checkpoint
    past = example_input((1, 16, 1, 18, 20), seed=3)
    received = [t for t in range(-20, 1) if t not in (-3, -4, -10)][-16:]
    times = torch.tensor([received], dtype=torch.float32)
    with torch.no_grad():
        expected = generator.predict(past, times).numpy()
    got = run_onnx(IRREGULAR / WINDOW, past.numpy(), times.numpy())
    np.testing.assert_allclose(
        got, expected, atol=PARITY_TOLERANCE, err_msg=_stale_irregular("its output differs")
    )


def test_the_irregular_models_files_are_the_three_it_needs_and_stay_small():
    files = [path for path in IRREGULAR.rglob("*") if path.is_file()]
    sizes = {str(path.relative_to(IRREGULAR)): path.stat().st_size for path in files}
    assert sorted(sizes) == sorted([WINDOW, f"{RUN}/checkpoint.pt", f"{RUN}/run.json"])
    assert sum(sizes.values()) < 2 << 20, sizes  # 2 MiB: the unrolled 32-frame graph
