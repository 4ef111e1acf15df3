import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from models.export import PARITY_TOLERANCE, export_onnx, run_onnx
from models.mspn.blocks import error_units
from models.mspn.config import MSPNConfig
from models.mspn.losses import (
    discriminator_ahead,
    generator_close,
    level_weights,
    pixel_loss,
    time_weights,
)
from models.mspn.training import MSPNTraining
from models.objective import Batch, regular_times
from models.registry import build_model, make_config
from models.training import LOG_FILE, RunConfig, load_checkpoint, train
from tests.models._metadata import short_metadata

TINY = {"hidden": 4, "widths": (4, 4, 4)}
SHORT = {**TINY, "past_frames": 4, "future_frames": 4}


def test_shapes_and_level_sizes():
    torch.manual_seed(0)
    model = build_model("mspn", TINY)
    past = torch.randn(2, 16, 1, 18, 20)
    output = model(past)
    assert [tuple(level.shape) for level in output.levels] == [
        (2, 32, 1, 18, 20),
        (2, 32, 1, 9, 10),
        (2, 32, 1, 5, 5),
    ]
    torch.testing.assert_close(model.predict(past), output.levels[0][:, 16:])


def test_every_level_encodes_to_the_coarsest_grid_with_a_shallower_codec_higher_up():
    model = build_model("mspn", {**SHORT, "widths": (2, 3, 5)})
    bottlenecks = {}

    def record(index):
        def hook(module, inputs, output):
            bottlenecks.setdefault(index, tuple(output[1].shape))

        return hook

    for index, level in enumerate(model.levels):
        level.codec.register_forward_hook(record(index))
    with torch.no_grad():
        model.predict(torch.zeros(1, 4, 1, 18, 20))
    assert [len(level.codec.down) for level in model.levels] == [2, 1, 0]
    assert bottlenecks == {0: (1, 5, 5, 5), 1: (1, 3, 5, 5), 2: (1, 2, 5, 5)}


@pytest.mark.parametrize("horizon", [1, 3])
def test_fewer_rollout_steps_give_the_same_first_steps(horizon):
    torch.manual_seed(1)
    full = build_model("mspn", TINY)
    short = build_model("mspn", {**TINY, "future_frames": horizon})
    short.load_state_dict(full.state_dict())
    past = torch.randn(1, 16, 1, 18, 20)
    with torch.no_grad():
        torch.testing.assert_close(short.predict(past), full.predict(past)[:, :horizon])


@pytest.mark.parametrize("changed", [0, 2, 3])
def test_a_frame_never_influences_the_predictions_made_before_it(changed):
    """Step t predicts frame t from frames before it, at every level."""
    torch.manual_seed(2)
    model = build_model("mspn", SHORT)
    past = torch.randn(1, 4, 1, 18, 20)
    other = past.clone()
    other[:, changed] += 1.0
    with torch.no_grad():
        before, after = model(past).levels, model(other).levels
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(a[:, : changed + 1], b[:, : changed + 1], rtol=0, atol=0)
        assert not torch.allclose(a[:, changed + 1 :], b[:, changed + 1 :])


def test_every_past_frame_reaches_the_prediction():
    torch.manual_seed(3)
    model = build_model("mspn", TINY)
    past = torch.randn(1, 16, 1, 18, 20, requires_grad=True)
    model.predict(past)[:, 0].sum().backward()
    reached = past.grad.abs().flatten(2).sum(-1).squeeze()
    assert torch.all(reached > 0), f"past frames without influence: {torch.nonzero(reached == 0)}"


def test_error_units_split_positive_and_negative_errors():
    frame = torch.tensor([[[[1.0, -2.0, 0.5]]]])
    prediction = torch.tensor([[[[0.0, 1.0, 0.5]]]])
    torch.testing.assert_close(
        error_units(frame, prediction),
        torch.tensor([[[[1.0, 0.0, 0.0]], [[0.0, 3.0, 0.0]]]]),
    )


def test_weights_follow_table_1():
    assert level_weights(3) == [1.0, 2 / 3, 1 / 3]
    assert level_weights(4) == [1.0, 0.75, 0.5, 0.25]
    assert time_weights(4) == [0.0, 1.0, 1.0, 1.0]


def test_pixel_loss_is_weighted_euclidean_distance_without_the_first_step():
    fine_target, coarse_target = torch.zeros(2, 3, 1, 2, 2), torch.zeros(2, 3, 1, 1, 1)
    fine, coarse = fine_target.clone(), coarse_target.clone()
    fine[:, 0] = 100.0  # step 0: lambda_t = 0
    fine[:, 1, 0, 0, :] = torch.tensor([3.0, 4.0])  # distance 5
    fine[0, 2, 0, 1, 1] = 2.0  # distance 2 in one sequence: batch mean 1
    coarse[:, 2] = -6.0  # distance 6, lambda_l = 1/2 with two levels
    loss = pixel_loss([fine, coarse], [fine_target, coarse_target])
    torch.testing.assert_close(loss, torch.tensor(5.0 + 1.0 + 0.5 * 6.0))


@pytest.mark.parametrize(
    ("real", "fake", "ahead", "close"),
    [
        (1.0, 0.995, False, True),  # c1 = 0.01, c2 = 0.02
        (1.0, 0.985, True, True),
        (1.0, 0.975, True, False),
        (-1.0, -1.005, False, True),  # tolerances use |Rs|
        (-1.0, -1.015, True, True),
        (-1.0, -1.025, True, False),
    ],
)
def test_tolerance_rule_of_algorithm_2(real, fake, ahead, close):
    assert discriminator_ahead(real, fake) is ahead
    assert generator_close(real, fake) is close


class _ScriptedDiscriminator(nn.Module):
    """Scripted mean scores. A real-and-fake batch (the discriminator phase) scores its real
    half 1 and its fake half the next ``versus`` value; any other batch the next ``alone``."""

    def __init__(self, batch: int, versus: list[float], alone: list[float]) -> None:
        super().__init__()
        self.batch, self.versus, self.alone = batch, list(versus), list(alone)
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        tie = 0.0 * (frames.flatten(2).sum(-1) + self.weight)  # keeps the graphs connected
        if frames.shape[0] == 2 * self.batch:
            fake = self.versus.pop(0)
            return tie + torch.tensor([1.0] * self.batch + [fake] * self.batch)[:, None]
        return tie + self.alone.pop(0)


def test_each_phase_stops_at_the_first_update_whose_scores_keep_the_rule():
    torch.manual_seed(4)
    training = MSPNTraining(build_model("mspn", SHORT), 100.0, device=torch.device("cpu"))
    scripted = _ScriptedDiscriminator(
        batch=2,
        # Discriminator phase: 0.995 and 0.991 are not below Rs - c1 = 0.99; 0.98 is.
        versus=[0.995, 0.991, 0.98, 0.5],
        # The true future scores 1; then 0.9 and 0.979 are not above Rs - c2 = 0.98; 0.99 is.
        alone=[1.0, 0.9, 0.979, 0.99, 0.5],
    )
    training.discriminator = training._d_parallel = scripted
    training.d_optimizer = torch.optim.Adam(scripted.parameters(), lr=1e-7)
    batch = Batch(torch.randn(2, 4, 1, 18, 20), torch.randn(2, 4, 1, 18, 20), regular_times(2, 4))
    logs = training.step(batch, 0)
    assert (logs["d_updates"], logs["g_updates"]) == (3, 3)
    assert (logs["real_score"], logs["fake_score"]) == pytest.approx((1.0, 0.99))
    assert scripted.versus == scripted.alone == [0.5]  # no update beyond the rule


def test_pixel_loss_falls_over_a_few_dozen_steps(tmp_path, train_set):
    """At 5x the default learning rate: it falls to 0.77 of its start in 30 steps (at the
    default, to 0.80 in 60)."""
    config = RunConfig(
        family="mspn",
        model=TINY,
        steps=30,
        batch_size=4,
        log_every=1,
        adversarial=False,
        learning_rate=5e-3,
    )
    train(config, train_set, tmp_path, progress=False)
    logs = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    first = sum(entry["pixel"] for entry in logs[:5]) / 5
    last = sum(entry["pixel"] for entry in logs[-5:]) / 5
    assert last < 0.9 * first, f"pixel loss {first:.2f} -> {last:.2f}"
    assert "d_loss" not in logs[0]


def test_adversarial_run_trains_and_checkpoints_the_discriminator(tmp_path, train_set):
    config = RunConfig(
        family="mspn", model=TINY, steps=2, batch_size=2, adversarial_weight=100.0, log_every=1
    )
    train(config, train_set, tmp_path, progress=False)
    logs = json.loads((tmp_path / LOG_FILE).read_text().splitlines()[-1])
    assert logs["loss"] == pytest.approx(logs["pixel"] + 100.0 * logs["adversarial"], rel=1e-5)
    assert 1 <= logs["d_updates"] <= 5 and 1 <= logs["g_updates"] <= 5
    assert {"g_optimizer", "discriminator", "d_optimizer"} <= set(
        load_checkpoint(tmp_path)["training"]
    )


def test_export_matches_pytorch(tmp_path):
    """2 frames in and out (the export traces each step, seen or predicted): the rollout
    still steps on observed frames and then on its own predictions."""
    torch.manual_seed(5)
    config = {**SHORT, "past_frames": 2, "future_frames": 2}
    model = build_model("mspn", config)
    path = tmp_path / "mspn.onnx"
    metadata = short_metadata("mspn", config, frames=2)
    assert export_onnx(model, path, metadata, optimize=False) < PARITY_TOLERANCE

    past = np.random.default_rng(1).uniform(-1, 1, (1, 2, 1, 18, 20)).astype(np.float32)
    with torch.no_grad():
        expected = model.predict(torch.from_numpy(past)).numpy()
    np.testing.assert_allclose(run_onnx(path, past), expected, atol=PARITY_TOLERANCE)
    graph = onnx.load(str(path)).graph
    assert not any(node.op_type in ("Loop", "Scan", "If") for node in graph.node)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"levels": 1, "widths": (4,)}, "'levels' must be >= 2, got 1"),
        ({"hidden": 0}, "'hidden' must be >= 1"),
        ({"widths": (4, 4)}, r"'widths' must be 3 positive widths \(one per level\), got \(4, 4\)"),
        ({"kernel_size": 2}, "'kernel_size' must be odd and >= 1, got 2"),
        ({"past_frames": 0}, "'past_frames' must be >= 1"),
        ({"grid_shape": (18,)}, r"'grid_shape' must be \(rows, cols\)"),
    ],
)
def test_bad_config_is_refused(values, message):
    with pytest.raises(ValueError, match=message):
        MSPNConfig(**values)


def test_unknown_config_key_and_wrong_input_are_refused():
    with pytest.raises(ValueError, match=r"unknown mspn config key\(s\) \['hiden'\]"):
        make_config("mspn", {"hiden": 8})
    model = build_model("mspn", TINY)
    with pytest.raises(
        ValueError, match=r"'past' must have shape \(batch, 16, 1, 18, 20\), got \(1, 16, 18, 20\)"
    ):
        model.predict(torch.zeros(1, 16, 18, 20))
