"""The serving probe on the tiny model with real ONNX Runtime sessions, and its cache.

One core's candidates (window and stream on ORT CPU, one thread each, plus the GPU backends this
host lacks) keep it to a few seconds; the measurement is taken once and the cache tests copy it.
"""

import dataclasses
import json
import logging
import os
import shutil

import numpy as np
import pytest

from service.inference import _serving_cache, host
from service.inference._serving_cache import FORMAT
from service.inference.backends import AUTO_ORDER
from service.inference.predictor import DEFAULT_STREAM, PARITY_TOLERANCE
from service.inference.serving_choice import Candidate, ServingChoice
from service.inference.serving_probe import ServingProbe
from service.inference.settings import SHIPPED_WEIGHTS as SHIPPED
from service.inference.settings import ModelSettings


def probe_for(window, cache_dir, step=None, **model):
    settings = ModelSettings(
        path=window,
        step_path=step,
        serving="auto",
        serving_probe_runs=20,
        serving_cache_dir=cache_dir,
        **model,
    )
    return ServingProbe(settings, DEFAULT_STREAM, staleness_limit_s=0.05, cores=1)


@pytest.fixture(scope="module")
def measured(exported, tmp_path_factory):
    """The probe, its cache directory and its choice, measured once."""
    _, window, _ = exported
    cache_dir = tmp_path_factory.mktemp("serving-cache")
    probe = probe_for(window, cache_dir)
    return probe, cache_dir, probe.choose()


def test_the_probe_measures_every_candidate_the_host_runs_and_picks_one(measured):
    probe, _, choice = measured
    candidates = [row.measurement.candidate for row in choice.rows]
    assert candidates == probe.candidates()
    expected = {(mode, b) for mode in ("window", "stream") for b in AUTO_ORDER[mode]}
    assert {(c.mode, c.backend) for c in candidates} == expected
    runs = {c: row.measurement for c, row in zip(candidates, choice.rows, strict=True)}
    for mode in ("window", "stream"):  # this host runs ORT CPU: measured, and its own reference
        cpu = runs[Candidate(mode, "onnxruntime-cpu", 1)]
        assert cpu.problem is None and cpu.runs >= 20 and cpu.max_error == 0.0
        assert 0 < cpu.p50_s <= cpu.p99_s
        assert cpu.tolerance == PARITY_TOLERANCE["fp32"]
    for measurement in runs.values():  # what did not run says why (no GPU, no checkpoint here)
        if measurement.p99_s is None:
            assert measurement.problem.startswith("unavailable: ")
    # Whether a stride fits depends on this host's speed and load, which a test cannot know:
    # judged against a frame period no host misses, the one-thread candidates are picked.
    relaxed = ServingChoice.decide(
        [row.measurement for row in choice.rows],
        period_s=1.0,
        margin=1.0,
        staleness_limit_s=1e3,
    )
    assert relaxed.chosen.measurement.candidate.threads == 1 and relaxed.chosen.stride == 1
    if choice.chosen is not None:  # and judged for real, the rule holds for what it picked
        assert choice.chosen.measurement.p99_s <= 0.7 * choice.chosen.stride * probe.period_s
    else:
        assert "would help" in choice.advice


def test_candidates_span_threads_up_to_four_for_cpu_backends_only(exported, tmp_path):
    _, window, _ = exported
    probe = probe_for(window, tmp_path)
    probe.cores = 8
    threads = {(c.mode, c.backend): [] for c in probe.candidates()}
    for c in probe.candidates():
        threads[(c.mode, c.backend)].append(c.threads)
    assert threads[("window", "onnxruntime-cpu")] == [1, 2, 3, 4]
    assert threads[("stream", "onnxruntime-cuda")] == [1]
    first = next(c for c in probe.candidates() if c.mode == "stream")
    assert first == Candidate("stream", "onnxruntime-cpu", 1)  # the reference comes first


def test_a_second_thread_is_checked_against_the_one_thread_reference(exported, tmp_path):
    _, window, _ = exported
    probe = probe_for(window, tmp_path)
    probe.cores = 2
    probe.candidates = lambda: [  # window mode's reference and one more, to keep this short
        Candidate("window", "onnxruntime-cpu", 1),
        Candidate("window", "onnxruntime-cpu", 2),
    ]
    reference, second = probe.measure()
    assert reference.max_error == 0.0
    assert second.problem is None and 0.0 <= second.max_error <= second.tolerance


def test_one_way_is_measured_against_its_reference_and_kept_in_a_record_of_its_own(
    exported, tmp_path, caplog, monkeypatch
):
    """A hot swap's measurement: the one way, checked against its reference's outputs (run,
    not timed), then read back from its own record without measuring."""
    _, window, _ = exported
    probe = probe_for(window, tmp_path)
    with caplog.at_level(logging.INFO, "corticast.serving"):
        choice = probe.choose_way("window", "onnxruntime-cpu", 2)
    [row] = choice.rows
    m = row.measurement
    assert m.candidate == Candidate("window", "onnxruntime-cpu", 2, "fp32")
    assert m.problem is None and m.runs >= 20 and 0 < m.p50_s <= m.p99_s
    assert 0.0 <= m.max_error <= m.tolerance  # the reference ran
    assert choice.chosen in (row, None) and (choice.chosen is None) == (not row.fits)
    assert "measured window onnxruntime-cpu x2 fp32 in" in caplog.text
    assert not probe.cache_path.exists()  # no full probe was run, none is claimed
    [record] = tmp_path.glob("*.window.onnxruntime-cpu.x2.fp32.json")

    again = probe_for(window, tmp_path)
    if choice.chosen is None:  # a record that does not fit is measured again (tested below)
        return
    monkeypatch.setattr(again, "_measure_way", lambda c: pytest.fail("measured despite a record"))
    caplog.clear()
    with caplog.at_level(logging.INFO, "corticast.serving"):
        assert again.choose_way("window", "onnxruntime-cpu", 2).rows == choice.rows
    assert f"using cached measurements {record}" in caplog.text


def test_a_record_of_one_way_that_does_not_fit_is_measured_again(exported, tmp_path, caplog):
    """A swap is measured beside the live loop: one that missed in a busy moment and is asked
    again is measured again, not refused from its record until a restart."""
    _, window, _ = exported
    probe = probe_for(window, tmp_path)
    candidate = Candidate("window", "onnxruntime-cpu", 1, "fp32")
    way_path, way_key = probe._way_cache(candidate)
    busy = probe._measure_way(candidate)
    slow = dataclasses.replace(busy, p50_s=1.0, p99_s=1.0)  # as a busy moment measured it
    _serving_cache.save(way_path, way_key, [slow])
    caplog.clear()
    with caplog.at_level(logging.INFO, "corticast.serving"):
        [row] = probe_for(window, tmp_path).choose_way("window", "onnxruntime-cpu", 1).rows
    assert "the record of window onnxruntime-cpu x1 fp32 does not fit; measuring again" in (
        caplog.text
    )
    assert row.measurement.p99_s < 1.0  # measured now, and kept in place of the old record
    [kept] = _serving_cache.load(way_path, way_key)
    assert kept.p99_s == row.measurement.p99_s


def test_a_start_record_that_does_not_fit_is_measured_again_once_not_at_every_swap(
    exported, tmp_path, caplog, monkeypatch
):
    """The start's full record of these files says the way misses (a busy moment, or nothing
    fitted at start): a swap measures it again and keeps that in the way's own record, and
    the next swap reads that record instead of measuring again, seconds beside the live
    loop, at every swap back."""
    _, window, _ = exported
    probe = probe_for(window, tmp_path)
    candidate = Candidate("window", "onnxruntime-cpu", 1, "fp32")
    slow = dataclasses.replace(probe._measure_way(candidate), p50_s=1.0, p99_s=1.0)
    _serving_cache.save(probe.cache_path, probe.cache_key(), [slow])  # the start's record
    with caplog.at_level(logging.INFO, "corticast.serving"):
        first = probe_for(window, tmp_path).choose_way("window", "onnxruntime-cpu", 1)
    assert "does not fit; measuring again" in caplog.text
    if first.chosen is None:  # this host missed again: measured at every swap, rightly
        return
    again = probe_for(window, tmp_path)
    monkeypatch.setattr(again, "_measure_way", lambda c: pytest.fail("measured despite a record"))
    assert again.choose_way("window", "onnxruntime-cpu", 1).rows == first.rows


def test_one_way_in_a_precision_the_files_do_not_offer_is_refused(exported, tmp_path):
    _, window, _ = exported
    probe = probe_for(window, tmp_path)  # no int8 copies beside it
    assert probe.offers("window", "fp32") and not probe.offers("window", "int8")
    with pytest.raises(ValueError, match="offers no int8 graphs for window mode"):
        probe.choose_way("window", "onnxruntime-cpu", 1, "int8")


def test_one_way_a_full_probe_measured_is_read_from_its_record(measured, tmp_path, monkeypatch):
    """A swap back to the files measured at start is instant."""
    probe, _ = copied_cache(measured, tmp_path)
    monkeypatch.setattr(probe, "_measure_way", lambda c: pytest.fail("measured despite a record"))
    # A row that fits (one that does not is measured again): the tiny model fits at 1 thread.
    start = next(r for r in measured[2].rows if r.fits and r.measurement.candidate.threads == 1)
    c = start.measurement.candidate
    [row] = probe.choose_way(c.mode, c.backend, c.threads).rows
    assert row == start


def test_without_a_step_graph_stream_mode_is_a_row_saying_so(exported, tmp_path):
    _, window, _ = exported
    lone = tmp_path / "lone.onnx"
    shutil.copy(window, lone)
    probe = probe_for(lone, tmp_path / "cache")
    probe.candidates = lambda: [Candidate("stream", "onnxruntime-cpu", 1)]
    [row] = probe.measure()
    assert row.problem == f"no step graph at {str(tmp_path / 'lone.step.onnx')!r}"


def test_another_exports_step_graph_is_a_row_saying_so_and_not_timed(exported, tmp_path):
    """Stream mode would serve another model than the window graph named: the daemon refuses
    such a pair at start, so the probe must not offer (or choose) it."""
    _, window, _ = exported
    lone = tmp_path / "lone.onnx"
    shutil.copy(window, lone)
    shutil.copy(SHIPPED / "default.step.onnx", tmp_path / "lone.step.onnx")
    probe = probe_for(lone, tmp_path / "cache")
    probe.candidates = lambda: [Candidate("stream", "onnxruntime-cpu", 1)]
    [row] = probe.measure()
    assert row.p99_s is None and row.runs == 0
    assert "'lone.step.onnx' is not the step graph of 'lone.onnx'" in row.problem


def test_the_advice_names_as_missing_only_backends_this_host_lacks(exported, tmp_path):
    """A stream row without its step graph is not onnxruntime-cpu missing here: the advice
    must not send an operator looking for a backend that runs."""
    _, window, _ = exported
    lone = tmp_path / "lone.onnx"
    shutil.copy(window, lone)
    probe = probe_for(lone, tmp_path / "cache")
    probe.candidates = lambda: [
        Candidate("window", "onnxruntime-cpu", 1),
        Candidate("window", "onnxruntime-cuda", 1),
        Candidate("stream", "onnxruntime-cpu", 1),
    ]
    rows = probe.measure()
    assert rows[1].problem.startswith("unavailable: ") and rows[2].problem.startswith("no step")
    # a staleness limit nothing meets: the advice is all there is to read
    choice = ServingChoice.decide(rows, period_s=1.0, margin=0.7, staleness_limit_s=1e-9)
    assert choice.chosen is None
    assert "(not available here: onnxruntime-cuda;" in choice.advice, choice.advice


def copied_cache(measured, tmp_path):
    probe, cache_dir, _ = measured
    cache = tmp_path / "cache"
    shutil.copytree(cache_dir, cache)
    copy = probe_for(probe.model.path, cache)
    return copy, copy.cache_path


def test_a_cache_hit_measures_nothing(measured, tmp_path, caplog, monkeypatch):
    probe, cache_path = copied_cache(measured, tmp_path)
    monkeypatch.setattr(probe, "measure", lambda: pytest.fail("measured despite the cache"))
    with caplog.at_level(logging.INFO, "corticast.serving"):
        choice = probe.choose()
    assert f"using cached measurements {cache_path}" in caplog.text
    original = measured[2]
    assert [r.measurement for r in choice.rows] == [r.measurement for r in original.rows]
    assert choice.chosen == original.chosen


def test_a_stale_cache_is_measured_again_and_says_what_changed(measured, tmp_path, caplog):
    probe, cache_path = copied_cache(measured, tmp_path)
    record = json.loads(cache_path.read_text())
    record["key"]["onnxruntime"] = "0.0.1"  # as after an upgrade
    cache_path.write_text(json.dumps(record))
    measured_again = []
    probe.measure = lambda: measured_again.append(1) or measured[2].rows[0:0]
    with caplog.at_level(logging.INFO, "corticast.serving"):
        probe.choose()
    assert measured_again == [1]
    assert "is stale (changed: onnxruntime); re-measuring" in caplog.text
    assert json.loads(cache_path.read_text())["key"] == probe.cache_key()  # rewritten


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b'{"format": %d, "key": {}}' % FORMAT,
        b'{"format": %d, "key": {}, "measurements": [{}]}' % FORMAT,
        b"\xff\xfe\x00 not text",  # a block of a damaged disk: not even UTF-8
    ],
)
def test_a_corrupt_cache_is_measured_again_never_a_crash(measured, tmp_path, caplog, content):
    probe, cache_path = copied_cache(measured, tmp_path)
    cache_path.write_bytes(content)
    probe.measure = lambda: [m.measurement for m in measured[2].rows]
    with caplog.at_level(logging.WARNING, "corticast.serving"):
        choice = probe.choose()
    assert f"cache {cache_path} is corrupt" in caplog.text
    assert choice.chosen == measured[2].chosen
    assert json.loads(cache_path.read_text())["format"] == FORMAT


def test_a_cache_an_older_version_wrote_is_measured_again(measured, tmp_path, caplog):
    """Format 1 had no precision: its rows cannot say whether an int8 copy was measured, so it
    is re-measured (logged as stale, not as damage), whatever its key."""
    probe, cache_path = copied_cache(measured, tmp_path)
    record = json.loads(cache_path.read_text())
    assert record["format"] == FORMAT == 2
    record["format"] = 1
    for row in record["measurements"]:
        del row["candidate"]["precision"], row["guard"]
    cache_path.write_text(json.dumps(record))
    measured_again = []
    probe.measure = lambda: measured_again.append(1) or [r.measurement for r in measured[2].rows]
    with caplog.at_level(logging.INFO, "corticast.serving"):
        probe.choose()
    assert measured_again == [1]
    assert f"cache {cache_path} is stale (format 1 != 2); re-measuring" in caplog.text
    assert json.loads(cache_path.read_text())["format"] == 2


@pytest.mark.parametrize(
    "edit",
    [
        {"p99_s": -0.001},  # would raise in the stride rule at every start
        {"p99_s": "fast"},
        {"max_error": "small"},
        {"candidate": {"mode": "window", "backend": "onnxruntime-cpu", "threads": "two",
                       "precision": "fp32"}},
        {"candidate": {"mode": "window", "backend": "torch-cpu", "threads": 1,
                       "precision": "fp32"}},  # not offered
        {"candidate": {"mode": "window", "backend": "onnxruntime-cpu", "threads": 1,
                       "precision": "int8"}},  # no int8 copy beside this model
        {"candidate": {"mode": "window", "backend": "onnxruntime-cpu", "threads": 1,
                       "precision": "fp16"}},
    ],
    ids=["negative p99", "p99 not a number", "error not a number", "threads not a number",
         "a candidate the probe does not offer", "int8 where there is none",
         "a precision that is none of the probe's"],
)  # fmt: skip
def test_a_hand_edited_cache_is_measured_again_never_a_crash(measured, tmp_path, caplog, edit):
    """Its key still matches; its measurements must still be ones the probe could have taken."""
    probe, cache_path = copied_cache(measured, tmp_path)
    record = json.loads(cache_path.read_text())
    record["measurements"][0].update(edit)
    cache_path.write_text(json.dumps(record))
    measured_again = []
    probe.measure = lambda: measured_again.append(1) or [r.measurement for r in measured[2].rows]
    with caplog.at_level(logging.WARNING, "corticast.serving"):
        choice = probe.choose()
    assert measured_again == [1]
    assert f"cache {cache_path}" in caplog.text and "re-measuring" in caplog.text
    assert choice.rows == measured[2].rows
    assert json.loads(cache_path.read_text())["measurements"][0]["candidate"]["threads"] == 1


@pytest.mark.parametrize("change", ["checkpoint retrained in place", "device_id"])
def test_a_cache_is_measured_again_for_another_checkpoint_or_gpu(
    measured, tmp_path, caplog, change
):
    """The torch backends run the checkpoint (its parity with the ONNX graph is measured), and
    ``device_id`` picks which GPU every GPU backend is timed on: neither may come from a cache
    measured on other weights or another device."""
    window, rows = measured[0].model.path, [r.measurement for r in measured[2].rows]
    checkpoint = tmp_path / "checkpoint.pt"
    checkpoint.write_bytes(b"weights of one run")
    first = probe_for(window, tmp_path / "cache", checkpoint=checkpoint)
    first.measure = lambda: rows
    first.choose()
    model = {"checkpoint": checkpoint}
    if change == "device_id":
        model["device_id"] = 1
    else:
        checkpoint.write_bytes(b"weights of another run")
    again = probe_for(window, tmp_path / "cache", **model)
    measured_again = []
    again.measure = lambda: measured_again.append(1) or rows
    with caplog.at_level(logging.INFO, "corticast.serving"):
        again.choose()
    assert measured_again == [1]
    assert "is stale (changed: " in caplog.text


@pytest.mark.parametrize("change", ["the gpu extra installed", "another gpu", "another driver"])
def test_a_cache_is_measured_again_after_the_gpu_extra_or_the_gpu_changes(
    measured, tmp_path, caplog, monkeypatch, change
):
    """TensorRT and the torch backends are not ONNX Runtime: installing the ``gpu`` extra
    (``pip install tensorrt``) leaves ORT's version and providers as they were, and a card or
    driver replaced leaves the CPU. A record taken before, its GPU rows 'unavailable' or timed
    on the other card, must not be served from. The installed package is a distribution's own
    metadata (what pip writes), the GPUs the driver's ``/proc`` files, written here."""
    gpus = tmp_path / "nvidia"
    card = gpus / "gpus" / "0000:01:00.0"
    card.mkdir(parents=True)
    (card / "information").write_text("Model: \t\t Tesla T4\nIRQ:   \t\t 35\n")
    (gpus / "version").write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05\n")
    monkeypatch.setattr(host, "NVIDIA_PROC", gpus, raising=False)  # before: no such reader
    window, rows = measured[0].model.path, [r.measurement for r in measured[2].rows]
    first = probe_for(window, tmp_path / "cache")
    first.measure = lambda: rows
    first.choose()
    if change == "the gpu extra installed":
        site = tmp_path / "site"
        info = site / "tensorrt-10.3.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tensorrt\nVersion: 10.3.0\n")
        monkeypatch.syspath_prepend(str(site))
    elif change == "another gpu":
        (card / "information").write_text("Model: \t\t NVIDIA H100 80GB HBM3\n")
    else:
        (gpus / "version").write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54\n")
    again = probe_for(window, tmp_path / "cache")
    measured_again = []
    again.measure = lambda: measured_again.append(1) or rows
    with caplog.at_level(logging.INFO, "corticast.serving"):
        again.choose()
    assert measured_again == [1], "served from a record taken before the change"
    assert "is stale (changed: " in caplog.text


def test_a_record_the_doctor_took_in_a_shell_holds_for_the_daemon_under_the_unit(
    measured, tmp_path, caplog, monkeypatch
):
    """``corticast doctor`` in a shell reads ``/proc/cpuinfo``; the daemon under the unit
    (``ProcSubset=pid``) cannot. The same CPU must key their records alike, or the daemon
    re-measures what the doctor measured for it (and the doctor, after it, the daemon's). The
    two ``/proc`` views are files written here; the CPU's ``/sys`` identity is this host's."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7763 64-Core Processor\n")
    modalias = tmp_path / "modalias"
    modalias.write_text("cpu:type:x86,ven0002fam0019mod0001:feature:,0000,0001,0002,00C0\n")
    monkeypatch.setattr(host, "CPU_MODALIAS", modalias)
    monkeypatch.setattr(host, "CPUINFO", cpuinfo)  # the doctor, in a shell
    window, rows = measured[0].model.path, [r.measurement for r in measured[2].rows]
    doctor = probe_for(window, tmp_path / "cache")
    doctor.measure = lambda: rows
    doctor.choose()
    monkeypatch.setattr(host, "CPUINFO", tmp_path / "hidden")  # the daemon, under the unit
    daemon = probe_for(window, tmp_path / "cache")
    daemon.measure = lambda: pytest.fail("the daemon re-measured what the doctor measured")
    with caplog.at_level(logging.INFO, "corticast.serving"):
        assert daemon.choose().rows == measured[2].rows
    assert f"using cached measurements {daemon.cache_path}" in caplog.text


def test_an_unwritable_cache_is_logged_and_the_choice_still_made(measured, tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    probe = probe_for(measured[0].model.path, blocker / "cache")  # a directory under a file
    probe.measure = lambda: [m.measurement for m in measured[2].rows]
    with caplog.at_level(logging.WARNING, "corticast.serving"):
        choice = probe.choose()
    assert "cannot write the cache" in caplog.text
    assert choice.rows == measured[2].rows


def test_a_cache_that_cannot_be_replaced_leaves_no_temporary_file(measured, tmp_path, caplog):
    """Every start that fails to write (a full disk, a directory where the file goes) must not
    leave another partial file behind in the cache directory."""
    probe = probe_for(measured[0].model.path, tmp_path / "cache")
    probe.cache_path.mkdir(parents=True)  # os.replace cannot put a file there
    probe.measure = lambda: [m.measurement for m in measured[2].rows]
    with caplog.at_level(logging.WARNING, "corticast.serving"):
        probe.choose()
    assert "cannot write the cache" in caplog.text
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [probe.cache_path.name]


def test_the_probe_stream_is_at_the_models_scale(measured):
    probe, _, _ = measured
    frames = probe._frames
    assert frames.shape == (4096 + 16, 18, 20) and frames.dtype == np.float32
    np.testing.assert_array_equal(frames[-16:], frames[:16])  # windows wrap as slices


def test_the_configured_stride_is_where_stream_mode_is_timed(exported, tmp_path):
    _, window, _ = exported
    probe = probe_for(window, tmp_path)
    probe.min_stride = 3
    probe.candidates = lambda: [Candidate("stream", "onnxruntime-cpu", 1)]
    [row] = probe.measure()
    assert row.problem is None and row.stride >= 3  # longer only if its p99 needs it


class _FailsWhenRun:
    """A real predictor that loaded but fails once it runs (a corrupted session, a GPU error)."""

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def predict(self, window, newest_seq=None, past_times=None):
        raise RuntimeError("simulated failure while the reference runs")


def test_one_way_whose_reference_fails_while_running_is_a_row_not_an_error(
    exported, tmp_path, monkeypatch
):
    """A hot swap measures one way against its reference (ONNX Runtime CPU, 1 thread): a
    reference that loads but fails to run used to escape the probe, and the swap answered
    500 instead of a row saying why."""
    _, window, _ = exported
    probe = probe_for(window, tmp_path)
    build = probe._build

    def failing_reference(candidate):
        predictor = build(candidate)
        return _FailsWhenRun(predictor) if candidate.threads == 1 else predictor

    monkeypatch.setattr(probe, "_build", failing_reference)
    [row] = probe.choose_way("window", "onnxruntime-cpu", 2).rows
    assert row.measurement.candidate == Candidate("window", "onnxruntime-cpu", 2, "fp32")
    assert row.measurement.max_error is None
    assert not row.fits and row.reason == "no reference to check its outputs against"


def test_a_cache_write_cut_short_by_ctrl_c_leaves_no_scratch_file(tmp_path, monkeypatch):
    """Ctrl-C (KeyboardInterrupt, which no ``except OSError`` catches) just as the record is
    renamed into place: no scratch file is left beside the cache, one per interrupted start."""
    path = tmp_path / "cache" / "serving.json"

    def interrupted(source, target):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _serving_cache.save(path, {"model": "m"}, [])
    assert list(path.parent.iterdir()) == []
