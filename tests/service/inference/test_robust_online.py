"""Robust-online input scaling end to end: train a tiny model with it, export it, serve it
from a real ring through the real ONNX predictor, replay it; and the old fixed files unchanged.

The heart of the feature: multiply the input by a gain and add an offset, and the prediction
in µV is multiplied and offset alike, in training and in serving.
"""

import dataclasses

import numpy as np
import onnx
import pytest

from bench.data.synth import SynthConfig, generate_session
from models.metadata import METADATA_KEY, read_model_metadata
from service.config import Settings
from service.core.robust_scale import RobustScale, causal_stats
from service.inference.onnx_predictor import OnnxPredictor
from service.inference.predictor import ModelMismatchError, NotReadyError, StreamSpec
from service.inference.scale_updater import ScaleUpdater
from service.inference.scheduler import Scheduler
from service.inference.settings import SHIPPED_WEIGHTS
from service.ingest.ring_buffer import RingBuffer
from service.loop.live_accuracy import LiveAccuracy

torch = pytest.importorskip("torch")

SCALE = RobustScale(window_s=2.0, update_s=0.25, min_s=0.25)
"""A short schedule, so a 6 s session trains, serves and replays with it."""
GAIN, OFFSET = 7.5, -40.0
STREAM = StreamSpec()


@pytest.fixture(scope="module")
def session():
    return generate_session(SynthConfig(duration_s=6.0, seed=21))


@pytest.fixture(scope="module")
def robust_model(tmp_path_factory, session):
    """A 3-step robust-online MR-layer model and its window graph."""
    from models.data import SessionWindows
    from models.export import export_from_checkpoint
    from models.training import RunConfig, train

    root = tmp_path_factory.mktemp("robust")
    config = RunConfig(
        family="mr_layer_lstm",
        model={"hidden": (4, 4), "kernel_size": 3},
        window_stride=16,
        steps=3,
        batch_size=4,
        normalisation=SCALE.to_dict(),
    )
    windows = SessionWindows(session, "train", SCALE, stride=config.window_stride)
    train(config, windows, root / "run", progress=False)
    export_from_checkpoint(root / "run", root / "model.onnx")
    return root / "model.onnx"


def _scaled(session):
    return dataclasses.replace(session, frames=(GAIN * session.frames + OFFSET).astype(np.float32))


def _fed(path, frames, upto):
    """An ONNX predictor whose statistics come from a ScaleUpdater over a ring holding
    ``frames[:upto]``."""
    predictor = OnnxPredictor(path, STREAM, threads=1)
    ring = RingBuffer(4096, STREAM.grid)
    ring.append(frames[:upto], np.arange(upto) / 277.78, np.ones(upto, dtype=bool), 0.0)
    updater = ScaleUpdater(ring, STREAM.sample_rate_hz)
    updater.attach(predictor.normaliser)
    return predictor, ring, updater


def test_training_items_do_not_depend_on_the_rigs_gain_or_offset(session):
    from models.data import SessionWindows

    plain = SessionWindows(session, "train", SCALE, stride=16)
    scaled = SessionWindows(_scaled(session), "train", SCALE, stride=16)
    assert len(plain) == len(scaled) > 0 and plain.normalisation == SCALE
    for index in (0, len(plain) // 2, -1):
        for ours, theirs in zip(plain[index], scaled[index], strict=True):
            torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-4)
    # Windows start only once the first statistics exist (0.25 s = 69 frames in).
    assert plain._start[0] + 15 >= 68
    assert 0.9 < plain.provenance["coverage"] <= 1.0


def test_training_normalises_each_window_with_what_the_daemon_had_at_its_newest_frame(session):
    from models.data import SessionWindows

    windows = SessionWindows(session, "train", SCALE, stride=16)
    train_end = windows.provenance["sessions"][0]["splits"]["train"][1]
    frames = session.frames[:train_end]
    stats = causal_stats(frames, None, window=556, update=69, min_frames=69)
    start = int(windows._start[3])
    centre, scale = stats.at(start + 15)
    want = (frames[start : start + 32] - centre) / scale
    np.testing.assert_allclose(windows.span(3)[:, 0].numpy(), want, rtol=1e-5, atol=1e-6)


def test_served_predictions_scale_with_the_input(robust_model, session):
    frames = session.frames
    plain, _, _ = _fed(robust_model, frames, 1000)
    scaled, _, _ = _fed(robust_model, GAIN * frames + OFFSET, 1000)
    window = frames[1000 - 16 : 1000]
    got = scaled.predict((GAIN * window + OFFSET).astype(np.float32))
    want = GAIN * plain.predict(window) + OFFSET
    spread = float(np.abs(want - OFFSET).max())
    np.testing.assert_allclose(got, want, atol=1e-4 * spread)
    centre, scale = plain.normaliser.last_used
    np.testing.assert_allclose(scaled.normaliser.last_used[1], GAIN * scale, rtol=1e-4)
    np.testing.assert_allclose(
        scaled.normaliser.last_used[0], GAIN * centre + OFFSET, atol=1e-4 * GAIN * scale.max()
    )


def test_the_daemons_updater_computes_what_training_and_replay_compute(robust_model, session):
    frames = session.frames
    predictor, ring, updater = _fed(robust_model, frames, 400)
    stats = causal_stats(frames, None, window=556, update=69, min_frames=69)
    np.testing.assert_array_equal(predictor.normaliser.stats[1], stats.at(399)[1])
    with updater:  # the worker refreshes at each boundary the ring passes
        ring.append(frames[400:700], np.arange(400, 700) / 277.78, np.ones(300, bool), 0.0)
        ring.wait_for(699, 1.0)
        for _ in range(200):
            if updater.refreshes >= 10:  # 69, 138, ..., 690 frames
                break
            updater._stop_requested.wait(0.01)
    updater.raise_if_failed()
    np.testing.assert_array_equal(predictor.normaliser.stats[0], stats.at(699)[0])
    np.testing.assert_array_equal(predictor.normaliser.stats[1], stats.at(699)[1])


def test_before_the_first_statistics_the_scheduler_refuses_and_says_why(robust_model, session):
    predictor, ring, updater = _fed(robust_model, session.frames, 40)  # < 69 frames
    assert predictor.normaliser.stats is None
    assert "needs 0.25 s of valid frames" in updater.not_ready_reason()
    with pytest.raises(NotReadyError, match="no statistics yet"):
        predictor.predict(session.frames[:16])
    refusals = []
    scheduler = Scheduler(ring, predictor, lambda p: None, on_refusal=refusals.append)
    scheduler.run_due()
    assert scheduler.predictions == 0 and "no statistics yet" in refusals[0].reason
    ring.append(session.frames[40:80], np.arange(40, 80) / 277.78, np.ones(40, bool), 0.0)
    updater.attach(predictor.normaliser)
    assert updater.not_ready_reason() is None
    made = []
    scheduler = Scheduler(ring, predictor, made.append)
    scheduler.run_due()
    assert made[0].normalisation is predictor.normaliser.stats  # scored in these units


def test_live_accuracy_scores_each_prediction_in_its_own_units(robust_model, session):
    frames = session.frames
    scores = {}
    for name, data in (("plain", frames), ("scaled", GAIN * frames + OFFSET)):
        predictor, ring, _ = _fed(robust_model, data, 1000)
        accuracy = LiveAccuracy(None, None)
        scheduler = Scheduler(ring, predictor, accuracy.add)
        scheduler.run_due()
        ring.append(data[1000:1020], np.arange(1000, 1020) / 277.78, np.ones(20, bool), 0.0)
        assert accuracy.update(ring) == 1
        scores[name] = accuracy.psnr()
    for predictor_name in ("model", "persistence"):
        np.testing.assert_allclose(
            scores["scaled"][predictor_name], scores["plain"][predictor_name], atol=1e-3
        )


def test_fast_replay_serves_a_robust_online_model_and_scores_it_scale_free(
    robust_model, session, tmp_path
):
    """Replayed from a rig with another gain and offset, the same model scores the same."""
    from bench.data.session_io import write_xdf
    from bench.replay.replay import run_replay

    settings = Settings(model={"mode": "window", "backend": "onnxruntime-cpu"})
    accuracy = {}
    for name, data in (("plain", session), ("scaled", _scaled(session))):
        write_xdf(tmp_path / f"{name}.xdf", data)
        result = run_replay(
            str(tmp_path / f"{name}.xdf"),
            settings,
            tmp_path / name,
            models=[robust_model],
            stride=16,
            figures=False,  # the scores are what is compared
        )
        accuracy[name] = result.report["models"]["model"]["accuracy"]
    assert accuracy["plain"]["scored_windows"] > 50
    for predictor in ("model", "persistence", "linear"):
        np.testing.assert_allclose(
            accuracy["scaled"]["psnr_db"][predictor],
            accuracy["plain"]["psnr_db"][predictor],
            atol=1e-3,
        )


def _with_normalisation(path, tmp_path, normalisation):
    model = onnx.load(str(path))
    metadata = dataclasses.replace(read_model_metadata(path), normalisation=normalisation)
    for entry in model.metadata_props:
        if entry.key == METADATA_KEY:
            entry.value = metadata.to_json()
    out = tmp_path / "bad.onnx"
    onnx.save(model, str(out))
    return out


@pytest.mark.parametrize(
    ("normalisation", "message"),
    [
        ({"kind": "zscore"}, "kind must be one of .*'zscore'"),
        ({**SCALE.to_dict(), "window_s": 0.0}, "'window_s' must be a finite number > 0"),
        ({**SCALE.to_dict(), "extra": 1}, "exactly the keys"),
    ],
)
def test_unknown_kinds_and_bad_parameters_are_refused(
    robust_model, tmp_path, normalisation, message
):
    with pytest.raises(ModelMismatchError, match=message):
        OnnxPredictor(_with_normalisation(robust_model, tmp_path, normalisation), STREAM)


def test_the_shipped_fixed_model_serves_exactly_as_before(session):
    """Old files have no ``kind``: the fixed map, the same float32 operations as before."""
    path = SHIPPED_WEIGHTS / "default.onnx"
    predictor = OnnxPredictor(path, STREAM, threads=1)
    norm = predictor.metadata.normalisation
    assert "kind" not in norm and predictor.normaliser.online is None
    mean, scale = (np.asarray(norm[k], dtype=np.float32) for k in ("mean", "scale"))
    import onnxruntime as ort

    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    window = session.frames[300:316]
    normalised = np.empty((1, 16, 1, 18, 20), dtype=np.float32)
    np.subtract(window, mean, out=normalised[0, :, 0])
    np.divide(normalised[0, :, 0], scale, out=normalised[0, :, 0])
    out = reference.run(None, {predictor.metadata.input_name: normalised})[0][0, :, 0]
    want = np.multiply(out, scale, dtype=np.float32) + mean
    np.testing.assert_allclose(predictor.predict(window), want, rtol=0, atol=1e-5)
