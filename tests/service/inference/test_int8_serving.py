"""Serving an int8 copy: the daemon's predictors and its start-up file checks take the pair
``corticast export --int8`` writes, and the serving probe offers it beside fp32 where it is
the same export's with a passed guard (real ONNX Runtime sessions, one core's candidates)."""

import dataclasses
import logging
import shutil

import numpy as np
import pytest

from models.held_out_check import stamp_check
from models.metadata import QUANTIZATION_KEY, read_model_metadata, rewrite_model_metadata
from models.quantize import int8_path, int8_step_path
from service.core.errors import ModelMismatchError
from service.inference.model_files import ModelFileError, ModelFiles
from service.inference.onnx_predictor import OnnxPredictor
from service.inference.predictor import DEFAULT_STREAM
from service.inference.serving_choice import Candidate, Measurement, ServingChoice
from service.inference.serving_probe import ServingProbe
from service.inference.settings import ModelSettings
from service.inference.streaming_predictor import StreamingPredictor


def _window(session, end=40):
    return session.frames[end - DEFAULT_STREAM.past_frames : end]


@pytest.mark.parametrize("mode", ["window", "stream"])
def test_the_int8_graphs_load_and_predict_like_fp32(int8_pair, session, mode):
    window, step = int8_pair
    if mode == "window":
        fp32, int8 = OnnxPredictor(window, threads=1), OnnxPredictor(int8_path(window), threads=1)
    else:
        fp32 = StreamingPredictor(step, threads=1)
        int8 = StreamingPredictor(int8_step_path(window), threads=1)
    assert (fp32.info.precision, int8.info.precision) == ("fp32", "int8")
    expected = fp32.predict(_window(session), newest_seq=39)
    got = int8.predict(_window(session), newest_seq=39)
    assert got.shape == expected.shape == (16, *DEFAULT_STREAM.grid.shape)
    assert not np.array_equal(got, expected)  # computed in int8, not a copy of fp32
    spread = np.abs(expected - session.frames[40:56]).mean()
    assert np.abs(got - expected).mean() < 0.1 * spread  # close next to its own error


def test_the_daemon_starts_on_the_int8_pair_from_the_path_alone(int8_pair):
    window, _ = int8_pair
    files = ModelFiles.for_start(ModelSettings(path=int8_path(window)), DEFAULT_STREAM)
    assert files.step_path == int8_step_path(window).resolve()


def test_an_int8_graph_whose_guard_record_fails_is_refused_at_start_and_at_load(
    int8_pair, tmp_path
):
    """Served as configured (``serving = "fixed"``, the default), an int8 graph is judged by
    its guard record as the serving probe judges one: before, a record that fails its own
    limit started the daemon and loaded (only ``serving = "auto"`` read the guard)."""
    window, _ = int8_pair
    for path in (int8_path(window), int8_step_path(window)):
        shutil.copy(path, tmp_path / path.name)
    int8, int8_step = int8_path(tmp_path / window.name), int8_step_path(tmp_path / window.name)
    for path in (int8, int8_step):
        _record_edited(path, _failing)
    failing = r"model.int8(.step)?.onnx': its guard record fails its own limit: pooled PSNR"
    with pytest.raises(ModelFileError, match=r"\[model\] path: .*" + failing):
        ModelFiles.for_start(ModelSettings(path=int8, mode="window"), DEFAULT_STREAM)
    with pytest.raises(ModelMismatchError, match=failing):
        OnnxPredictor(int8, threads=1, warm=False)
    _record_edited(int8_step, lambda record: _failing(record, "step"))
    with pytest.raises(ModelMismatchError, match=failing):
        StreamingPredictor(int8_step, threads=1, warm=False)


def test_an_int8_graph_made_with_a_wider_limit_than_the_guard_s_is_refused_at_start(
    int8_pair, tmp_path
):
    """A record whose own limit is wider than the guard's 0.1 dB (made by ``export_int8`` with
    looser ``Int8Settings``) passes that limit and not the served one: the daemon does not
    start on it (before, it started, 0.3 dB below fp32)."""
    window, _ = int8_pair
    for path in (int8_path(window), int8_step_path(window)):
        shutil.copy(path, tmp_path / path.name)
    int8 = int8_path(tmp_path / window.name)

    def widened(record):
        record["guard"]["max_psnr_drop_db"] = 0.5
        return _failing(record, drop=0.3)

    _record_edited(int8, widened)
    with pytest.raises(ModelFileError, match=r"fails the limit served \(it allows 0.5\)"):
        ModelFiles.for_start(ModelSettings(path=int8, mode="window"), DEFAULT_STREAM)


def test_an_fp32_window_graph_with_an_int8_step_graph_is_refused(int8_pair):
    window, _ = int8_pair
    mixed = ModelSettings(path=window, step_path=int8_step_path(window))
    with pytest.raises(ModelFileError, match="their metadata differ in provenance"):
        ModelFiles.for_start(mixed, DEFAULT_STREAM)


# ---------------------------------------------------------------- the serving probe's int8 rows


def probe_for(window, cache_dir, cores=2):
    settings = ModelSettings(
        path=window, serving="auto", serving_probe_runs=20, serving_cache_dir=cache_dir
    )
    return ServingProbe(settings, DEFAULT_STREAM, staleness_limit_s=0.05, cores=cores)


def ort_cpu(probe, precision, threads=1):
    """The probe's ORT CPU candidates of ``precision`` with ``threads``, both modes."""
    return [
        c
        for c in probe.candidates()
        if (c.backend, c.precision, c.threads) == ("onnxruntime-cpu", precision, threads)
    ]


def relaxed(rows):
    """Judged against a frame period and staleness limit no host misses: what could fit."""
    return ServingChoice.decide(rows, period_s=1.0, margin=1.0, staleness_limit_s=1e3)


def test_int8_rows_appear_beside_fp32_with_their_guard_on_ort_cpu_only(int8_pair, tmp_path):
    window, _ = int8_pair
    probe = probe_for(window, tmp_path)
    int8 = [c for c in probe.candidates() if c.precision == "int8"]
    assert int8 == [
        Candidate(mode, "onnxruntime-cpu", threads, "int8")
        for mode in ("window", "stream")
        for threads in (1, 2)
    ]
    assert {c.precision for c in probe.candidates()} == {"fp32", "int8"}
    for mode, path, step in (
        ("window", int8_path(window), None),
        ("stream", int8_path(window), int8_step_path(window)),
    ):  # what the daemon would serve for each
        served = probe.settings_for(Candidate(mode, "onnxruntime-cpu", 1, "int8"))
        assert (served.path, served.step_path, served.mode) == (path, step, mode)
    chosen = [*ort_cpu(probe, "fp32"), *ort_cpu(probe, "int8")]
    probe.candidates = lambda: chosen
    rows = {m.candidate: m for m in probe.measure()}
    for mode in ("window", "stream"):
        fp32 = rows[Candidate(mode, "onnxruntime-cpu", 1)]
        int8 = rows[Candidate(mode, "onnxruntime-cpu", 1, "int8")]
        assert fp32.problem is None and fp32.guard is None and fp32.accurate
        assert int8.problem is None and int8.runs >= 20 and int8.accurate
        assert int8.max_error == 0.0  # int8's own reference, never compared with fp32's
        assert int8.guard.startswith("guard ") and "dB" in int8.guard
        assert int8.accuracy == int8.guard
    choice = relaxed(list(rows.values()))
    assert "int8" in "\n".join(choice.table()) and "precision" in choice.table()[0]
    int8_rows = [r for r in choice.as_dict()["candidates"] if r["precision"] == "int8"]
    assert len(int8_rows) == 2 and all(r["guard"].startswith("guard ") for r in int8_rows)


def _retrained(int8_pair, tmp_path):
    """A copy of the pair whose fp32 graphs were exported again after more training: the int8
    copies beside them are left from the earlier export."""
    window, step = int8_pair
    for path in (window, step, int8_path(window), int8_step_path(window)):
        shutil.copy(path, tmp_path / path.name)
    window, step = tmp_path / window.name, tmp_path / step.name
    for path in (window, step):
        metadata = read_model_metadata(path)
        provenance = {**metadata.provenance, "steps_done": metadata.provenance["steps_done"] + 1}
        rewrite_model_metadata(path, dataclasses.replace(metadata, provenance=provenance))
    return window


def test_a_stale_int8_copy_from_an_earlier_export_is_a_row_saying_why_never_chosen(
    int8_pair, tmp_path
):
    window = _retrained(int8_pair, tmp_path)
    probe = probe_for(window, tmp_path / "cache")
    stale = ort_cpu(probe, "int8")
    assert [c.precision for c in probe.candidates()].count("int8") == 2  # one row per mode
    chosen = [*ort_cpu(probe, "fp32"), *stale]
    probe.candidates = lambda: chosen
    rows = probe.measure()
    for row in rows[2:]:
        assert row.p99_s is None and row.runs == 0
        assert row.problem.startswith("'model.int8.onnx' is not an int8 copy of 'model.onnx'")
        assert "differ in provenance.steps_done" in row.problem
    choice = relaxed(rows)
    assert choice.chosen.measurement.candidate.precision == "fp32"
    assert not any(r.fits for r in choice.rows if r.measurement.candidate.precision == "int8")


def test_the_held_out_checks_export_stamps_after_the_int8_copies_do_not_make_them_stale(
    int8_pair, tmp_path
):
    """``corticast export --int8`` writes the copies, then records a held-out check in the fp32
    files and another, their own graph's, in the int8 copies: the pair it leaves is one
    export's."""
    window, step = int8_pair
    for path in (window, step, int8_path(window), int8_step_path(window)):
        shutil.copy(path, tmp_path / path.name)
    window, step = tmp_path / window.name, tmp_path / step.name
    check = {"data": "run-validation", "windows": 512, "model_psnr_db": [20.0]}
    stamp_check([window, step], check)
    stamp_check([int8_path(window), int8_step_path(window)], {**check, "model_psnr_db": [19.9]})
    probe = probe_for(window, tmp_path / "cache")
    int8 = [c for c in probe.candidates() if c.precision == "int8"]
    assert [(c.mode, c.threads) for c in int8] == [
        (m, n) for m in ("window", "stream") for n in (1, 2)
    ]
    assert all(graphs.problem is None for graphs in probe.int8.values())


def _record_edited(path, edit):
    metadata = read_model_metadata(path)
    record = metadata.provenance[QUANTIZATION_KEY]
    provenance = {**metadata.provenance, QUANTIZATION_KEY: edit(record)}
    rewrite_model_metadata(path, dataclasses.replace(metadata, provenance=provenance))


def _failing(record, kind="window", drop=0.5):
    """The record as a guard that refused would have left it: int8 ``drop`` dB below fp32."""
    scores = record["guard"]["pooled_psnr_db"][kind]
    scores["int8"] = scores["fp32"] - drop
    return record


@pytest.mark.parametrize(
    ("guard", "expected"),
    [
        ("refused", "its guard record fails its own limit: pooled PSNR"),
        ("absent", "it carries no int8 quantization record"),
    ],
)
def test_an_int8_copy_without_a_passed_guard_is_no_candidate(int8_pair, tmp_path, guard, expected):
    window, step = int8_pair
    for path in (window, step, int8_path(window), int8_step_path(window)):
        shutil.copy(path, tmp_path / path.name)
    window = tmp_path / window.name
    if guard == "refused":
        _record_edited(int8_path(window), _failing)
    else:  # a file named int8 that is the fp32 graph
        shutil.copy(window, int8_path(window))
    probe = probe_for(window, tmp_path / "cache")
    int8 = [c for c in probe.candidates() if c.precision == "int8"]
    assert [c.threads for c in int8] == [1, 1]  # one row per mode saying why, no thread counts
    probe.candidates = lambda: int8
    for row in probe.measure():
        assert row.runs == 0 and not row.accurate
        assert row.problem.startswith("'model.int8.onnx': " + expected)
    assert relaxed(probe.measure()).chosen is None


def test_without_int8_copies_there_are_no_int8_rows(exported, tmp_path):
    probe = probe_for(exported[1], tmp_path)
    assert {c.precision for c in probe.candidates()} == {"fp32"}
    assert probe.cache_key()["int8_sha256"] == {}


def test_an_int8_path_is_probed_in_int8_only_judged_by_its_own_guard(int8_pair, tmp_path):
    """``[model] path`` naming the int8 copy: no fp32 of it is offered, and its rows are not held
    to fp32's parity with themselves (before, each raised: no parity tolerance for int8)."""
    window, _ = int8_pair
    probe = probe_for(int8_path(window), tmp_path, cores=1)
    assert {c.precision for c in probe.candidates()} == {"int8"}
    gpu = Candidate("window", "onnxruntime-cuda", 1, "int8")
    assert gpu in probe.candidates()
    chosen = [*ort_cpu(probe, "int8"), gpu]
    probe.candidates = lambda: chosen
    rows = {m.candidate: m for m in probe.measure()}
    for mode in ("window", "stream"):
        row = rows[Candidate(mode, "onnxruntime-cpu", 1, "int8")]
        assert row.problem is None and row.accurate and row.guard.startswith("guard ")
    assert rows[gpu].problem.startswith("int8 is probed on onnxruntime-cpu only")
    served = probe.settings_for(Candidate("stream", "onnxruntime-cpu", 1, "int8"))
    assert served.path == int8_path(window) and served.mode == "stream"


def test_another_int8_export_beside_the_same_model_is_measured_again(int8_pair, tmp_path, caplog):
    """The cache is keyed by the int8 copies too: quantized again (other calibration), they are
    other graphs whose timings and guard the cached rows do not describe."""
    window, step = int8_pair
    for path in (window, step, int8_path(window), int8_step_path(window)):
        shutil.copy(path, tmp_path / path.name)
    window = tmp_path / window.name
    first = probe_for(window, tmp_path / "cache")
    first.measure = lambda: [Measurement(c, problem="not timed here") for c in first.candidates()]
    first.choose()
    _record_edited(int8_step_path(window), lambda r: {**r, "calibration": {"data": "other"}})
    again = probe_for(window, tmp_path / "cache")
    measured_again = []
    again.measure = lambda: measured_again.append(1) or first.measure()
    with caplog.at_level(logging.INFO, "corticast.serving"):
        again.choose()
    assert measured_again == [1]
    assert "is stale (changed: int8_sha256); re-measuring" in caplog.text


def test_an_int8_copy_that_is_not_a_model_is_a_row_not_a_crash(int8_pair, tmp_path):
    window, step = int8_pair
    for path in (window, step):
        shutil.copy(path, tmp_path / path.name)
    window = tmp_path / window.name
    int8_path(window).write_bytes(b"half a file")
    probe = probe_for(window, tmp_path / "cache")
    rows = [c for c in probe.candidates() if c.precision == "int8"]
    probe.candidates = lambda: rows
    assert [m.problem.split(":")[0] for m in probe.measure()] == [
        f"{str(int8_path(window))!r} is not a readable ONNX model"
    ] * 2
