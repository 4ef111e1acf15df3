import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch.nn.functional import pad

from models.batch_graph import BATCH_SIZES, batched_session
from models.export import PARITY_TOLERANCE, export_onnx, run_onnx
from models.metadata import PAST_TIMES_INPUT, ModelMetadata, read_model_metadata
from models.registry import build_model, family, make_config
from models.training import LOG_FILE, RunConfig, train
from models.trajgru._warp import warp
from models.trajgru.ode import ODEBlock
from tests.models._metadata import short_metadata

NAMES = ["trajgru", "trajgru_attention", "trajgru_ode", "trajgru_attention_ode"]
TIMED = NAMES[1:]
TINY = {"hidden": (2, 3, 4), "links": 2, "head_channels": 2, "attention_window": 2}
SHORT = {**TINY, "past_frames": 4, "future_frames": 4}


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, SHORT).eval()


def _inputs(batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    past = torch.randn(batch, 4, 1, 18, 20, generator=torch.Generator().manual_seed(1))
    return past.clamp(-1, 1), torch.arange(-3, 1.0).expand(batch, 4).clone()


def _predict(model: torch.nn.Module, past: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.predict(past, times)


@pytest.mark.parametrize("name", NAMES)
def test_registered_as_irregular_with_the_contract_shapes(name):
    assert family(name).irregular
    assert make_config(name).past_frames == make_config(name).future_frames == 16
    past, times = _inputs()
    assert _predict(_model(name), past, times).shape == (2, 4, 1, 18, 20)
    full = build_model(name, TINY).eval()
    past = torch.zeros(1, 16, 1, 18, 20)
    assert _predict(full, past, torch.arange(-15, 1.0)[None]).shape == (1, 16, 1, 18, 20)


@pytest.mark.parametrize("name", NAMES)
def test_encoder_is_causal(name):
    model = _model(name)
    past, times = _inputs(batch=1)
    changed = past.clone()
    changed[:, -1] += 1.0
    with torch.no_grad():
        _, before = model.encoder(pad(past, model._padding), times)
        _, after = model.encoder(pad(changed, model._padding), times)
    for level in range(3):
        for k in range(3):
            torch.testing.assert_close(before[level][k], after[level][k], rtol=0, atol=0)
        assert not torch.equal(before[level][3], after[level][3])


def test_plain_trajgru_ignores_the_times():
    model = _model("trajgru")
    past, times = _inputs()
    dropped = times - torch.tensor([3.0, 2.0, 1.0, 0.0])
    torch.testing.assert_close(
        _predict(model, past, times), _predict(model, past, dropped), rtol=0, atol=0
    )


@pytest.mark.parametrize("name", TIMED)
def test_proposed_models_depend_on_the_times(name):
    model = _model(name)
    past, times = _inputs()
    regular = _predict(model, past, times)
    newest_late = times - 1.0  # the newest frame received is one period old
    older = times - torch.tensor([3.0, 2.0, 1.0, 0.0])  # gaps inside the window
    for other in (newest_late, older):
        assert (_predict(model, past, other) - regular).abs().max() > 1e-6


@pytest.mark.parametrize("solver", ["euler", "rk4"])
def test_ode_with_a_zero_gap_leaves_the_state_unchanged(solver):
    torch.manual_seed(0)
    block = ODEBlock(3, solver, steps=2)
    state = torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(block.evolve(state, torch.zeros(2)), state, rtol=0, atol=0)
        assert not torch.equal(block.evolve(state, torch.ones(2)), state)


def test_warp_with_zero_flow_is_the_identity_and_one_pixel_flow_shifts_by_one():
    state = torch.randn(2, 3, 6, 7)
    flow = torch.zeros(2, 2, 2, 6, 7)  # two links
    torch.testing.assert_close(warp(state, flow), state.repeat(1, 2, 1, 1), atol=1e-5, rtol=0)
    flow[:, 0, 0] = 1.0  # link 0 reads one column to the right
    flow[:, 1, 1] = -1.0  # link 1 reads one row up
    warped = warp(state, flow)
    right, up = warped[:, :3], warped[:, 3:]
    torch.testing.assert_close(right[..., :-1], state[..., 1:], atol=1e-5, rtol=0)
    assert right[..., -1].abs().max() < 1e-5  # zeros padding outside the grid
    torch.testing.assert_close(up[..., 1:, :], state[..., :-1, :], atol=1e-5, rtol=0)
    assert up[..., 0, :].abs().max() < 1e-5


def test_loss_falls_over_a_few_dozen_steps(tmp_path, train_set):
    # The thesis' 1e-4 barely moves a tiny model in 20 steps: this checks the loop learns.
    # 10 steps: the last five's mean loss is 0.61 of the first five's (0.65 after 20).
    config = RunConfig(
        family="trajgru_attention_ode",
        model=TINY,
        steps=10,
        batch_size=2,
        log_every=1,
        learning_rate=3e-3,
    )
    train(config, train_set, tmp_path, progress=False)
    logs = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    first = sum(entry["loss"] for entry in logs[:5]) / 5
    last = sum(entry["loss"] for entry in logs[-5:]) / 5
    assert last < 0.95 * first, f"loss {first:.4f} -> {last:.4f}"
    assert {"mse", "mae", "ssim"} <= set(logs[0])


ROLLOUT = {**SHORT, "future_frames": 2}
"""``SHORT`` predicting 2 frames: the export unrolls the forecaster, whose steps cost most of
its trace, once per frame; the 4 past frames still prime each attention's memory in full
(``attention_window`` + 2) and the second frame's attends across the first's."""


def _metadata(name: str) -> ModelMetadata:
    return short_metadata(name, ROLLOUT, future=2)


@pytest.mark.parametrize("name", NAMES)
def test_onnx_export_matches_pytorch_on_irregular_times(tmp_path, name):
    torch.manual_seed(0)
    model = build_model(name, ROLLOUT).eval()
    path = tmp_path / f"{name}.onnx"
    metadata = _metadata(name)
    assert export_onnx(model, path, metadata, optimize=False) < PARITY_TOLERANCE
    assert read_model_metadata(path) == metadata
    past, _ = _inputs(batch=1)
    times = torch.tensor([[-6.0, -4.0, -3.0, -1.0]])  # frames 0 and the odd ones dropped
    got = run_onnx(path, past.numpy(), times.numpy())
    np.testing.assert_allclose(got, _predict(model, past, times).numpy(), atol=PARITY_TOLERANCE)


@pytest.mark.slow  # an optimised export, as corticast export writes it: ~10 s on two cores
def test_the_export_runs_batched_with_each_windows_batch_1_future(tmp_path):
    """The variant with every part (warp, attention over times, ODE) as ``corticast export``
    writes it (optimised, batch 1), run batched by ``models.batch_graph`` as ``replay --fast``
    and ``evaluate`` run it. Before, it was refused: the warp reshaped to a batch-1 shape and
    the forecaster's times were folded into batch-1 constants."""
    name, frames = "trajgru_attention_ode", 2  # 2 frames: the same graph, unrolled less
    config = {**TINY, "past_frames": frames, "future_frames": frames}
    torch.manual_seed(0)
    model = build_model(name, config).eval()
    path = tmp_path / f"{name}.onnx"
    export_onnx(model, path, short_metadata(name, config, frames))
    count = BATCH_SIZES[0] + 1  # one full batch and one alone
    rng = np.random.default_rng(2)
    past = rng.uniform(-1, 1, (count, frames, 1, 18, 20)).astype(np.float32)
    # Each window its own received times: the newest frame 0-2 periods late, gaps of 1-3.
    newest = -rng.integers(0, 3, (count, 1))
    back = np.cumsum(rng.integers(1, 4, (count, frames - 1)), axis=1)[:, ::-1]
    times = np.concatenate([newest - back, newest], axis=1).astype(np.float32)
    together = batched_session(path).run(None, {"past": past, PAST_TIMES_INPUT: times})[0]
    single = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    alone = np.concatenate(
        [
            single.run(None, {"past": p[None], PAST_TIMES_INPUT: t[None]})[0]
            for p, t in zip(past, times, strict=True)
        ]
    )
    assert together.shape == (count, frames, 1, 18, 20)
    np.testing.assert_array_equal(together, alone)


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"hidden": (4, 4)}, "hidden"),
        ({"links": 0}, "links"),
        ({"attention_window": 0}, "attention_window"),
        ({"ode_solver": "dopri5"}, "ode_solver"),
        ({"ode_steps": 1.5}, "ode_steps"),
        ({"decoder_attention_layers": (0,)}, "decoder_attention_layers"),
        ({"attention": "yes"}, "attention"),
        ({"past_frames": 0}, "past_frames"),
        ({"grid_shape": (18,)}, "grid_shape"),
    ],
)
def test_config_errors_name_the_key(values, key):
    with pytest.raises(ValueError, match=f"'{key}'"):
        make_config("trajgru", values)
    with pytest.raises(ValueError, match=r"unknown trajgru_ode config key\(s\) \['width'\]"):
        make_config("trajgru_ode", {"width": 3})
