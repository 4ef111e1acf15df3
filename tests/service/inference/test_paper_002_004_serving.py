"""ILE (paper 004) and S-HR-VQVAE (paper 002) served: their window graphs run on the daemon's
ONNX Runtime backend and their checkpoints on the PyTorch one, and the two agree on real
windows (the GPU backends run the same graph; they are checked where a GPU exists)."""

import numpy as np
import pytest

from service.inference.backends import create_predictor
from service.inference.predictor import StreamSpec

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.timeout(300)
STREAM = StreamSpec()
TINY = {
    "ile": {"coupling_layers": 2, "hidden": 4, "latent": 8},
    "s_hr_vqvae": {"levels": 2, "codebook_size": 4, "latent_channels": 4, "hidden": 4,
                   "pixelcnn_channels": 4, "pixelcnn_layers": 2, "temporal_kernel": 2},
}  # fmt: skip


@pytest.fixture(scope="module", params=sorted(TINY))
def trained(request, tmp_path_factory, session):
    """A briefly trained tiny model of the family: (family, run directory, window graph)."""
    from models.data import SessionWindows
    from models.export import export_from_checkpoint
    from models.training import RunConfig, train

    name = request.param
    root = tmp_path_factory.mktemp(name)
    config = RunConfig(family=name, model=TINY[name], steps=3, batch_size=2, seed=1)
    train(config, SessionWindows(session, stride=16), root / "run", progress=False)
    export_from_checkpoint(root / "run", root / "model.onnx")
    return name, root / "run", root / "model.onnx"


def test_onnxruntime_and_pytorch_backends_agree(trained, session):
    name, run_dir, graph = trained
    onnx_cpu = create_predictor(
        "onnxruntime-cpu", "window", model_path=graph, stream=STREAM, threads=1
    )
    eager = create_predictor(
        "torch-cpu", "window", model_path=graph, checkpoint=run_dir, stream=STREAM, threads=1
    )
    assert name in onnx_cpu.info.model and name in eager.info.model
    scale = np.asarray(onnx_cpu.metadata.normalisation["scale"], dtype=np.float32).max()
    for start in (100, 600):
        window = session.frames[start : start + 16].astype(np.float32)
        served = onnx_cpu.predict(window, start + 15)
        assert served.shape == (16, 18, 20) and np.all(np.isfinite(served))
        np.testing.assert_allclose(
            served, eager.predict(window, start + 15), atol=float(2e-4 * scale)
        )


def test_a_window_with_nan_is_refused_by_both_backends(trained, session):
    _, run_dir, graph = trained
    window = session.frames[100:116].astype(np.float32)
    window[3, 4, 5] = np.nan
    for backend in ("onnxruntime-cpu", "torch-cpu"):
        predictor = create_predictor(
            backend, "window", model_path=graph, checkpoint=run_dir, stream=STREAM, threads=1
        )
        with pytest.raises(ValueError, match="window"):
            predictor.predict(window, 115)
