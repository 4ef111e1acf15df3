"""S-HR-VQVAE with the attention context (``temporal = "attention"``): causality in time,
training and the raster export. Both heads, the residual serving and the window graph's ONNX
parity are ``test_vqvae.py``'s tests, run for both temporal stacks."""

import pytest
import torch

from models.export import PARITY_TOLERANCE, export_onnx
from models.objective import Batch, ObjectiveSettings, regular_times
from models.registry import build_model
from models.vqvae.config import VQVAEConfig
from models.vqvae.raster_export import export_raster
from models.vqvae.training import vqvae_objective
from tests.models._metadata import short_metadata

TINY = {"levels": 2, "codebook_size": 4, "latent_channels": 4, "hidden": 4,
        "pixelcnn_channels": 4, "pixelcnn_layers": 2, "temporal": "attention",
        "attention_heads": 2}  # fmt: skip
SHORT = {**TINY, "past_frames": 4, "future_frames": 4}


def test_attention_sees_only_the_window_of_past_frames():
    """Entry t of the context changes with frame s only when t - 4 < s <= t (4 past frames)."""
    torch.manual_seed(2)
    model = build_model("s_hr_vqvae", SHORT)
    pixelcnn, side, leaves = model.pixelcnn, model.latent_side, model.config.leaves
    maps = torch.randint(leaves, (2, 8, side, side))
    context = pixelcnn.context(maps)
    assert context.shape == (2, 8, 4, side, side)
    changed = maps.clone()
    changed[:, 3] = (changed[:, 3] + 1) % leaves
    after = pixelcnn.context(changed)
    for t in range(8):
        moved = not torch.equal(after[:, t], context[:, t])
        assert moved == (3 <= t < 7), t
    torch.testing.assert_close(
        pixelcnn.parallel_logits(after[:, 2]), pixelcnn.parallel_logits(context[:, 2]),
        rtol=0, atol=0,
    )  # fmt: skip
    # A rollout step computes only the last entry, and gets the same.
    torch.testing.assert_close(pixelcnn.next_context(maps[:, 2:6]), context[:, 5])


def test_a_pixelcnn_step_trains_the_attention():
    torch.manual_seed(4)
    model = build_model("s_hr_vqvae", {**SHORT, "schedule": "disjoint"})
    objective = vqvae_objective(
        model, ObjectiveSettings(total_steps=2), distributed=False, device=torch.device("cpu")
    )
    batch = Batch(torch.randn(2, 4, 1, 18, 20), torch.randn(2, 4, 1, 18, 20), regular_times(2, 4))
    before = {k: v.clone() for k, v in model.pixelcnn.temporal.state_dict().items()}
    objective.step(batch, 1)  # the PixelCNN's phase
    now = model.pixelcnn.temporal.state_dict()
    assert {k for k, v in before.items() if not torch.equal(v, now[k])} == set(before)


def test_attention_raster_sampler_exports_and_chooses_the_codes_pytorch_does(
    tmp_path, monkeypatch, memoized_export
):
    """The raster head as the host-driven stage graphs: ``export_raster`` raises unless the
    ONNX loop chooses every code ``predict_raster`` chooses, and a re-export that fails its
    check leaves the stage files that were there as they were (its stages traced once:
    ``memoized_export``)."""
    import models.vqvae.raster_export as raster_export

    torch.manual_seed(6)
    model = build_model("s_hr_vqvae", SHORT).eval()
    window = tmp_path / "vqvae.onnx"
    metadata = short_metadata("s_hr_vqvae", SHORT)
    export_onnx(model, window, metadata, optimize=False)
    paths, error = export_raster(model, window, metadata, optimize=False)
    assert len(paths) == 4
    assert error <= PARITY_TOLERANCE
    before = {path: path.read_bytes() for path in paths}
    monkeypatch.setattr(raster_export, "PARITY_TOLERANCE", -1.0)  # every difference fails
    with pytest.raises(RuntimeError, match="differs from PyTorch"):
        export_raster(model, window, metadata, optimize=False)
    assert {p: p.read_bytes() for p in paths if p.exists()} == before, "stage files lost"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [window.name, *(p.name for p in paths)]
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"temporal": "lstm"}, r"'temporal' must be one of \('conv', 'attention'\)"),
        ({"attention_heads": 3}, r"'attention_heads' \(3\) must divide 'pixelcnn_channels' \(4\)"),
        ({"attention_heads": 0}, "'attention_heads' must be >= 1, got 0"),
    ],
)
def test_bad_attention_config_is_refused(values, message):
    with pytest.raises(ValueError, match=message):
        VQVAEConfig(**{**TINY, **values})
