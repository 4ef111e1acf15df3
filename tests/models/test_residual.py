"""The residual parameterisation (``models.residual``): untrained, it predicts persistence; it
lives inside the exported graphs; files written before it load as absolute models."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from models.export import (
    PARITY_TOLERANCE,
    export_onnx,
    export_step_onnx,
    metadata_from_checkpoint,
    run_onnx,
    step_metadata,
)
from models.metadata import ModelMetadata
from models.objective import regular_times
from models.registry import build_model, family, make_config
from models.training import generator_from_checkpoint, load_checkpoint
from service.cli.app import app
from tests.models._metadata import short_metadata

SMALL = {
    "convlstm": {"hidden": (3, 4), "kernel_size": 3},
    "mr_lstm": {"hidden": (3, 4), "kernel_size": 3},
    "mr_layer_lstm": {"hidden": (3, 4), "kernel_size": 3},
    "mspn": {"hidden": 4, "widths": (4, 4, 4)},
    "trajgru": {"hidden": (2, 3, 4), "links": 2, "head_channels": 2},
    "trajgru_attention_ode": {
        "hidden": (2, 3, 4), "links": 2, "head_channels": 2, "attention_window": 2,
    },
}  # fmt: skip


def _past(frames: int = 16, seed: int = 0) -> torch.Tensor:
    """A smooth window in the normalised range: a drifting spatial pattern plus noise."""
    rng = np.random.default_rng(seed)
    rows, cols = np.meshgrid(np.arange(18), np.arange(20), indexing="ij")
    t = np.arange(frames)[:, None, None]
    wave = 0.6 * np.sin(0.4 * rows + 0.3 * cols - 0.5 * t)
    past = wave + 0.05 * rng.standard_normal((frames, 18, 20))
    return torch.from_numpy(past.astype(np.float32))[None, :, None]


def _with_departure(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with random weights in the layers a residual model starts at zero, so a
    graph's departure is not zero and parity checks the sum."""
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for parameter in model.parameters():
            if not parameter.any():
                parameter.copy_(0.3 * torch.randn(parameter.shape, generator=generator))
    return model


def _predict(model: torch.nn.Module, name: str, past: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        if family(name).irregular:
            return model.predict(past, regular_times(past.shape[0], past.shape[1]))
        return model.predict(past)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_an_untrained_residual_model_predicts_about_persistence(name):
    """Same seed, same weights but for the switch: the absolute model's output sits near the
    mean, the residual one's near the last frame, much closer to persistence."""
    past = _past()
    persistence = past[:, -1:].expand(-1, 16, -1, -1, -1)
    errors = {}
    for residual in (False, True):
        torch.manual_seed(0)
        model = build_model(name, {**SMALL[name], "residual": residual}).eval()
        future = _predict(model, name, past)
        assert future.shape == persistence.shape
        errors[residual] = float((future - persistence).square().mean())
    assert errors[True] < 0.2 * errors[False], errors
    assert errors[True] < 1e-12  # the departure layer starts at zero: exactly persistence


@pytest.mark.parametrize("name", ["mr_layer_lstm", "trajgru"])
def test_a_residual_window_graph_matches_pytorch_in_onnx_runtime(tmp_path, name):
    # 2 frames (the export traces each): the departure is added to each predicted frame alike.
    config = {**SMALL[name], "past_frames": 2, "future_frames": 2, "residual": True}
    torch.manual_seed(0)
    model = _with_departure(build_model(name, config).eval())
    metadata = short_metadata(name, config, frames=2)
    path = tmp_path / "residual.onnx"
    assert export_onnx(model, path, metadata, optimize=False) < PARITY_TOLERANCE
    past = _past(frames=2, seed=1)
    times = regular_times(1, 2) if family(name).irregular else None
    extra = () if times is None else (times.numpy(),)
    got = run_onnx(path, past.numpy(), *extra)
    np.testing.assert_allclose(got, _predict(model, name, past).numpy(), atol=PARITY_TOLERANCE)
    assert np.abs(got - past[:, -1:].numpy()).mean() > 1e-3  # the departure is in the graph


def test_a_residual_step_graph_adds_the_frame_it_is_given(tmp_path):
    """The ConvLSTM step graph's ``frame`` input is the last measured frame, so the graph
    carries it to the rollout: parity with PyTorch at export, and fed a window frame by frame
    in ONNX Runtime the stream equals the window prediction, departure included."""
    config = {**SMALL["convlstm"], "past_frames": 2, "future_frames": 2, "residual": True}
    torch.manual_seed(0)
    model = _with_departure(build_model("convlstm", config).eval())
    metadata = step_metadata(model, short_metadata("convlstm", config, frames=2))
    path = tmp_path / "residual.step.onnx"
    assert export_step_onnx(model, path, metadata) < PARITY_TOLERANCE

    past = _past(frames=2, seed=2)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    state = [np.zeros(shape, np.float32) for shape in metadata.state_shapes]
    flags = {"upper_due": np.zeros(1, np.float32), "rollout": np.ones(1, np.float32)}
    for t in range(2):
        feeds = {"frame": past[:, t].numpy(), **flags}
        future, *state = session.run(
            None, feeds | {f"state_in_{k}": s for k, s in enumerate(state)}
        )
    np.testing.assert_allclose(future, _predict(model, "convlstm", past).numpy(), atol=1e-5)
    assert np.abs(future - past[:, -1:].numpy()).mean() > 1e-3


def test_files_written_before_the_switch_load_as_absolute(tmp_path):
    """A checkpoint's model config and an ONNX file's metadata without ``residual``."""
    torch.manual_seed(0)
    model = build_model("convlstm", SMALL["convlstm"])
    old_run = {"family": "convlstm", "model": {"hidden": [3, 4], "kernel_size": 3}}
    loaded = generator_from_checkpoint({"config": old_run, "generator": model.state_dict()})
    assert loaded.config.residual is False

    values = json.loads(short_metadata("convlstm", SMALL["convlstm"]).to_json())
    del values["residual"], values["config"]["residual"]
    old = ModelMetadata.from_json(json.dumps(values))
    assert old.residual is False
    assert make_config("convlstm", old.config).residual is False


def test_the_cli_switch_reaches_the_checkpoint_and_the_exported_metadata(tmp_path):
    """``--residual`` -> the run's model config -> the metadata an export stamps (built as
    ``corticast export`` builds it; the graph itself is covered above)."""
    args = ["train", "convlstm", "--data", "synthetic:5@5", "--run", str(tmp_path), "--steps",
            "2", "--hidden", "3,4", "--batch-size", "2", "--window-stride", "16",
            "--no-adversarial", "--residual"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    state = load_checkpoint(tmp_path)
    assert state["config"]["model"]["residual"] is True
    assert generator_from_checkpoint(state).config.residual is True
    metadata = ModelMetadata.from_json(metadata_from_checkpoint(state).to_json())
    assert metadata.residual is True and metadata.config["residual"] is True
