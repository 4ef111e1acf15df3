"""``replay --fast`` batched: the records of a per-window replay, but for timing."""

from __future__ import annotations

import dataclasses
import sys
import threading

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from bench.data.synth import Artefacts, Background, Seizure, SynthConfig, generate_session
from bench.demo import TARGET
from bench.replay._models import choose_models
from bench.replay._prediction_scorer import PredictionScorer, fit_session_ar
from bench.replay.fast import FastReplay
from bench.replay.record import ReplayRecord
from bench.replay.timeline import lay_out, ring_capacity
from service.config import Settings
from service.inference.onnx_predictor import OnnxPredictor
from service.inference.predictor import StreamSpec
from service.policy.stimulation_policy import StimulationPolicy
from tests.data.tiny_model import copy_tiny_model

_TIMING = ("inference_s", "age_s", "transit_s", "received_at")
"""Prediction columns that measure the machine, not the loop's output."""


SEIZURE = Seizure(
    start_s=0.5, duration_s=3.5, amplitude_uv=220.0, start_freq_hz=6.0, end_freq_hz=3.0,
    speed_mps=0.2, direction_deg=0.0, onset_fraction=0.3,
)  # fmt: skip


@pytest.fixture(scope="module")
def session():
    """4 s of a seizure toward the demo's target, with dropped samples (placeholders held), so
    the policy's checks and the missing-frame handling are compared too."""
    return generate_session(
        SynthConfig(
            duration_s=4.0,
            seed=5,
            episodes=(SEIZURE,),
            background=Background(rms_uv=5.0),
            artefacts=Artefacts(drop_rate_hz=3.0),
        )
    )


def _replay(settings, session, stride, audit_dir, *, batch) -> ReplayRecord:
    rate = settings.stream.sample_rate_hz
    timeline = lay_out(session, rate, ring_capacity(settings.ingest.ring_seconds, rate))
    (model,) = choose_models([], settings, StreamSpec(sample_rate_hz=rate))
    ar = fit_session_ar(timeline, *model.normalisation)
    scorer = PredictionScorer(timeline, *model.normalisation, ar)
    every_window = list(range(StreamSpec().past_frames - 1, len(timeline)))
    record = ReplayRecord("tiny", scorer, every_window)  # keeps every predicted future
    replay = FastReplay(
        settings, stride=stride, policies=[settings.policy], audit_dir=audit_dir, batch=batch
    )
    replay.run(timeline, model, record)
    return record


PINNED_AGE_S = 0.003
"""The data's age both replays' policy is given: the age differs between them by design (a
batched prediction's is its share of its batch's compute), and the lead window is judged on
the lead left after it, so decisions are compared at one age."""


@pytest.mark.parametrize(("mode", "stride"), [("stream", 3), ("window", 32)])
def test_batched_replay_publishes_what_the_per_window_replay_does(tmp_path, session, mode,
                                                                  stride, monkeypatch):  # fmt: skip
    decide = StimulationPolicy.decide
    monkeypatch.setattr(
        StimulationPolicy,
        "decide",
        lambda self, estimate, sd, data_age_s: decide(self, estimate, sd, data_age_s=PINNED_AGE_S),
    )
    _, window_graph, _ = copy_tiny_model(tmp_path / "model")
    settings = Settings(
        model={"path": window_graph, "mode": mode, "backend": "onnxruntime-cpu"},
        loop={"health_min_scored": 5},  # requests are judged within the 4 s
        policy={"target_electrodes": TARGET, "min_pgd": 0.5, "persistence_frames": 2,
                "min_amplitude_sd": 2.0},
        waves={"low_hz": 2.0, "high_hz": 12.0},
    )  # fmt: skip
    alone = _replay(settings, session, stride, tmp_path / "alone", batch=False)
    batched = _replay(settings, session, stride, tmp_path / "batched", batch=True)

    assert session.info["artefacts"]["n_dropped"] > 0
    assert alone.counters["predictions"] > 20
    assert batched.counters == alone.counters
    assert batched.examples.keys() == alone.examples.keys()
    for seq, (used, future) in alone.examples.items():
        assert batched.examples[seq][0] == used
        np.testing.assert_array_equal(batched.examples[seq][1], future)
    for name, column in alone.predictions.items():
        if name not in _TIMING:
            np.testing.assert_array_equal(batched.predictions[name], column)
    for name, column in alone.waves.items():
        np.testing.assert_array_equal(batched.waves[name], column)
    assert sum(alone.policy_checks[0].values()) > 0  # the policy judged windows
    assert batched.policy_checks == alone.policy_checks
    assert [_decision(s) for s in batched.stims[0]] == [_decision(s) for s in alone.stims[0]]
    # Each batched prediction's inference time is its share of its batch's compute.
    assert np.all(batched.predictions["inference_s"] > 0)
    # The report's scores: the batched loop scores while it waits for the model, the
    # per-window replay in a thread of its own; the same numbers.
    alone_scores, batched_scores = alone.scorer.scores(), batched.scorer.scores()
    assert alone_scores.input_seq.size > 20
    np.testing.assert_array_equal(batched_scores.input_seq, alone_scores.input_seq)
    for name in alone_scores.mse:
        np.testing.assert_array_equal(batched_scores.mse[name], alone_scores.mse[name])
        np.testing.assert_array_equal(batched_scores.ssim[name], alone_scores.ssim[name])


def test_no_window_ends_on_a_gaps_placeholder(tmp_path):
    """The ingestor writes a gap's placeholders together with the frame after them, so the
    daemon's scheduler never runs a window whose newest slot is one: a window falling due
    there runs at that frame. The fast replay (here at stride 1, where every slot falls due)
    writes its ring the same way, so it predicts and scores the windows a daemon would."""
    session = generate_session(
        SynthConfig(duration_s=1.5, seed=5, artefacts=Artefacts(drop_rate_hz=8.0))
    )
    _, window_graph, _ = copy_tiny_model(tmp_path / "model")
    settings = Settings(model={"path": window_graph, "mode": "window",
                               "backend": "onnxruntime-cpu"})  # fmt: skip
    rate = settings.stream.sample_rate_hz
    timeline = lay_out(session, rate, ring_capacity(settings.ingest.ring_seconds, rate))
    record = _replay(settings, session, 1, tmp_path, batch=True)
    seq = record.predictions["input_seq"]
    placeholders = np.flatnonzero(timeline.source_index < 0)
    assert placeholders.size > 0
    assert np.intersect1d(seq, placeholders).tolist() == []
    after_gaps = np.setdiff1d(placeholders + 1, placeholders)
    assert np.isin(after_gaps[after_gaps >= 15], seq).all()


def _decision(stim: dict) -> dict:
    """A stimulation message without what depends on the machine's speed."""
    return {k: v for k, v in stim.items() if "age" not in k and "lead" not in k}


def _stream_replay_of_the_tiny_model(tmp_path, session):
    """The tiny model's window graph, and a stride-4 stream-mode replay of ``session`` on ONNX
    Runtime CPU: the replay, its timeline and its model."""
    _, window_graph, _ = copy_tiny_model(tmp_path / "model")
    settings = Settings(model={"path": window_graph, "mode": "stream",
                               "backend": "onnxruntime-cpu"})  # fmt: skip
    rate = settings.stream.sample_rate_hz
    timeline = lay_out(session, rate, ring_capacity(settings.ingest.ring_seconds, rate))
    (model,) = choose_models([], settings, StreamSpec(sample_rate_hz=rate))
    replay = FastReplay(settings, stride=4, policies=[settings.policy], audit_dir=tmp_path)
    return window_graph, replay, timeline, model


def test_a_call_the_lookahead_did_not_record_stops_the_replay_by_name(tmp_path, session):
    """Were the lookahead ever out of step with the scheduler, it says so instead of serving
    another window's prediction."""
    _, replay, timeline, model = _stream_replay_of_the_tiny_model(tmp_path, session)
    lookahead = replay._lookahead(timeline, model)
    lookahead.serve_as(replay._predictor(model))
    try:
        first = timeline.frames[:16]
        expected = r"diverged: .* window ending at 16, the lookahead had 15"
        with pytest.raises(RuntimeError, match=expected):
            lookahead.predict(first, 16)
    finally:
        lookahead.close()


def test_a_lookahead_batching_another_graph_than_the_predictor_runs_is_dropped(tmp_path, session):
    """The worker starts before the daemon's predictor is built (with backend "auto" before
    it is known which backend runs): a predictor of another graph (a GPU backend's, or here
    the window graph where the lookahead batches the step graph) is not stood in for; the
    replay runs that predictor itself, warmed, and the worker stops."""
    window_graph, replay, timeline, model = _stream_replay_of_the_tiny_model(tmp_path, session)
    switch_interval = sys.getswitchinterval()
    lookahead = replay._lookahead(timeline, model)
    other = OnnxPredictor(window_graph, replay.stream, threads=1, warm=False)
    try:
        with pytest.raises(ValueError, match=r"batches .*step.* \(stream mode.*window mode"):
            lookahead.serve_as(other)
        assert replay._serving(other, lookahead) is other
        assert sys.getswitchinterval() == switch_interval  # the lookahead was closed
        assert other.predict(timeline.frames[:16]).shape == (16, *timeline.frames.shape[1:])
    finally:
        lookahead.close()
        other.close()


def test_a_model_whose_graph_fixes_batch_1_replays_one_window_at_a_time(tmp_path, session):
    """A window graph with a Reshape to a shape of batch 1 (as TrajGRU's exports had)
    is one the daemon serves and the batched graph refuses: the fast replay runs it one window
    at a time, publishing what the per-window replay does, instead of failing."""
    _, window_graph, _ = copy_tiny_model(tmp_path / "model")
    _view_input_at_batch_1(window_graph)
    settings = Settings(model={"path": window_graph, "mode": "window",
                               "backend": "onnxruntime-cpu"})  # fmt: skip
    alone = _replay(settings, session, 32, tmp_path / "alone", batch=False)
    batched = _replay(settings, session, 32, tmp_path / "batched", batch=True)
    assert alone.counters["predictions"] > 20
    assert batched.counters == alone.counters
    for seq, (used, future) in alone.examples.items():
        assert batched.examples[seq][0] == used
        np.testing.assert_array_equal(batched.examples[seq][1], future)


def _view_input_at_batch_1(path) -> None:
    """Rewrite the window graph at ``path``: its input goes through a Reshape to its own shape
    (batch 1) before any node reads it. Batch 1's numbers are unchanged."""
    model = onnx.load(str(path))
    graph = model.graph
    name = graph.input[0].name
    shape = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    for node in graph.node:
        node.input[:] = [f"{name}_view" if i == name else i for i in node.input]
    graph.initializer.append(numpy_helper.from_array(np.array(shape, np.int64), f"{name}_shape"))
    graph.node.insert(
        0, helper.make_node("Reshape", [name, f"{name}_shape"], [f"{name}_view"], name="view")
    )
    onnx.save(model, str(path))


def test_the_scores_wait_for_a_batch_another_thread_is_scoring(tmp_path, session):
    """In a batched replay the model's worker scores queued predictions while it idles:
    ``wait`` (and so the report) must not go on without a batch it is still scoring."""
    _, _, timeline, model = _stream_replay_of_the_tiny_model(tmp_path, session)
    scorer = PredictionScorer(
        timeline, *model.normalisation, fit_session_ar(timeline, *model.normalisation)
    )
    scorer.score_in_caller()
    seqs = range(100, 100 + 32 * 4, 4)  # one batch: nothing is scored until asked
    for seq in seqs:
        scorer.add(seq, timeline.frames[seq + 1 : seq + 17])
    started, release = threading.Event(), threading.Event()
    score = scorer._score

    def held(*args):
        started.set()
        release.wait(60)
        return score(*args)

    scorer._score = held
    elsewhere = threading.Thread(target=scorer.score_queued)
    elsewhere.start()
    assert started.wait(60)
    waiting = threading.Thread(target=scorer.wait)
    waiting.start()
    waiting.join(0.5)
    assert waiting.is_alive()  # still waiting for the other thread's batch
    release.set()
    waiting.join(60)
    elsewhere.join(60)
    assert not waiting.is_alive()
    np.testing.assert_array_equal(scorer.scores().input_seq, list(seqs))


def test_a_marked_recording_replays_batched_as_per_window_in_stream_mode(tmp_path, session):
    """A recording's trains are blanked in the replay's ring; the per-window replay's stream
    predictor and the batched lookahead's must see them alike (both carrying the state on,
    as the daemon's ring blanks its own train's frames as they are written). The session's
    first 600 frames: each replay predicts every third window, twice."""
    stamps, rate = session.timestamps[:600], session.sample_rate_hz
    markers = [
        {"time": float(stamps[first]), "request_id": k, "sequence": k - 1, "outcome": "sent",
         "blank_s": (n - 0.5) / rate, "channels": [3, 17], "amplitude_ua": 150,
         "phase_width_us": 200, "frequency_hz": 130, "train_duration_ms": 50}
        for k, (first, n) in enumerate(((250, 30), (450, 25)), start=1)
    ]  # fmt: skip
    marked = dataclasses.replace(
        session, frames=session.frames[:600], timestamps=stamps, truth=None,
        info={**session.info, "stimulation": markers},
    )  # fmt: skip
    _, window_graph, _ = copy_tiny_model(tmp_path / "model")
    settings = Settings(
        model={"path": window_graph, "mode": "stream", "backend": "onnxruntime-cpu"},
        policy={"target_electrodes": TARGET},
    )
    capacity = ring_capacity(settings.ingest.ring_seconds, rate)
    assert lay_out(marked, rate, capacity).trains == 2  # both, in the 600 frames
    alone = _replay(settings, marked, 3, tmp_path / "alone", batch=False)
    batched = _replay(settings, marked, 3, tmp_path / "batched", batch=True)

    assert alone.counters["predictions"] > 20
    assert batched.examples.keys() == alone.examples.keys()
    for seq, (_, future) in alone.examples.items():
        np.testing.assert_array_equal(batched.examples[seq][1], future, err_msg=f"window {seq}")


def test_under_interpolate_a_stream_replay_batched_is_the_per_window_one(tmp_path):
    """Under ``interpolate`` the scheduler starts stream mode's state over where a window
    feeds frames otherwise than the one before (a held newest frame interpolated later): the
    lookahead's shadow plans those re-primes, and the batched futures are the per-window ones.
    (2 s dropping twice as often as ``session``: as many drops, half the windows, each
    predicted twice at stride 1.)"""
    session = generate_session(
        SynthConfig(
            duration_s=2.0,
            seed=5,
            background=Background(rms_uv=5.0),
            artefacts=Artefacts(drop_rate_hz=6.0),
        )
    )
    _, window_graph, _ = copy_tiny_model(tmp_path / "model")
    settings = Settings(
        model={"path": window_graph, "mode": "stream", "backend": "onnxruntime-cpu"},
        scheduler={"missing_frames": "interpolate"},
        policy={"target_electrodes": TARGET},
    )
    alone = _replay(settings, session, 1, tmp_path / "alone", batch=False)
    batched = _replay(settings, session, 1, tmp_path / "batched", batch=True)

    assert session.info["artefacts"]["n_dropped"] > 0
    assert alone.counters["predictions"] > 20
    assert batched.examples.keys() == alone.examples.keys()
    for seq, (_, future) in alone.examples.items():
        np.testing.assert_array_equal(batched.examples[seq][1], future, err_msg=f"window {seq}")


def test_the_fast_replay_s_live_scores_leave_out_the_values_the_session_held(tmp_path, session):
    """The replay's loop judges the model's health and fits the blend on live scores, as the
    daemon does; the daemon's ring knows which values the ingest held (NaN from a broken
    contact), and so must the replay's, or its health and blend are judged on truth nobody
    measured. Electrode (4, 7) sends NaN over the last 3 s: the live scores leave those
    values out of the truth and count them, as the report's own scores do."""
    frames = session.frames.copy()
    frames[round(session.sample_rate_hz) :, 4, 7] = np.nan
    broken = dataclasses.replace(session, frames=frames)
    _, window_graph, _ = copy_tiny_model(tmp_path / "model")
    settings = Settings(model={"path": window_graph, "mode": "window",
                               "backend": "onnxruntime-cpu"})  # fmt: skip
    record = _replay(settings, broken, 8, tmp_path / "audit", batch=False)
    assert record.counters["predictions"] > 20
    assert record.counters["held_values_not_scored"] > 0
    assert record.scorer.scores().held_values_not_scored > 0
