"""Batched predictions equal the daemon's predictors' one call at a time, bitwise."""

from __future__ import annotations

import numpy as np
import pytest

from service.inference.batch_runner import BatchRequest, BatchRunner
from service.inference.onnx_predictor import OnnxPredictor
from service.inference.predictor import ModelMismatchError, StreamSpec
from service.inference.streaming_predictor import StreamingPredictor

STREAM = StreamSpec()


def _newest(count: int, stride: int, gap: range = range(0)) -> list[int]:
    """Newest sequence numbers of the calls a scheduler makes at ``stride``, none in ``gap``
    (windows it refused)."""
    return [seq for seq in range(15, count, stride) if seq not in gap]


def _frames(session) -> np.ndarray:
    return session.frames[:420].astype(np.float32)


def _requests(frames, newest, stats):
    return [BatchRequest(frames[s - 15 : s + 1], s, None, stats) for s in newest]


@pytest.mark.parametrize(
    ("stride", "reprime", "gap"),
    [
        (1, 16, range(0)),  # every frame: states handed over on the schedule
        (3, 16, range(100, 140)),  # a refused stretch longer than a window: a re-prime
        (7, None, range(0)),  # the state carried forever
        (32, 16, range(0)),  # every call re-primes (the fast replay's default stride)
        (20, 16, range(0)),  # 21 re-primed states in one run: calls of 16 and 5, states reused
        (30, 16, range(0)),  # every call re-primes; states started inside windows never predict
    ],
)
def test_stream_mode_matches_the_streaming_predictor_call_by_call(exported, session, stride,
                                                                  reprime, gap):  # fmt: skip
    _, _, step_graph = exported
    frames = _frames(session)
    newest = _newest(len(frames), stride, gap)
    predictor = StreamingPredictor(step_graph, STREAM, threads=1, reprime_every_frames=reprime)
    stats = predictor.normaliser.stats_for_prediction()
    expected = [predictor.predict(frames[s - 15 : s + 1], newest_seq=s) for s in newest]
    runner = BatchRunner(step_graph, "stream", STREAM, reprime_every_frames=reprime)
    requests = _requests(frames, newest, stats)
    got = []
    for start in range(0, len(requests), 37):  # the state carries from one run to the next
        got += runner.run(requests[start : start + 37])
    assert len(got) == len(expected)
    for ours, theirs in zip(got, expected, strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_window_mode_matches_the_onnx_predictor_window_by_window(exported, session):
    _, window_graph, _ = exported
    frames = _frames(session)
    newest = _newest(len(frames), 5)
    predictor = OnnxPredictor(window_graph, STREAM, threads=1)
    stats = predictor.normaliser.stats_for_prediction()
    expected = [predictor.predict(frames[s - 15 : s + 1]) for s in newest]
    got = BatchRunner(window_graph, "window", STREAM).run(_requests(frames, newest, stats))
    for ours, theirs in zip(got, expected, strict=True):
        assert ours.shape == (16, 18, 20) and ours.dtype == np.float32
        np.testing.assert_array_equal(ours, theirs)


def test_a_graph_of_the_other_mode_is_refused_by_name(exported):
    _, window_graph, step_graph = exported
    with pytest.raises(ModelMismatchError, match="'window' graph; stream mode runs the step"):
        BatchRunner(window_graph, "stream", STREAM)
    with pytest.raises(ValueError, match="'mode' must be one of"):
        BatchRunner(step_graph, "raster", STREAM)


def test_metadata_that_disagrees_with_its_graph_is_refused_as_at_load(exported, tmp_path):
    """The fast replay refuses what the daemon's predictor refuses (``check_graph_io``)."""
    import dataclasses

    from models.metadata import read_model_metadata, rewrite_model_metadata

    _, window_graph, _ = exported
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(window_graph.read_bytes())
    metadata = read_model_metadata(bad)
    rewrite_model_metadata(bad, dataclasses.replace(metadata, future_frames=8))
    with pytest.raises(ModelMismatchError, match=rf"'{bad}': its graph's output 'future'"):
        BatchRunner(bad, "window", StreamSpec(future_frames=8))
