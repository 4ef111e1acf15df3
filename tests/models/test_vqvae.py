import json

import numpy as np
import onnx
import pytest
import torch

from models.export import PARITY_TOLERANCE, export_onnx, run_onnx
from models.objective import Batch, ObjectiveSettings, regular_times
from models.registry import build_model, make_config
from models.training import LOG_FILE, RunConfig, train
from models.vqvae.config import VQVAEConfig
from models.vqvae.quantizer import HierarchicalQuantiser
from models.vqvae.training import vqvae_objective
from tests.models._metadata import short_metadata

TINY = {"levels": 2, "codebook_size": 4, "latent_channels": 4, "hidden": 4,
        "pixelcnn_channels": 4, "pixelcnn_layers": 2, "temporal_kernel": 2}  # fmt: skip
SHORT = {**TINY, "past_frames": 4, "future_frames": 4}


def _hand_built() -> HierarchicalQuantiser:
    """Level 1 words at +-10 on the first axis; each parent's level-2 codebook lies on its own
    axis, so the chosen level-2 word shows which codebook was searched."""
    quantiser = HierarchicalQuantiser(levels=2, codebook_size=2, dim=2)
    with torch.no_grad():
        quantiser.tables[0].copy_(torch.tensor([[10.0, 0.0], [-10.0, 0.0]]))
        quantiser.tables[1].copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]]))
    return quantiser


def test_each_level_searches_only_the_codebook_its_parent_selects():
    # After level 1, (10.2, 0.9) leaves (0.2, 0.9): nearest overall is parent 1's (0, 1), but
    # parent 0 chose, so (1, 0) wins; (-9.1, 0.2) leaves (0.9, 0.2): nearest overall is parent
    # 0's (1, 0), but parent 1's (0, 1) wins.
    z = torch.tensor([[10.2, 0.9], [-10.0, 0.9], [-10.0, -0.9], [-9.1, 0.2]])
    out = _hand_built()(z)
    assert out.indices[0].tolist() == [0, 1, 1, 1]
    assert out.indices[1].tolist() == [0, 2, 3, 2]


def test_levels_quantise_the_residual_and_the_leaf_is_the_sum_of_its_path():
    torch.manual_seed(0)
    quantiser = HierarchicalQuantiser(levels=3, codebook_size=4, dim=3)
    z = torch.randn(50, 3)
    out = quantiser(z)
    torch.testing.assert_close(out.residuals[1], z - out.words[0])
    torch.testing.assert_close(out.residuals[2], z - out.words[0] - out.words[1])
    torch.testing.assert_close(
        quantiser.leaf_vectors()[out.indices[-1]], sum(out.words), rtol=0, atol=1e-6
    )
    error = [(z - sum(out.words[: i + 1])).square().sum() for i in range(3)]
    assert error[2] <= error[1] <= error[0]


def test_straight_through_gradient_reaches_the_encoder():
    torch.manual_seed(1)
    model = build_model("s_hr_vqvae", SHORT)
    out = model(torch.randn(1, 8, 1, 18, 20))
    out.reconstruction.square().mean().backward()
    assert model.encoder.net[0].weight.grad.abs().sum() > 0


def test_dead_words_are_restarted_from_residuals():
    quantiser = _hand_built()
    z = torch.tensor([[10.0, 0.9]] * 4)
    for _ in range(600):
        restarted = quantiser.restart_dead(quantiser(z))
        if restarted:
            break
    assert restarted > 0  # parent 1 and its children were never used


def test_pixelcnn_masks_are_causal_in_raster_order_and_time():
    torch.manual_seed(2)
    model = build_model("s_hr_vqvae", SHORT)
    pixelcnn, side, leaves = model.pixelcnn, model.latent_side, model.config.leaves
    maps = torch.randint(leaves, (1, 5, side, side))
    context = pixelcnn.context(maps)
    changed = maps.clone()
    changed[0, 3] = (changed[0, 3] + 1) % leaves
    torch.testing.assert_close(pixelcnn.context(changed)[:, :3], context[:, :3], rtol=0, atol=0)
    current = maps[:, 4]
    logits = pixelcnn.raster_logits(context[:, 3], current).flatten(2)
    for k in (0, 37, side * side - 1):
        other = current.clone()
        other.view(-1)[k] = (other.view(-1)[k] + 1) % leaves
        after = pixelcnn.raster_logits(context[:, 3], other).flatten(2)
        torch.testing.assert_close(after[..., : k + 1], logits[..., : k + 1], rtol=0, atol=0)


ATTENTION = {"temporal": "attention", "attention_heads": 2}
"""What makes TINY's PixelCNN summarise the past with attention (``test_vqvae_attention.py``)."""


@pytest.mark.parametrize("temporal", [{}, ATTENTION], ids=["conv", "attention"])
def test_both_heads_predict_and_the_first_frame_reads_exactly_its_context(temporal):
    """The first predicted frame comes from the last context entry: the causal-conv stack's
    reaches back ``context_frames`` (3 here), so the oldest of the 16 past frames does not
    move it; attention's reads the whole past, so it does."""
    torch.manual_seed(3)
    model = build_model("s_hr_vqvae", {**TINY, **temporal}).eval()
    reads_oldest = model.config.context_frames >= 16
    assert reads_oldest == (temporal == ATTENTION)
    past = torch.randn(2, 16, 1, 18, 20)
    with torch.no_grad():
        future = model.predict(past)
        assert future.shape == (2, 16, 1, 18, 20)
        assert model.predict_raster(past[:1]).shape == (1, 16, 1, 18, 20)
        leaves = model.encode(past)
        first = model.pixelcnn.parallel_logits(model.pixelcnn.context(leaves)[:, -1])
        torch.testing.assert_close(model.decode(first.argmax(1)[:, None]), future[:, :1])
        older = leaves.clone()
        older[:, 0] = (older[:, 0] + 1) % model.config.leaves  # the oldest past frame
        moved = model.pixelcnn.parallel_logits(model.pixelcnn.context(older)[:, -1])
        assert torch.equal(moved, first) != reads_oldest


def _copying_pixelcnn(model: torch.nn.Module) -> torch.nn.Module:
    """A PixelCNN whose parallel head picks the code each position had in the last frame:
    one-hot embeddings, a silent temporal stack (convolutions; or no spatial encoding and
    silent attention and spatial mixing), the identity as head."""
    leaves = model.config.leaves
    pixelcnn = model.pixelcnn
    with torch.no_grad():
        pixelcnn.embed.weight.copy_(torch.eye(leaves, model.config.pixelcnn_channels))
        if model.config.temporal == "attention":
            pixelcnn.temporal.position.zero_()
            silent = [m for layer in pixelcnn.temporal.layers for m in (layer.out, layer.spatial)]
        else:
            silent = list(pixelcnn.temporal)
        for module in silent:
            module.weight.zero_()
            module.bias.zero_()
        head = pixelcnn.parallel_head
        head.weight.copy_(torch.eye(leaves, head.in_channels)[:, :, None, None])
        head.bias.zero_()
    return model


@pytest.mark.parametrize("temporal", [{}, ATTENTION], ids=["conv", "attention"])
def test_a_residual_model_whose_codes_stay_put_serves_the_last_frame(temporal):
    """Codes unchanged: the residual model predicts persistence exactly, the absolute one the
    codec's reconstruction of the last frame (its error is what the residual form removes)."""
    config = {**TINY, "codebook_size": 2, "pixelcnn_channels": 4, **temporal}  # 4 leaves
    past = torch.randn(2, 16, 1, 18, 20, generator=torch.Generator().manual_seed(5))
    last = past[:, -1:].expand(-1, 16, -1, -1, -1)
    errors = {}
    for residual in (False, True):
        torch.manual_seed(10)
        model = _copying_pixelcnn(build_model("s_hr_vqvae", {**config, "residual": residual}))
        with torch.no_grad():
            future = model.eval().predict(past)
            leaves = model.encode(past)
            first = model.pixelcnn.parallel_logits(model.pixelcnn.context(leaves)[:, -1])
            assert torch.equal(first.argmax(1), leaves[:, -1])  # the codes do stay put
            errors[residual] = float((future - last).abs().max())
    assert errors[True] < 1e-5, errors
    assert errors[False] > 0.1, errors


@pytest.mark.parametrize("horizon", [1, 3])
def test_fewer_rollout_steps_give_the_same_first_steps(horizon):
    torch.manual_seed(6)
    full = build_model("s_hr_vqvae", TINY)
    short = build_model("s_hr_vqvae", {**TINY, "future_frames": horizon})
    short.load_state_dict(full.state_dict())
    past = torch.randn(1, 16, 1, 18, 20)
    with torch.no_grad():
        torch.testing.assert_close(short.predict(past), full.predict(past)[:, :horizon])


def test_a_step_logs_every_term():
    torch.manual_seed(4)
    model = build_model("s_hr_vqvae", SHORT)
    objective = vqvae_objective(
        model, ObjectiveSettings(total_steps=2), distributed=False, device=torch.device("cpu")
    )
    batch = Batch(torch.randn(2, 4, 1, 18, 20), torch.randn(2, 4, 1, 18, 20), regular_times(2, 4))
    logs = objective.step(batch, 0)
    expected = (
        logs["reconstruction"] + logs["codebook"] + logs["raster_ce"] + logs["parallel_ce"]
        + 0.11 * logs["joint"]
    )  # fmt: skip
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)


def test_disjoint_schedule_trains_the_codec_then_only_the_pixelcnn():
    torch.manual_seed(6)
    model = build_model("s_hr_vqvae", {**SHORT, "schedule": "disjoint"})
    objective = vqvae_objective(
        model, ObjectiveSettings(total_steps=4), distributed=False, device=torch.device("cpu")
    )
    batch = Batch(torch.randn(2, 4, 1, 18, 20), torch.randn(2, 4, 1, 18, 20), regular_times(2, 4))

    def snapshot(prefix):
        return {k: v.clone() for k, v in model.state_dict().items() if k.startswith(prefix)}

    def changed(before):
        now = model.state_dict()
        return {k for k, v in before.items() if not torch.equal(v, now[k])}

    codec, pixelcnn = ("encoder", "decoder", "quantiser"), "pixelcnn"
    before = {p: snapshot(p) for p in (*codec, pixelcnn)}
    assert [objective.phase(i) for i in range(4)] == ["codec", "codec", "pixelcnn", "pixelcnn"]
    for iteration in (0, 1):
        objective.step(batch, iteration)
    assert not changed(before[pixelcnn])
    assert all(changed(before[p]) for p in ("encoder", "decoder"))
    before = {p: snapshot(p) for p in (*codec, pixelcnn)}
    for iteration in (2, 3):
        logs = objective.step(batch, iteration)
    assert logs["loss"] == pytest.approx(logs["raster_ce"] + logs["parallel_ce"], rel=1e-5)
    assert changed(before[pixelcnn])
    assert not any(changed(before[p]) for p in codec)


def test_loss_falls_on_a_tiny_config(tmp_path, train_set):
    config = RunConfig(
        family="s_hr_vqvae", model=TINY, steps=40, batch_size=2, log_every=1, learning_rate=3e-3
    )
    train(config, train_set, tmp_path, progress=False)
    logs = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    first = sum(entry["loss"] for entry in logs[:5]) / 5
    last = sum(entry["loss"] for entry in logs[-5:]) / 5
    assert last < 0.9 * first, f"loss {first:.2f} -> {last:.2f}"


@pytest.mark.parametrize("temporal", [{}, ATTENTION], ids=["conv", "attention"])
@pytest.mark.parametrize("residual", [False, True])
def test_export_matches_pytorch_and_looks_up_codes_with_argmin(tmp_path, residual, temporal):
    torch.manual_seed(5)
    # 2 frames rolled out, not 4: the export traces the rollout once per frame, and the
    # second frame's codes are still chosen from the first's.
    config = {**SHORT, "future_frames": 2, "residual": residual, **temporal}
    model = build_model("s_hr_vqvae", config)
    path = tmp_path / "vqvae.onnx"
    metadata = short_metadata("s_hr_vqvae", config, future=2)
    assert export_onnx(model, path, metadata, optimize=False) < PARITY_TOLERANCE
    past = np.random.default_rng(1).uniform(-1, 1, (1, 4, 1, 18, 20)).astype(np.float32)
    with torch.no_grad():
        expected = model.predict(torch.from_numpy(past)).numpy()
    np.testing.assert_allclose(run_onnx(path, past), expected, atol=PARITY_TOLERANCE)
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"ArgMin", "MatMul", "Gather"} <= ops
    assert ("Softmax" in ops) == (temporal == ATTENTION)
    assert not ops & {"Loop", "Scan", "If"}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"levels": 0}, "'levels' must be >= 1, got 0"),
        ({"codebook_size": 1}, "'codebook_size' must be >= 2, got 1"),
        ({"levels": 5}, r"'codebook_size' \*\* 'levels' must be <= 4096, got 32768"),
        ({"beta": -0.1}, "'beta' must be >= 0"),
        ({"temporal_kernel": 0}, "'temporal_kernel' must be >= 1"),
        ({"grid_shape": (18,)}, r"'grid_shape' must be \(rows, cols\)"),
        ({"schedule": "sequential"}, r"'schedule' must be one of \('joint', 'disjoint'\)"),
    ],
)
def test_bad_config_is_refused(values, message):
    with pytest.raises(ValueError, match=message):
        VQVAEConfig(**values)


def test_unknown_config_key_and_wrong_input_are_refused():
    with pytest.raises(ValueError, match=r"unknown s_hr_vqvae config key\(s\) \['level'\]"):
        make_config("s_hr_vqvae", {"level": 3})
    model = build_model("s_hr_vqvae", TINY)
    with pytest.raises(ValueError, match=r"'past' must have shape \(batch, 16, 1, 18, 20\)"):
        model.predict(torch.zeros(1, 16, 18, 20))
