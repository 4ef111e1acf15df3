"""S-HR-VQVAE's raster sampler: exported as stage graphs, driven from the host, served."""

import shutil
from dataclasses import replace

import numpy as np
import onnx
import pytest
import torch

from models.metadata import (
    METADATA_KEY,
    RASTER_STAGES,
    ModelMetadata,
    raster_stage_path,
    read_model_metadata,
    rewrite_model_metadata,
)
from models.vqvae.raster_sampler import RasterSampler
from service.inference.backends import create_predictor
from service.inference.predictor import DEFAULT_STREAM, ModelMismatchError
from service.inference.raster_predictor import RasterPredictor

TINY = {"levels": 2, "codebook_size": 4, "latent_channels": 4, "hidden": 4,
        "pixelcnn_channels": 4, "pixelcnn_layers": 2, "temporal_kernel": 2}  # fmt: skip


@pytest.fixture(scope="module")
def raster_export(tmp_path_factory, session):
    """A briefly trained tiny S-HR-VQVAE, exported with its raster stages: (run, window)."""
    from models.data import SessionWindows
    from models.export import export_from_checkpoint
    from models.training import RunConfig, train

    root = tmp_path_factory.mktemp("vqvae")
    config = RunConfig(family="s_hr_vqvae", model=TINY, steps=3, batch_size=2, seed=3)
    train(config, SessionWindows(session, stride=16), root / "run", progress=False)
    window = root / "model.onnx"
    lines = export_from_checkpoint(root / "run", window, raster=True)
    assert "raster sampler" in lines[-1]
    return root / "run", window


def _model(run):
    from models.training import generator_from_checkpoint, load_checkpoint

    state = load_checkpoint(run)
    return generator_from_checkpoint(state), state


def test_every_stage_is_written_with_its_graph_kind_and_the_window_metadata(raster_export):
    _, window = raster_export
    window_metadata = read_model_metadata(window)
    for stage in RASTER_STAGES:
        path = raster_stage_path(window, stage)
        metadata = read_model_metadata(path)
        assert metadata.graph == f"raster-{stage}"
        assert metadata.provenance == window_metadata.provenance
    ops = {node.op_type for node in onnx.load(str(raster_stage_path(window, "encode"))).graph.node}
    assert {"ArgMin", "MatMul", "Gather"} <= ops  # the codebook lookups


def test_the_served_sampler_chooses_the_codes_pytorch_chooses(raster_export, session):
    run, window = raster_export
    model, state = _model(run)
    predictor = RasterPredictor(window, DEFAULT_STREAM)
    frames = session.frames[100:116].astype(np.float32)
    got = predictor.predict(frames)

    mean = np.asarray(state["normalisation"]["mean"], dtype=np.float32)
    scale = np.asarray(state["normalisation"]["scale"], dtype=np.float32)
    past = torch.from_numpy((frames - mean) / scale)[None, :, None]
    with torch.no_grad():
        codes = model.raster_codes(past)
        expected = model.decode(codes)[0, :, 0].numpy() * scale + mean
    sampler = RasterSampler(window)
    np.testing.assert_array_equal(sampler.codes(past.numpy()), codes.numpy())
    assert len(np.unique(codes.numpy())) > 1  # a sampler that always picks one code proves little
    np.testing.assert_allclose(got, expected, atol=1e-3)  # µV: the normalised tolerance x scale
    assert predictor.evaluations == 2 + 16 * (1 + 100)
    assert predictor.info.mode == "raster"


def test_the_step_graph_reads_only_positions_already_chosen(raster_export):
    """Changing the codes at and after position k leaves the code chosen at k unchanged."""
    _, window = raster_export
    sampler = RasterSampler(window)
    step = sampler.sessions["step"]
    rng = np.random.default_rng(0)
    context = rng.normal(size=step.get_inputs()[0].shape).astype(np.float32)
    current = rng.integers(0, 16, size=(1, 10, 10)).astype(np.int64)
    (before,) = step.run(None, {"context": context, "current": current})
    row, col = 4, 6
    changed = current.copy()
    changed[0, row, col:] = (changed[0, row, col:] + 1) % 16
    changed[0, row + 1 :] = (changed[0, row + 1 :] + 3) % 16
    (after,) = step.run(None, {"context": context, "current": changed})
    assert after[0, row, col] == before[0, row, col]


def test_backends_build_raster_mode_on_onnxruntime_only(raster_export):
    _, window = raster_export
    predictor = create_predictor(
        "onnxruntime-cpu", "raster", model_path=window, stream=DEFAULT_STREAM, threads=1
    )
    assert isinstance(predictor, RasterPredictor)
    with pytest.raises(ValueError, match="raster mode runs on"):
        create_predictor("tensorrt", "raster", model_path=window, stream=DEFAULT_STREAM)


def test_a_missing_or_foreign_stage_is_refused_naming_it(raster_export, tmp_path, exported):
    _, window = raster_export
    copy = tmp_path / "model.onnx"
    shutil.copy(window, copy)
    for stage in RASTER_STAGES[:-1]:
        shutil.copy(raster_stage_path(window, stage), raster_stage_path(copy, stage))
    with pytest.raises(ModelMismatchError, match=r"model\.raster-decode\.onnx.*--raster"):
        RasterSampler(copy)

    # A stage of the same kind from another export (its provenance differs).
    stage = onnx.load(str(raster_stage_path(window, "decode")))
    entry = next(p for p in stage.metadata_props if p.key == METADATA_KEY)
    entry.value = replace(ModelMetadata.from_json(entry.value), provenance={"run": 2}).to_json()
    onnx.save(stage, str(raster_stage_path(copy, "decode")))
    with pytest.raises(ModelMismatchError, match="comes from another export"):
        RasterSampler(copy)

    # A stage file that is another family's graph: the MR-layer model's window graph.
    _, other_window, _ = exported
    shutil.copy(other_window, raster_stage_path(copy, "decode"))
    with pytest.raises(ModelMismatchError, match="is a 'window' graph, not 'raster-decode'"):
        RasterSampler(copy)


def test_stages_of_another_export_than_the_window_graph_named_are_refused(exported, tmp_path):
    """Four stages of one export beside a window graph of another (re-exported without
    ``--raster`` over an older export): before, the sampler loaded, and the daemon served the
    older model under the newer file's name, held-out check and warnings. Refused naming both,
    as a step graph of another export is. (The tiny model's step graph stands in for each
    stage's graph: built cold, nothing runs.)"""
    _, window, step = exported
    copy = tmp_path / "model.onnx"
    shutil.copy(window, copy)
    older = replace(read_model_metadata(window), provenance={"run": 1})
    for stage in RASTER_STAGES:
        shutil.copy(step, raster_stage_path(copy, stage))
        rewrite_model_metadata(
            raster_stage_path(copy, stage), replace(older, graph=f"raster-{stage}")
        )
    with pytest.raises(
        ModelMismatchError, match=rf"raster-encode.onnx' comes from another export than '{copy}'"
    ):
        RasterPredictor(copy, DEFAULT_STREAM, warm=False)


def test_raster_export_of_a_family_without_a_sampler_is_refused(exported, tmp_path):
    from models.export import export_from_checkpoint

    run, _, _ = exported
    with pytest.raises(ValueError, match="'mr_layer_lstm' has no raster sampler"):
        export_from_checkpoint(run, tmp_path / "x.onnx", raster=True)
    assert not list(tmp_path.iterdir())


def test_offline_scoring_loads_the_sampler_and_batches_windows(raster_export, session):
    from models.loading import load_predictor

    _, window = raster_export
    loaded = load_predictor(window, raster=True)
    normalised = loaded.normalisation.normalise(session.frames[200:232].astype(np.float32))
    past = torch.from_numpy(np.stack([normalised[:16], normalised[16:]]))[:, :, None]
    future = loaded.predict(past)
    sampler = RasterSampler(window)
    assert future.shape == (2, 16, 1, 18, 20)
    np.testing.assert_array_equal(future[1], sampler.sample(past[1:].numpy())[0])


def test_the_codec_bound_is_the_models_own_reconstruction(raster_export, session, exported):
    from models.loading import load_codec_bound

    run, _ = raster_export
    model, _ = _model(run)
    bound = load_codec_bound(run)
    frames = bound.normalisation.normalise(session.frames[300:316].astype(np.float32))
    future = torch.from_numpy(frames)[None, :, None]
    with torch.no_grad():
        expected = model.decode(model.encode(future))
    torch.testing.assert_close(bound.predict(future), expected)
    with pytest.raises(ValueError, match="'mr_layer_lstm' has no codec"):
        load_codec_bound(exported[0])
