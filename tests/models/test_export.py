import dataclasses
import json

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from models.export import (
    NCHWC_BLOCKS,
    PARITY_TOLERANCE,
    localise_branch_conv_constants,
    run_onnx,
)
from models.metadata import METADATA_KEY, ModelMetadata, int8_guard, read_model_metadata
from tests.models._metadata import short_metadata
from tests.models._short_export import SHORT


def _metadata(family: str) -> ModelMetadata:
    return short_metadata(family, SHORT)


@pytest.mark.parametrize("family", ["convlstm", "mr_lstm", "mr_layer_lstm"])
def test_export_matches_pytorch_and_carries_its_metadata(short_export, family):
    made = short_export(family, "window")
    model, metadata, path = made.model, made.metadata, made.path
    assert made.error < PARITY_TOLERANCE
    assert read_model_metadata(path) == metadata

    frames = SHORT["past_frames"]
    past = np.random.default_rng(1).uniform(-1, 1, (1, frames, 1, 18, 20)).astype(np.float32)
    with torch.no_grad():
        expected = model.predict(torch.from_numpy(past)).numpy()
    got = run_onnx(path, past)
    assert got.shape == (1, frames, 1, 18, 20)
    np.testing.assert_allclose(got, expected, atol=PARITY_TOLERANCE)

    graph = onnx.load(str(path))
    assert not path.with_name(path.name + ".data").exists()  # one self-contained file
    weights = [init.raw_data for init in graph.graph.initializer if init.raw_data]
    assert len(weights) == len(set(weights)), "a weight is stored more than once"
    assert not any(node.metadata_props for node in graph.graph.node)
    assert graph.opset_import[0].version >= 17
    assert not any(node.op_type in ("Loop", "Scan") for node in graph.graph.node)
    assert {i.name for i in graph.graph.input} == {"past"}


def test_metadata_json_round_trip_is_exact():
    metadata = _metadata("convlstm")
    assert ModelMetadata.from_json(metadata.to_json()) == metadata


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(extra=1), r"unknown keys \['extra'\]"),
        (lambda d: d.update(format_version=99), "format_version must be 1, got 99"),
        (lambda d: d.pop("family"), "incomplete"),
    ],
)
def test_bad_metadata_is_refused(mutate, message):
    values = json.loads(_metadata("convlstm").to_json())
    mutate(values)
    with pytest.raises(ValueError, match=message):
        ModelMetadata.from_json(json.dumps(values))


@pytest.mark.parametrize(
    ("key", "value", "rule"),
    [
        ("pitch_m", None, "a number"),
        ("sample_rate_hz", "277.78", "a number"),
        ("past_frames", "16", "an integer"),
        ("past_frames", True, "an integer"),
        ("config", [], "a JSON object"),
        ("provenance", None, "a JSON object"),
        ("irregular", "no", "true or false"),
        ("family", 5, "a string"),
        ("state_shapes", [["a"]], "a list of lists of integers"),
    ],
)
def test_metadata_of_the_wrong_type_is_refused_naming_the_key(key, value, rule):
    """A hand-edited file: the key, the rule and the value, not a TypeError or AttributeError
    where the value is first used (at start, a traceback; on a swap, 'no inference backend
    can run here')."""
    values = json.loads(_metadata("convlstm").to_json())
    values[key] = value
    with pytest.raises(ValueError, match=rf"model metadata '{key}' must be {rule}, got "):
        ModelMetadata.from_json(json.dumps(values))


@pytest.mark.parametrize("record", ["int8", ["int8"], {"precision": "int4"}, {}])
def test_a_quantization_record_that_is_not_one_is_refused_naming_it(record):
    """A hand-edited ``provenance.quantization``: refused naming it, not an AttributeError
    from ``precision`` when the daemon loads the file (before, each loaded: the daemon's start
    checks passed it, and building the predictor raised ``'str' object has no attribute
    'get'``), nor a precision no backend reports."""
    values = json.loads(_metadata("convlstm").to_json())
    values["provenance"]["quantization"] = record
    with pytest.raises(ValueError, match=r"model metadata 'provenance.quantization' must be "):
        ModelMetadata.from_json(json.dumps(values))


@pytest.mark.parametrize("scores", [["window"], "0.1"])
def test_an_int8_guard_record_of_the_wrong_shape_is_no_guard(scores):
    """The daemon offers or serves an int8 graph only on its guard record, and catches the
    ValueError that says why not; a hand-edited record of the wrong shape must say so too
    (before, ``'list' object has no attribute 'get'``: the serving probe, and the daemon's
    start under ``serving = "auto"``, crashed)."""
    record = {"precision": "int8", "guard": {"pooled_psnr_db": scores, "max_psnr_drop_db": 0.1}}
    metadata = dataclasses.replace(_metadata("convlstm"), provenance={"quantization": record})
    with pytest.raises(ValueError, match="holds no guard scores for a window graph"):
        int8_guard(metadata, "window")


def _int8_record(fp32: float, int8: float, limit: float) -> ModelMetadata:
    scores = {"window": {"fp32": fp32, "int8": int8}}
    record = {"precision": "int8", "guard": {"pooled_psnr_db": scores, "max_psnr_drop_db": limit}}
    return dataclasses.replace(_metadata("convlstm"), provenance={"quantization": record})


def test_an_int8_guard_record_is_judged_by_the_tighter_of_its_own_limit_and_the_served_one():
    """A record made with a wider limit than the guard's 0.1 dB (``Int8Settings`` in Python, or
    an edit) is judged by 0.1 dB: before, a graph 0.3 dB below fp32 under a recorded 0.5 dB
    limit was served. A tighter recorded limit stays the one applied."""
    with pytest.raises(
        ValueError,
        match=r"fails the limit served \(it allows 0.5\): pooled "
        r"PSNR 29.70 dB is 0.30 dB below fp32's 30.00 dB \(limit 0.1 dB\)",
    ):
        int8_guard(_int8_record(30.0, 29.7, 0.5), "window")
    assert int8_guard(_int8_record(30.0, 29.95, 0.5), "window") == pytest.approx((-0.05, 0.1))
    with pytest.raises(ValueError, match=r"fails its own limit: .* \(limit 0.02 dB\)"):
        int8_guard(_int8_record(30.0, 29.95, 0.02), "window")
    assert int8_guard(_int8_record(30.0, 30.01, 0.02), "window") == pytest.approx((0.01, 0.02))


def test_metadata_must_be_present_and_json():
    with pytest.raises(ValueError, match="has no 'corticast' metadata"):
        ModelMetadata.from_custom_map({"other": "x"})
    with pytest.raises(ValueError, match="not valid JSON"):
        ModelMetadata.from_custom_map({METADATA_KEY: "{"})


@pytest.mark.parametrize(("family", "branches"), [("convlstm", 1), ("mr_layer_lstm", 2)])
def test_a_step_graph_branches_on_rollout_and_on_each_phase_of_a_temporal_skip(
    short_export, family, branches
):
    """The step graph's rollout sits behind an If on ``rollout`` (0.0: the state alone, the
    future zero); MR-layer's encoder step is an If over the two phases of its upper layer too.
    The weights are stored outside the branches, but for the copies of its convolutions'
    constants a branch holds (``test_a_step_graph_runs_its_gate_convolutions_blocked``).
    ONNX Runtime matches the PyTorch step at both phases, and without the rollout the state is
    exactly the one with it. The metadata gives the state's shapes, in the order of the graph's
    ``state_in_<k>`` inputs."""
    made = short_export(family, "step")
    model, metadata, path = made.model, made.metadata, made.path
    assert made.error < PARITY_TOLERANCE
    assert metadata.state_shapes == [[1, 3, 18, 20]] * 2 + [[1, 4, 18, 20]] * 2  # (h, c) per layer

    graph = onnx.load(str(path)).graph
    states = [f"state_in_{k}" for k in range(4)]
    assert [i.name for i in graph.input] == ["frame", *states, "upper_due", "rollout"]
    ifs = [node for node in graph.node if node.op_type == "If"]
    assert len(ifs) == branches
    for _, branch in _subgraphs(graph):
        read_by_convs = {name for n in branch.node if n.op_type == "Conv" for name in n.input[1:]}
        assert {i.name for i in branch.initializer} <= read_by_convs

    rng = np.random.default_rng(2)
    frame = rng.standard_normal((1, 1, 18, 20)).astype(np.float32)
    state = [rng.standard_normal(tuple(s)).astype(np.float32) for s in metadata.state_shapes]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for due in (0.0, 1.0):
        flat = [torch.from_numpy(s) for s in state]
        with torch.no_grad():
            expected, expected_state = model.stream_step(
                torch.from_numpy(frame),
                [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)],
                due == 1.0,
            )
        feeds = {"frame": frame, "upper_due": np.array([due], np.float32)}
        feeds |= {f"state_in_{k}": s for k, s in enumerate(state)}
        future, *new_state = session.run(None, feeds | {"rollout": np.ones(1, np.float32)})
        np.testing.assert_allclose(future, expected.numpy(), atol=PARITY_TOLERANCE)
        expected_flat = [t.numpy() for pair in expected_state for t in pair]
        for got, want in zip(new_state, expected_flat, strict=True):
            np.testing.assert_allclose(got, want, atol=PARITY_TOLERANCE)
        skipped, *skipped_state = session.run(None, feeds | {"rollout": np.zeros(1, np.float32)})
        assert not skipped.any()
        for got, want in zip(skipped_state, new_state, strict=True):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("family", ["convlstm", "mr_layer_lstm"])
@pytest.mark.parametrize("kind", ["window", "step"])
def test_no_exported_convolution_reads_a_concatenation(short_export, family, kind):
    """The gates convolve the input and the hidden state apart (``ConvLSTMCell``): a
    concatenation of the two would put the lower layer's 1 + C channels outside ONNX
    Runtime's NCHWc blocks. In a step graph's If branches too (traced by dynamo, where the
    export form once went unnoticed)."""
    main = onnx.load(str(short_export(family, kind).path)).graph
    nodes = [node for graph in [main, *(g for _, g in _subgraphs(main))] for node in graph.node]
    concatenated = {out for node in nodes if node.op_type == "Concat" for out in node.output}
    kernel = onnx.helper.get_node_attr_value
    gates = [  # the heads are 1x1 convolutions of both layers' states, concatenated
        node for node in nodes
        if node.op_type == "Conv" and kernel(node, "kernel_shape") != [1, 1]
    ]  # fmt: skip
    assert gates and not any(node.input[0] in concatenated for node in gates)


def test_a_step_graph_runs_its_gate_convolutions_blocked(short_export, tmp_path):
    """The step graph's cells run inside Ifs, and ONNX Runtime's NCHWc transformer reads a
    convolution's weight and bias from the convolution's own graph only: each branch carries
    its own copy of those constants (``models.export.localise_branch_conv_constants``) for
    the convolutions whose output channels fill NCHWc blocks (8 channels without AVX-512, 16
    with), here the upper layer's gates (4 x 4 channels; the lower layer's 4 x 3 and the
    1-channel heads keep the main graph's). Without the copy ONNX Runtime ran every gate
    convolution with a bias as im2col + sgemm."""
    path = short_export("mr_layer_lstm", "step").path
    graph = onnx.load(str(path)).graph
    blocked = []
    for _, branch in _subgraphs(graph):
        own = {i.name for i in branch.initializer}
        for node in (n for n in branch.node if n.op_type == "Conv"):
            if _output_channels(graph, branch, node) % min(NCHWC_BLOCKS) == 0:
                blocked.append(node)
                assert set(node.input[1:]) <= own, node.name
    assert blocked  # the upper layer's gate convolutions, in each branch that runs the layer

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(options.optimized_model_filepath).graph
    nodes = [(g, node) for _, g in _subgraphs(optimized) for node in g.node]
    if not any(node.domain == "com.microsoft.nchwc" for _, node in nodes):
        pytest.skip("ONNX Runtime has no NCHWc kernels on this CPU")
    unblocked = [
        node.name for g, node in nodes
        if node.op_type in {"Conv", "FusedConv"} and node.domain != "com.microsoft.nchwc"
        and _output_channels(optimized, g, node) % max(NCHWC_BLOCKS) == 0  # blocked on any host
    ]  # fmt: skip
    assert not unblocked


def _subgraphs(graph: onnx.GraphProto) -> list[tuple[str, onnx.GraphProto]]:
    """Every subgraph (If branch) of ``graph``, nested ones too, with its attribute name."""
    found = []
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                found += [(attribute.name, attribute.g), *_subgraphs(attribute.g)]
    return found


def _output_channels(main: onnx.GraphProto, branch: onnx.GraphProto, conv: onnx.NodeProto) -> int:
    """A convolution's output channels, from its weight's shape (an initialiser of its branch
    or the main graph, or the value information of a weight sliced in the branch)."""
    weight = conv.input[1]
    for tensor in [*branch.initializer, *main.initializer]:
        if tensor.name == weight:
            return tensor.dims[0]
    for info in [*branch.value_info, *main.value_info]:
        if info.name == weight:
            return info.type.tensor_type.shape.dim[0].dim_value
    raise AssertionError(f"no shape for {conv.name}'s weight {weight}")


@pytest.mark.parametrize(
    ("channels", "localised"), [(8, True), (24, True), (16, True), (12, False)]
)
def test_branch_convolutions_get_their_own_constants_where_some_host_blocks_them(
    channels, localised
):
    """A host without AVX-512 blocks 8 channels at a time, one with it 16: a convolution inside
    an If branch whose output channels are a multiple of 8 gets the branch's own copy of its
    weight and bias; one of 12 channels, which no host blocks, keeps reading the main graph's."""
    weight = numpy_helper.from_array(np.ones((channels, 1, 3, 3), np.float32), "weight")
    bias = numpy_helper.from_array(np.zeros(channels, np.float32), "bias")
    conv = helper.make_node("Conv", ["x", "weight", "bias"], ["y"], pads=[1, 1, 1, 1])
    then_branch = helper.make_graph(
        [conv], "then", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    )
    else_branch = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["z"])], "else", [],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
    )  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node("If", ["flag"], ["out"], then_branch=then_branch,
                          else_branch=else_branch)],
        "main",
        [helper.make_tensor_value_info("flag", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        initializer=[weight, bias],
    )  # fmt: skip
    model = ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    copies = localise_branch_conv_constants(model.graph)
    branch = ir.to_proto(model).graph.node[0].attribute
    then_graph = next(a.g for a in branch if a.name == "then_branch")
    own = {init.name for init in then_graph.initializer}
    assert copies == (2 if localised else 0)
    assert (set(then_graph.node[0].input[1:]) <= own) is localised


def test_an_export_that_fails_parity_leaves_the_model_that_was_there(
    short_export, tmp_path, monkeypatch, memoized_export
):
    """Re-exporting over a deployed model: the old file is replaced only by a checked one, in
    one rename, so a failed check (or a crash) leaves the old model, and no scratch file. (The
    model's trace is reused where this worker exported it: ``memoized_export``.)"""
    import models.export as export

    made = short_export("mr_layer_lstm", "window")
    out = tmp_path / "model.onnx"
    out.write_bytes(made.path.read_bytes())
    monkeypatch.setattr(export, "PARITY_TOLERANCE", -1.0)  # every difference fails the check
    with pytest.raises(RuntimeError, match="differs from PyTorch"):
        export.export_onnx(made.model, out, made.metadata, optimize=False)
    assert out.exists(), "the model that was there was removed"
    assert out.read_bytes() == made.path.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]
    monkeypatch.undo()
    export.export_onnx(made.model, out, made.metadata, optimize=False)
    assert read_model_metadata(out) == made.metadata
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_rewriting_metadata_replaces_the_file_whole(tmp_path):
    """Stamping a check into a deployed model writes a new file and renames it into place: a
    reader that opened the old file (here a hard link to it) keeps it whole, and a crash
    mid-write leaves the old model, never a truncated one under its name."""
    import os

    from models.held_out_check import stamp_check
    from tests.data.tiny_model import copy_tiny_model

    _, window, _ = copy_tiny_model(tmp_path / "model")
    window.chmod(0o640)
    before = window.read_bytes()
    held = tmp_path / "held.onnx"
    os.link(window, held)
    stamp_check([window], {"data": "run-validation", "windows": 1})
    assert held.read_bytes() == before, "the file was rewritten in place"
    assert read_model_metadata(window).provenance["held_out_check"]["windows"] == 1
    assert window.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in window.parent.iterdir()) == [
        "model.onnx",
        "model.step.onnx",
        "run",
    ]
