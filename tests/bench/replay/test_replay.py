"""``corticast replay``: the loop's stages over a session, and the report of what they did."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import Result
from typer.testing import CliRunner

from bench.data.session import Session
from bench.data.session_io import SessionFileError, write_nwb, write_xdf
from bench.data.session_io._xdf_metadata import ecog_desc
from bench.data.session_io.xdf_writer import XdfWriter
from bench.data.synth import (
    Artefacts,
    Background,
    PlaneWave,
    Seizure,
    SynthConfig,
    generate_session,
)
from bench.demo import TARGET
from bench.replay._html import MAX_DECISION_ROWS, render_html
from bench.replay._input import load_replay_session
from bench.replay._models import choose_models
from bench.replay._prediction_scorer import PredictionScorer, Scores, fit_session_ar
from bench.replay.fast import FastReplay
from bench.replay.realtime import RealtimeReplay
from bench.replay.record import ReplayRecord
from bench.replay.replay import run_replay
from bench.replay.report import accuracy_section, report_json
from bench.replay.timeline import lay_out, ring_capacity
from firmware_bridge import AuditLog, read_audit_log
from firmware_bridge.audit_log import LOCK_SUFFIX
from service.cli.app import app
from service.config import Settings, load_settings
from service.core.grid import ElectrodeGrid
from service.core.scores import (
    DATA_RANGE,
    SSIM_WIN_SIZE,
    linear_extrapolation,
    persistence,
    squared_error,
    ssim,
)
from service.inference.predictor import StreamSpec

runner = CliRunner()

PLANE = PlaneWave(
    start_s=1.0, duration_s=4.0, amplitude_uv=50.0, frequency_hz=10.0, speed_mps=0.3,
    direction_deg=135.0,
)  # fmt: skip
SEIZURE = Seizure(
    start_s=6.5, duration_s=5.5, amplitude_uv=220.0, start_freq_hz=6.0, end_freq_hz=3.0,
    speed_mps=0.2, direction_deg=0.0, onset_fraction=0.3,
)  # fmt: skip
"""A plane wave away from the target, then a seizure sweeping toward it (``bench.demo``)."""


def _policy_settings() -> Settings:
    """A target on the seizure's path (the demo's) and thresholds the shipped model meets."""
    return Settings(
        policy={
            "target_electrodes": TARGET,
            "min_pgd": 0.5,
            "persistence_frames": 2,
            "min_amplitude_sd": 2.0,
        },
        waves={"low_hz": 2.0, "high_hz": 12.0},
        # A replay judges model health as the daemon does: no request until this many
        # predictions are scored. At stride 16 the default (200) takes 11.5 s of session,
        # past this session's seizure.
        loop={"health_min_scored": 20},
    )


EARLIER_TRAINS = 6
"""Dry-run trains of an earlier replay whose audit log the report directory still holds (the
interlocks' default minute budget)."""


@pytest.fixture(scope="module")
def truth_report(tmp_path_factory) -> dict:
    """A 12.5 s generated session (high SNR, a few dropped samples) written as XDF and
    replayed in fast mode with a two-value policy sweep, into a report directory that an
    earlier replay left its audit log in (:data:`EARLIER_TRAINS` trains at the session's
    first seconds)."""
    root = tmp_path_factory.mktemp("replay")
    (root / "report").mkdir()
    with AuditLog(root / "report" / "audit-default.jsonl") as earlier:
        for clock in range(EARLIER_TRAINS):
            earlier.append({"event": "decision", "outcome": "dry_run", "clock": float(clock)})
    Path(f"{earlier.path}{LOCK_SUFFIX}").unlink()  # as a replay leaves none (no opener here)
    session = generate_session(
        SynthConfig(
            duration_s=12.5,
            seed=7,
            episodes=(PLANE, SEIZURE),
            background=Background(rms_uv=5.0),
            artefacts=Artefacts(drop_rate_hz=1.0, jitter_s=1e-4),
        )
    )
    assert session.info["artefacts"]["n_dropped"] > 0  # the placeholder path is exercised
    path = root / "session.xdf"
    write_xdf(path, session)
    result = run_replay(
        str(path), _policy_settings(), root / "report", stride=16, sweep=["min_pgd=0.5,0.95"]
    )
    return {"dir": root / "report", "report": result.report, "html": result.html}


# -- the numbers ---------------------------------------------------------------------------
def test_numpy_metrics_are_models_evaluations_definitions():
    torch = pytest.importorskip("torch")
    from models import evaluation

    rng = np.random.default_rng(0)
    past = rng.normal(size=(3, 16, 18, 20)).astype(np.float32)
    target = rng.normal(size=(3, 16, 18, 20)).astype(np.float32)
    prediction = (target + 0.5 * rng.normal(size=target.shape)).astype(np.float32)

    def tensor(a: np.ndarray):
        return torch.from_numpy(a)[:, :, None]

    assert SSIM_WIN_SIZE == evaluation.SSIM_WIN_SIZE
    for name, ours in (
        ("mse", squared_error(prediction, target).mean(axis=0)),
        ("ssim", ssim(prediction, target).mean(axis=0)),
    ):
        theirs = evaluation.per_horizon(name, tensor(prediction), tensor(target))
        np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(
        persistence(past, 16), evaluation.persistence(tensor(past), 16)[:, :, 0]
    )
    np.testing.assert_allclose(
        linear_extrapolation(past, 16),
        evaluation.linear_extrapolation(tensor(past), 16)[:, :, 0],
        rtol=1e-6,
    )


def test_evaluate_and_replay_give_the_same_psnr_for_the_same_predictions():
    """The issue's complaint: one model on one file gave 26.54 dB in ``corticast evaluate``
    (R = peak-to-peak of the targets) and 19.42 dB in a replay (R = 2). The same predictions on
    the same windows, scored by each path's own code, must now give the same figures, at R = 2.
    """
    from models.evaluation import evaluate

    session = generate_session(SynthConfig(duration_s=2.0, seed=5))
    rate = session.sample_rate_hz
    timeline = lay_out(session, rate, len(session.frames))
    mean = timeline.frames.mean(axis=0)
    scale = 4 * timeline.frames.std(axis=0)  # the models' units: 4 s.d. per electrode
    past_n, horizons = 16, 16
    seqs = [
        s
        for s in range(past_n - 1, len(timeline) - horizons, 24)
        if timeline.valid[s - past_n + 1 : s + horizons + 1].all()
    ]
    assert len(seqs) > 10
    offsets = np.arange(-past_n + 1, horizons + 1)
    block = (timeline.frames[np.array(seqs)[:, None] + offsets] - mean.astype(np.float32)) / (
        scale.astype(np.float32)
    )
    past, target = block[:, :past_n], block[:, past_n:]
    # A "model": part truth, part the last frame, so it beats neither baseline by construction.
    predicted = 0.7 * target + 0.3 * past[:, -1:]
    ar = fit_session_ar(timeline, mean, scale)

    scorer = PredictionScorer(timeline, mean, scale, ar)
    for seq, future in zip(seqs, predicted * scale + mean, strict=True):
        scorer.add(seq, future)
    replayed = accuracy_section(scorer.scores(), np.zeros(len(seqs), dtype=bool))

    batches = [(past[:, :, None], target[:, :, None])]
    evaluated = evaluate({"model": lambda _past: predicted[:, :, None]}, batches)

    assert replayed["scored_windows"] == evaluated.n_windows == len(seqs)
    assert replayed["data_range"] == DATA_RANGE == 2.0
    for name in ("model", "persistence", "linear"):
        np.testing.assert_allclose(replayed["psnr_db"][name], evaluated.psnr[name], rtol=1e-5)
        np.testing.assert_allclose(replayed["ssim"][name], evaluated.ssim[name], rtol=1e-4)
        assert replayed["pooled_psnr_db"][name] == pytest.approx(
            evaluated.pooled_psnr[name], rel=1e-5
        )
    pooled_mse = np.square(predicted.astype(np.float64) - target).mean()
    assert replayed["pooled_psnr_db"]["model"] == pytest.approx(
        10 * np.log10(2.0**2 / pooled_mse), rel=1e-5
    )


def test_estimator_on_the_true_frames_recovers_the_generators_velocities(truth_report):
    true = truth_report["report"]["waves_true_frames"]
    assert true["windows"] > 40  # one every 64 frames (230 ms)
    plane = true["vs_truth"]["by_pattern"]["plane"]
    # The estimator's own tolerance at high SNR (tests/service/waves/test_waves.py).
    assert plane["frames"] > 150
    assert plane["median_speed_error_pct"] < 10.0
    assert plane["median_direction_error_deg"] < 10.0
    assert true["vs_truth"]["by_pattern"]["seizure"]["median_direction_error_deg"] < 10.0


def test_decisions_fall_inside_the_annotated_seizure(truth_report):
    report = truth_report["report"]
    [(onset, offset)] = report["session"]["seizures"]
    assert onset == pytest.approx(SEIZURE.start_s, abs=0.01)
    assert offset == pytest.approx(SEIZURE.end_s, abs=0.01)
    stim = report["models"]["default"]["stimulation"]
    assert stim["requests"] >= 1 and stim["triggers"] >= 1
    assert all(row["seizure"] == 0 for row in stim["decisions"])
    assert stim["sensitivity"] == 1.0
    assert stim["false_triggers"] == 0
    assert stim["seizures"][0]["first_trigger_s"] >= onset
    assert stim["outcomes"].get("dry_run", 0) == stim["triggers"]  # nothing is ever sent
    assert stim["policy_decisions"]["ok"] == stim["requests"]


def test_every_prediction_is_scored_beside_the_baselines(truth_report):
    report = truth_report["report"]
    accuracy = report["models"]["default"]["accuracy"]
    loop = report["models"]["default"]["loop"]
    assert loop["skipped_windows"] == 0 and loop["misaligned_predictions"] == 0
    assert accuracy["scored_windows"] + accuracy["unscorable_windows"] == loop["predictions"]
    assert accuracy["unscorable_windows"] >= 1  # windows whose true frames were dropped
    for name in ("model", "persistence", "linear", "ar"):
        assert len(accuracy["psnr_db"][name]) == 16
        assert len(accuracy["ssim"][name]) == 16
    # Persistence is nearly right one frame ahead and drifts away: PSNR falls with horizon.
    assert accuracy["psnr_db"]["persistence"][0] > accuracy["psnr_db"]["persistence"][15]
    # The fitted AR model follows the waves' dynamics: better than holding the last frame.
    assert accuracy["pooled_psnr_db"]["ar"] > accuracy["pooled_psnr_db"]["persistence"]
    assert "fitted AR" in report["definitions"]["ar"]
    assert report["run"]["stride"] == 16 and report["run"]["mode"] == "fast"


def test_sweep_reports_the_trade_off_per_threshold(truth_report):
    """The configured policy (min_pgd 0.5) comes first, marked: the reference each variant
    is read against (the table left it out); the sweep's own 0.5 judges the same."""
    sweep = truth_report["report"]["models"]["default"]["sweep"]
    assert [row["values"] for row in sweep] == [
        {"min_pgd": 0.5},
        {"min_pgd": 0.5},
        {"min_pgd": 0.95},
    ]
    assert [row["configured"] for row in sweep] == [True, False, False]
    stimulation = truth_report["report"]["models"]["default"]["stimulation"]
    assert sweep[0]["requests"] == sweep[1]["requests"] == stimulation["requests"]
    assert sweep[0]["sensitivity"] == stimulation["sensitivity"]
    assert sweep[2]["requests"] <= sweep[1]["requests"]
    assert sweep[1]["sensitivity"] == 1.0


def test_report_is_strict_json_readable_html_and_figures(truth_report):
    directory = truth_report["dir"]
    data = json.loads(
        (directory / "report.json").read_text(),
        parse_constant=lambda token: pytest.fail(f"non-strict JSON token {token}"),
    )
    assert data["format"] == "corticast.replay/1"
    for figure in data["figures"].values():
        assert (directory / figure).stat().st_size > 1000
    assert {"psnr", "ssim", "strips", "waves", "decisions", "latency", "sweep"} <= set(
        data["figures"]
    )
    html = truth_report["html"].read_text()
    for heading in ("Summary", "Prediction accuracy", "Travelling waves",
                    "Stimulation decisions", "Policy sweep", "Latency", "Definitions"):  # fmt: skip
        assert heading in html
    assert "1/1 (100%)" in html  # seizures triggered on, in the key table
    assert "<th>fitted AR +16</th>" in html and "and fitted AR" in html
    assert (directory / "audit-default.jsonl").exists()
    # The audit log's lock file stays where the log was written, a scratch directory gone.
    assert not [p.name for p in directory.iterdir() if p.name.endswith(LOCK_SUFFIX)]
    assert not [p.name for p in directory.iterdir() if p.name.startswith(".")]


def test_an_earlier_replay_s_audit_log_in_the_report_directory_counts_no_train(truth_report):
    """The dry-run bridge rebuilt refractory and budgets from the audit log an earlier replay
    left in the report directory: on the session clock its trains fell in this replay's first
    minute, and the minute budget blocked this replay's own trains."""
    records = read_audit_log(truth_report["dir"] / "audit-default.jsonl")
    assert [r["restored_trains"] for r in records if r["event"] == "start"] == [0]
    reasons = [r.get("reason", "") for r in records if r["event"] == "decision"]
    assert reasons and not [reason for reason in reasons if "budget" in reason]


class _Page(HTMLParser):
    """A page's tables (rows of cell texts, the header row first), images and text."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.images: list[dict[str, str | None]] = []
        self.text: list[str] = []
        self._in_cell = False
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.tables[-1][-1].append("")
            self._in_cell = True
        elif tag == "img":
            self.images.append(dict(attrs))

    def handle_endtag(self, tag: str) -> None:
        self._in_cell &= tag not in ("td", "th")

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_cell:
            self.tables[-1][-1][-1] += data

    def headers(self) -> list[str]:
        """Each table's first column heading."""
        return [table[0][0] for table in self.tables]


def _report_data(truth_report: dict) -> dict:
    """A fresh copy of the replay's report.json, to vary."""
    return json.loads((truth_report["dir"] / "report.json").read_text())


def test_the_page_has_every_table_and_figure(truth_report):
    data = _report_data(truth_report)
    page = _Page(truth_report["html"].read_text())
    assert page.headers() == [
        "model",  # summary
        "horizon",  # PSNR
        "horizon",  # SSIM
        "comparison",  # waves
        "seizure",
        "time (s)",  # decisions
        "policy",  # sweep
        "model",  # latency
        "model",  # loop counts
    ]
    summary, psnr, ssim = page.tables[:3]
    assert summary[1][0] == "default" and summary[1][10] == "1/1 (100%)"
    assert len(psnr) == 1 + 16 + 3 and len(ssim) == 1 + 4  # horizons, pooled rows
    assert psnr[0] == ["horizon", "default", "persistence (baseline)", "linear (baseline)",
                       "ar (baseline)"]  # fmt: skip
    decisions = data["models"]["default"]["stimulation"]["decisions"]
    assert len(page.tables[5]) == 1 + min(len(decisions), MAX_DECISION_ROWS)
    sweep = [row[:2] for row in page.tables[6]]
    assert sweep == [["policy", "min_pgd"], ["configured", "0.5"], ["variant", "0.5"],
                     ["variant", "0.95"]]  # fmt: skip
    assert {image["src"] for image in page.images} == set(data["figures"].values())
    assert all(image["alt"] for image in page.images)


def test_names_in_the_page_are_text_never_markup(truth_report):
    data = _report_data(truth_report)
    hostile = '<script>alert("x")</script> & <b>'
    data["session"]["spec"] = hostile
    data["models"] = {hostile: data["models"]["default"]}
    data["run"]["models"] = [hostile]
    html = render_html(data)
    assert "<script" not in html
    page = _Page(html)
    assert f"corticast replay: {hostile}" in page.text  # the h1, as the reader sees it
    assert page.tables[0][1][0] == hostile


@pytest.mark.parametrize(
    "path",
    [("created",), ("run", "stride"), ("models", "default", "stimulation", "triggers_per_hour")],
)
def test_a_report_without_a_field_the_page_shows_is_a_clear_error(truth_report, path):
    data = _report_data(truth_report)
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    with pytest.raises(ValueError, match=f"lacks a field the page shows.*{path[-1]}"):
        render_html(data)


def test_without_a_target_the_page_says_so_and_lists_at_most_the_first_decisions(truth_report):
    data = _report_data(truth_report)
    data["run"]["policy"]["target_electrodes"] = []
    stim = data["models"]["default"]["stimulation"]
    stim["decisions"] = stim["decisions"][:1] * (MAX_DECISION_ROWS + 7)
    page = _Page(render_html(data))
    text = re.sub(r"\s+", " ", "".join(page.text))
    assert "No target region is configured" in text
    assert "Target electrodes: none (the policy never requests)." in text
    assert len(page.tables[5]) == 1 + MAX_DECISION_ROWS
    assert "7 more in report.json." in text


def test_the_page_shows_what_a_realtime_replay_played_of_other_tools_marker_streams(
    truth_report,
):
    """A realtime replay whose daemon read other tools' marker streams counts the trains it
    played, those the daemon read, those that came late and those decided on frames blanked
    only afterwards: the page shows them in a table of their own, and none where nothing was
    played."""
    data = _report_data(truth_report)
    assert len(_Page(render_html(data)).tables) == 9  # fast mode: no such table
    data["models"]["default"]["loop"].update(
        marker_stream_trains_played=41, marker_stream_trains_read=40,
        marker_stream_late_markers=3, trains_decided_on_late_artefact=2,
    )  # fmt: skip
    page = _Page(render_html(data))
    assert page.tables[-1] == [
        ["model", "trains played", "trains read", "came late", "decided on late artefact"],
        ["default", "41", "40", "3", "2"],
    ]


def test_the_page_names_a_marker_stream_without_a_source_id_as_having_none(truth_report):
    """A daemon whose ``[stream] source_id`` was empty recorded its marker stream without one
    (LSL's default): the page read "(source id )", an empty name where one was expected."""
    data = _report_data(truth_report)
    data["session"]["marker_streams"] = [
        {"stream": "corticast-stimulation", "source_id": "", "applied": True, "why": "no rig"},
        {"stream": "corticast-stimulation", "source_id": "amp-a", "applied": False, "why": "A"},
    ]
    text = re.sub(r"\s+", " ", "".join(_Page(render_html(data)).text))
    assert "'corticast-stimulation' (no source id) applied: no rig;" in text
    assert "'corticast-stimulation' (source id 'amp-a') left out: A." in text


def test_the_page_times_each_horizon_at_the_sessions_frame_period(truth_report):
    """Predicted frame k is k frame periods ahead: 3.6 ms each only at 277.78 Hz. A stream at
    another ``[stream] sample_rate_hz`` must not be labelled with the default's times."""
    data = _report_data(truth_report)
    data["session"]["sample_rate_hz"] = 1000.0
    page = _Page(render_html(data))
    psnr = page.tables[1]
    assert [psnr[k][0] for k in (1, 8, 16)] == ["+1 (1.0 ms)", "+8 (8.0 ms)", "+16 (16.0 ms)"]
    text = re.sub(r"\s+", " ", "".join(page.text))
    assert "+1, +8, +16 (1.0, 8.0, 16.0 ms ahead)" in text


# -- fast and realtime ------------------------------------------------------------------------
@pytest.mark.slow
def test_fast_and_realtime_agree_on_the_predictions(tmp_path, monkeypatch):
    """The same frames, the same model: the in-process replay and the spawned daemon fed over
    LSL at the session's pace predict the same frames from the same input slot.

    The daemon predicts from the newest frame it has, the last of a rig chunk; the fast replay
    predicts at the end of every chunk, so each of the daemon's predictions has its fast
    counterpart however many windows a busy machine makes the daemon skip. The blend with
    persistence is off: its weights depend on which windows each one had time to score."""
    monkeypatch.setenv("CORTICAST_LOOP__BLEND_ENABLED", "false")
    settings = load_settings(None)  # what the spawned daemon loads too
    session = generate_session(SynthConfig(duration_s=2.0, seed=11))
    rate = settings.stream.sample_rate_hz
    timeline = lay_out(session, rate, ring_capacity(settings.ingest.ring_seconds, rate))
    (model,) = choose_models([], settings, StreamSpec(sample_rate_hz=rate))
    chunk = settings.rig.chunk_size
    first = StreamSpec().past_frames - 1
    assert (first + 1) % chunk == 0, "the first window must end with a chunk"
    chunk_ends = list(range(first, len(timeline), chunk))

    def record(name: str) -> ReplayRecord:
        ar = fit_session_ar(timeline, *model.normalisation)
        scorer = PredictionScorer(timeline, *model.normalisation, ar)
        return ReplayRecord(name, scorer, chunk_ends)

    fast, realtime = record("fast"), record("realtime")
    FastReplay(settings, stride=chunk, policies=[settings.policy], audit_dir=tmp_path).run(
        timeline, model, fast
    )
    RealtimeReplay(settings, None, stride=None, log_dir=tmp_path).run(session, model, realtime)

    assert realtime.counters["missed_messages"] == 0
    settled = _settled_stream_predictions(realtime.predictions["input_seq"], settings)
    exact = [
        (fast.examples[s][1], realtime.examples[s][1])
        for s in chunk_ends
        if s in settled and realtime.examples.get(s, (None,))[0] == s
    ]
    assert len(exact) >= 10, f"only {len(exact)} windows predicted in both modes"
    for ours, theirs in exact:
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-3)
    # Realtime slot numbers name the same frames: timestamp - session time is one constant.
    p = realtime.predictions
    offsets = p["input_timestamp"] - timeline.times_s[p["input_seq"]]
    assert np.ptp(offsets) < 0.5 / rate
    assert fast.counters["skipped_windows"] == 0
    # Both report the held values their live scores left out (none held in this session).
    assert realtime.counters["held_values_not_scored"] == fast.counters["held_values_not_scored"]


class _BlendShares(ReplayRecord):
    """A record that also keeps the blend's shares each published prediction carried."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.shares: list[tuple[list[float], list[float] | None]] = []

    def on_message(self, topic, header, array, **kwargs) -> None:
        super().on_message(topic, header, array, **kwargs)
        if topic == "prediction":
            self.shares.append((header["blend_weights"], header.get("blend_ar_weights")))


@pytest.mark.parametrize("blend_ar", [True, False])
def test_fast_replay_serves_the_live_ar_the_daemon_would_have_fitted(tmp_path, monkeypatch,
                                                                      blend_ar):  # fmt: skip
    """Refitted on the session's clock as the daemon's thread refits it, the AR takes a share
    of what is served once the blend is fitted; with [loop] blend_ar off it never does."""
    monkeypatch.setenv("CORTICAST_LOOP__BLEND_WINDOW", "100")
    monkeypatch.setenv("CORTICAST_LOOP__BLEND_MIN_WINDOWS", "20")
    monkeypatch.setenv("CORTICAST_LOOP__BLEND_AR", str(blend_ar).lower())
    settings = load_settings(None)
    session = generate_session(SynthConfig(duration_s=6.0, seed=12))
    rate = settings.stream.sample_rate_hz
    timeline = lay_out(session, rate, ring_capacity(settings.ingest.ring_seconds, rate))
    (model,) = choose_models([], settings, StreamSpec(sample_rate_hz=rate))
    ar = fit_session_ar(timeline, *model.normalisation)
    record = _BlendShares("fast", PredictionScorer(timeline, *model.normalisation, ar), [])
    FastReplay(settings, stride=8, policies=[settings.policy], audit_dir=tmp_path).run(
        timeline, model, record
    )
    assert len(record.shares) > 150
    first_weights, first_ar = record.shares[0]
    assert first_weights == [1.0] * 16 and first_ar == [0.0] * 16  # before anything is scored
    last_weights, last_ar = record.shares[-1]
    for w, v in zip(last_weights, last_ar, strict=True):
        assert min(w, v) >= 0.0 and w + v <= 1.0 + 1e-9
    assert (max(last_ar) > 0.05) is blend_ar


def _settled_stream_predictions(input_seq: np.ndarray, settings: Settings) -> set[int]:
    """Stream-mode predictions made from a state handed over on the schedule (not one primed
    at the first call, or after more than a window of frames went unseen): those depend only
    on the frames, so the daemon's must equal the fast replay's (which primes at frame 15)."""
    assert settings.model.mode == "stream"
    every, window = settings.model.reprime_every_frames, StreamSpec().past_frames
    settled, primed, previous = set(), None, None
    for seq in (int(s) for s in input_seq):
        if previous is None or not 0 < seq - previous <= window:
            primed = seq
        # A handover at h (h = 15 mod 16) lies in [primed, seq]: the state is the schedule's.
        last_handover = seq - (seq - (window - 1)) % every
        if last_handover >= primed:
            settled.add(seq)
        previous = seq
    return settled


def test_replay_runs_without_the_training_extra(tmp_path):
    """The replay needs only the daemon's install: torch and scikit-image are never imported."""
    script = (
        "import sys\n"
        "class Block:  # importing torch or skimage now fails, as where they are not installed\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'skimage'):\n"
        "            raise ImportError(f'{name} is not installed')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from pathlib import Path\n"
        "from bench.replay.replay import run_replay\n"
        "from service.config import load_settings\n"
        f"run_replay('synthetic:1@3', load_settings(None), Path({str(tmp_path)!r}), stride=64)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "report.html").exists()


# -- session files --------------------------------------------------------------------------
def _write_reset_xdf(path: Path, session, *, ecog_type: str = "ECoG", rate: float | None = None):
    """The session as LabRecorder would record it across a clock reset of the amplifier's
    computer halfway through, with a marker stream beside it."""
    n = session.n_frames
    half = n // 2
    recorder = session.timestamps + 100.0
    source = recorder.copy()
    source[:half] -= 50.0
    source[half:] = recorder[half:] - recorder[half] + 5.0  # the source clock restarts at 5 s
    offset = recorder - source
    flat = session.frames.reshape(n, -1)
    with XdfWriter(path) as writer:
        writer.add_stream(
            1, name="amp", stream_type=ecog_type, channel_count=flat.shape[1],
            channel_format="float32", nominal_srate=rate or session.sample_rate_hz,
            source_id="amp-1", desc=ecog_desc(session.grid, np.arange(flat.shape[1]), {}),
        )  # fmt: skip
        writer.add_stream(
            2, name="events", stream_type="Markers", channel_count=1, channel_format="string",
            nominal_srate=0.0, source_id="events-1",
        )  # fmt: skip
        for start in range(0, n, 128):
            chunk = slice(start, start + 128)
            for stream in (1, 2):
                writer.write_clock_offset(stream, float(source[start]), float(offset[start]))
            writer.write_samples(1, source[chunk], flat[chunk])
            writer.write_samples(2, source[chunk][:1], [["tick"]])
    return recorder


def test_xdf_with_a_clock_reset_and_a_second_stream_replays(tmp_path):
    session = generate_session(SynthConfig(duration_s=4.0, seed=2))
    path = tmp_path / "reset.xdf"
    recorder = _write_reset_xdf(path, session)
    loaded = load_replay_session(str(path), load_settings(None))
    np.testing.assert_allclose(loaded.timestamps, recorder, atol=1e-9)
    np.testing.assert_array_equal(loaded.frames, session.frames)

    result, report = _replayed(tmp_path, path, "--stride", "64")
    assert result.exit_code == 0, result.output
    assert "fast mode, stride 64" in result.output
    assert report["session"]["slots"] == session.n_frames
    assert report["session"]["missing_frames"] == 0  # the reset is not a gap
    assert report["session"]["ground_truth"] is False
    assert report["models"]["default"]["loop"]["predictions"] > 0


def test_crashed_recording_replays_its_intact_part_with_a_warning(tmp_path):
    """What a crashed LabRecorder leaves: the file stops inside a Samples chunk, no footer."""
    session = generate_session(SynthConfig(duration_s=3.0, seed=4))
    path = tmp_path / "whole.xdf"
    write_xdf(path, session, chunk_samples=100)
    cut = tmp_path / "crashed.xdf"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    with pytest.warns(RuntimeWarning, match=r"crashed\.xdf: file ends at byte \d+ inside") as w:
        result = runner.invoke(
            app, ["replay", str(cut), "--report", str(tmp_path / "out"), "--no-progress",
                  "--stride", "64"],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    n_read = int(re.search(r"read the (\d+) samples", str(w[0].message))[1])
    assert n_read % 100 == 0 and 0 < n_read < session.n_frames
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["session"]["slots"] == n_read
    assert report["models"]["default"]["loop"]["predictions"] > 0


def test_recording_of_a_stream_another_lsl_tool_played_replays(tmp_path, source_id, monkeypatch):
    """mne-lsl's player streams an MNE recording (float64 volts, channel labels and units, no
    electrode positions or grid); recorded as LabRecorder does (the stream's own info as the
    header, its samples), the file replays with the row-major channel map, in µV."""
    import mne
    import pylsl
    from mne_lsl.player import PlayerLSL

    rate = load_settings(None).stream.sample_rate_hz
    uv = np.arange(1000)[:, None] * 1000.0 + np.arange(360)[None, :]  # sample * 1000 + channel
    raw = mne.io.RawArray(
        uv.T * 1e-6, mne.create_info([f"E{i:03d}" for i in range(360)], rate, "ecog"), verbose=0
    )
    stamps: list[float] = []
    values: list[list[float]] = []
    with PlayerLSL(raw, chunk_size=10, n_repeat=1, name="other-tool", source_id=source_id):
        (info,) = pylsl.resolve_byprop("source_id", source_id, 1, 5.0)
        inlet = pylsl.StreamInlet(info)
        header = ET.fromstring(inlet.info(5.0).as_xml())
        while len(stamps) < 150:
            chunk, chunk_stamps = inlet.pull_chunk(timeout=1.0)
            values.extend(chunk)
            stamps.extend(chunk_stamps)
    assert header.find("desc/channels/channel/row") is None and header.find("desc/grid") is None
    path = tmp_path / "other-tool.xdf"
    with XdfWriter(path) as writer:
        writer.add_stream(
            1, name=header.findtext("name"), stream_type=header.findtext("type"),
            channel_count=360, channel_format=header.findtext("channel_format"),
            nominal_srate=float(header.findtext("nominal_srate")),
            source_id=source_id, desc=header.find("desc"),
        )  # fmt: skip
        writer.write_samples(1, np.array(stamps), np.array(values))

    monkeypatch.setenv("CORTICAST_STREAM__TYPE", "ecog")  # mne-lsl's type: the channel type
    loaded = load_replay_session(str(path), load_settings(None))
    first = round(values[0][0] * 1e6)  # the first sample recorded, in µV
    expected = (first + np.arange(len(stamps)) * 1000.0)[:, None, None] + np.arange(360).reshape(
        18, 20
    )
    np.testing.assert_allclose(loaded.frames, expected, atol=0.1)
    result, report = _replayed(tmp_path, path, "--stride", "32")
    assert result.exit_code == 0, result.output
    assert report["session"]["slots"] == len(stamps)
    assert report["models"]["default"]["loop"]["predictions"] > 0


@pytest.mark.parametrize("suffix", [".xdf", ".nwb"])
def test_a_recording_stamped_at_another_rate_than_it_declares_is_refused(tmp_path, suffix):
    """An amplifier set to 250 Hz in a stream declaring 277.78 Hz: its steps (1.11 periods)
    are no gaps, and the daemon refuses it by the rate its timestamps keep ([ingest]
    rate_tolerance); the replay ran it, every wave speed 10 % off."""
    settings = load_settings(None)
    n = 500
    session = Session(
        frames=np.zeros((n, 18, 20), np.float32),
        timestamps=100.0 + np.arange(n) / 250.0,
        sample_rate_hz=settings.stream.sample_rate_hz,
    )
    path = tmp_path / f"amplifier-at-250{suffix}"
    (write_xdf if suffix == ".xdf" else write_nwb)(path, session)
    with pytest.raises(
        SessionFileError,
        match=rf"^{re.escape(str(path))}: stream rate 250\.00 Hz measured from its timestamps "
        r"over 0\.5 s, 0\.5 s into the recording; its nominal rate is 277\.78 Hz",
    ):
        load_replay_session(str(path), settings)


@pytest.mark.parametrize(
    ("grid", "named"),
    [
        (ElectrodeGrid(rows=16, cols=16), "16x16 array at 0.5 mm pitch"),
        (ElectrodeGrid(pitch_m=0.4e-3), "18x20 array at 0.4 mm pitch"),
    ],
)
def test_a_recording_of_another_array_is_refused_naming_both_arrays(tmp_path, grid, named):
    """A recording is read on the array it records; the daemon reads the rig's, shape and
    pitch (at another pitch every wave speed would be off by their ratio)."""
    settings = load_settings(None)
    n = 300
    session = Session(
        frames=np.zeros((n, *grid.shape), np.float32),
        timestamps=100.0 + np.arange(n) / settings.stream.sample_rate_hz,
        sample_rate_hz=settings.stream.sample_rate_hz,
        grid=grid,
    )
    path = tmp_path / "other-array.xdf"
    write_xdf(path, session)
    with pytest.raises(
        SessionFileError,
        match=rf"^{re.escape(str(path))}: frames are on a {named}; the daemon reads the 18x20 "
        r"array at 0\.5 mm$",
    ):
        load_replay_session(str(path), settings)


def test_a_recording_whose_rate_changes_partway_is_refused_where_the_daemon_would(tmp_path):
    """40 s at 277.78 Hz, then the amplifier reset to 250 Hz for its last 3 s: over the whole
    recording the stamps keep 275.8 Hz, within [ingest] rate_tolerance (2 %), but the daemon's
    meter, over its last [ingest] rate_window_s (10 s), refuses the stream live some 2 s after the
    change."""
    settings = load_settings(None)
    rate = settings.stream.sample_rate_hz
    before, after = np.arange(round(40 * rate)) / rate, np.arange(1, 3 * 250 + 1) / 250.0
    stamps = 100.0 + np.concatenate([before, before[-1] + after])
    session = Session(
        frames=np.zeros((len(stamps), 18, 20), np.float32),
        timestamps=stamps,
        sample_rate_hz=rate,
    )
    path = tmp_path / "reset-to-250.xdf"
    write_xdf(path, session)
    with pytest.raises(
        SessionFileError,
        match=r"stream rate 27[12]\.\d\d Hz measured from its timestamps over 10\.\d s, 42\.\d s "
        r"into the recording; its nominal rate is 277\.78 Hz \(\[ingest\] rate_tolerance 0\.02 "
        r"over rate_window_s 10 s\)",
    ):
        load_replay_session(str(path), settings)


def test_wrong_shape_rate_or_missing_stream_is_a_clear_error(tmp_path):
    settings = load_settings(None)
    session = generate_session(SynthConfig(duration_s=1.0, seed=1))

    missing = tmp_path / "eeg.xdf"
    _write_reset_xdf(missing, session, ecog_type="EEG")
    with pytest.raises(SessionFileError, match=r"no stream has type 'ECoG'; streams found: .*EEG"):
        load_replay_session(str(missing), settings)

    slow_session = generate_session(SynthConfig(duration_s=1.0, seed=1, sample_rate_hz=250.0))
    slow = tmp_path / "slow.xdf"
    write_xdf(slow, slow_session)
    with pytest.raises(SessionFileError, match=r"nominal_srate 250\.0 Hz; 'expected_rate_hz'"):
        load_replay_session(str(slow), settings)
    write_nwb(tmp_path / "slow.nwb", slow_session)
    with pytest.raises(SessionFileError, match=r"nominal rate 250 Hz; the daemon reads 277\.78"):
        load_replay_session(str(tmp_path / "slow.nwb"), settings)

    narrow = tmp_path / "narrow.xdf"
    with XdfWriter(narrow) as writer:
        writer.add_stream(
            1, name="amp", stream_type="ECoG", channel_count=64, channel_format="float32",
            nominal_srate=settings.stream.sample_rate_hz, desc=ET.Element("desc"),
        )  # fmt: skip
        writer.write_samples(
            1, np.arange(100) / settings.stream.sample_rate_hz, np.zeros((100, 64), np.float32)
        )
    with pytest.raises(SessionFileError, match="64"):
        load_replay_session(str(narrow), settings)

    result = runner.invoke(
        app, ["replay", str(missing), "--report", str(tmp_path / "r"), "--no-progress"]
    )
    assert result.exit_code == 1
    assert "error:" in result.output and "no stream has type 'ECoG'" in result.output
    assert "Traceback" not in result.output


def test_bad_arguments_are_refused_before_anything_runs(tmp_path):
    settings = load_settings(None)
    with pytest.raises(ValueError, match="a replay runs one session"):
        load_replay_session("synthetic:1-2@5", settings)
    with pytest.raises(ValueError, match="a replay runs one session"):
        load_replay_session("synthetic-mix:1-2@5/only=ou", settings)
    with pytest.raises(ValueError, match="unknown generator family 'oo'"):
        load_replay_session("synthetic-mix:1@5/only=oo", settings)
    assert load_replay_session("synthetic-mix:1@2/only=ou", settings).info["family"] == "ou"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_replay_session(str(tmp_path / "nope.xdf"), settings)
    with pytest.raises(ValueError, match=r"'--sweep' key must be a policy threshold.*'min_pgd'"):
        run_replay("synthetic:1@5", settings, tmp_path, sweep=["min_pgdd=0.1"])
    with pytest.raises(ValueError, match=r"'--sweep' policy \{'min_pgd': 2\} is not valid"):
        run_replay("synthetic:1@5", settings, tmp_path, sweep=["min_pgd=2"])
    with pytest.raises(ValueError, match="'--sweep' needs --fast"):
        run_replay("synthetic:1@5", settings, tmp_path, mode="realtime", sweep=["min_pgd=0.5"])
    with pytest.raises(FileNotFoundError, match="model file"):
        run_replay("synthetic:1@5", settings, tmp_path, models=[tmp_path / "none.onnx"])


def test_a_recording_with_non_finite_values_replays_them_as_the_daemon_holds_them(tmp_path):
    """An amplifier that sent NaN or inf: the daemon's ingestor holds a value on a few
    channels at its channel's last finite value (the frame stays data) and keeps a frame with
    more than [ingest] max_non_finite_fraction of them as missing, the frame before held over;
    a replay must do the same, not hand the model a window it refuses ('window' must be
    finite) and stop."""
    session = generate_session(SynthConfig(duration_s=3.0, seed=5))
    frames = session.frames.copy()
    frames[300:303, 2, 3] = np.nan
    frames[500, :, :] = np.inf
    path = tmp_path / "faulty.xdf"
    write_xdf(path, Session(frames, session.timestamps, session.sample_rate_hz, session.grid))
    result, report = _replayed(tmp_path, path, "--stride", "64")
    assert result.exit_code == 0, result.output
    assert report["session"]["missing_frames"] == 0
    assert report["session"]["non_finite_frames"] == 1
    assert report["session"]["held_values"] == 3
    assert report["session"]["held_electrodes"] == [[2, 3]]
    assert report["models"]["default"]["loop"]["predictions"] > 0
    rate = session.sample_rate_hz
    timeline = lay_out(load_replay_session(str(path), load_settings(None)), rate, 64)
    assert np.isfinite(timeline.frames).all()
    assert np.flatnonzero(~timeline.valid).tolist() == [500]
    np.testing.assert_array_equal(timeline.frames[300:303, 2, 3], np.repeat(frames[299, 2, 3], 3))
    np.testing.assert_array_equal(timeline.frames[300:303, 2, 4], frames[300:303, 2, 4])
    np.testing.assert_array_equal(timeline.frames[500], frames[499])
    assert (timeline.missing, timeline.non_finite) == (0, 1)


def test_a_recording_with_an_electrode_nan_throughout_is_predicted_from_without_it(tmp_path):
    """One broken contact sent NaN the whole session. Every frame used to be missing (as the
    daemon kept them), and the replay was refused ('0 of 277 frames have finite values on
    every electrode'). Its frames are data, the electrode held flat: the loop predicts, and
    its wave estimate leaves the electrode out as dead, and one that picks up noise as noisy."""
    session = generate_session(SynthConfig(duration_s=3.0, seed=6))
    frames = session.frames.copy()
    frames[:, 3, 4] = np.nan
    frames[:, 9, 15] += np.random.default_rng(7).normal(0.0, 3e4, len(frames)).astype(np.float32)
    path = tmp_path / "broken.xdf"
    write_xdf(path, Session(frames, session.timestamps, session.sample_rate_hz, session.grid))
    result, report = _replayed(tmp_path, path, "--stride", "64")
    assert result.exit_code == 0, result.output
    assert report["session"]["non_finite_frames"] == 0
    assert report["session"]["held_values"] == session.n_frames
    assert report["session"]["held_electrodes"] == [[3, 4]]
    loop = report["models"]["default"]["loop"]
    assert loop["predictions"] > 0 and loop["refused_windows"] == 0
    assert loop["dead_electrodes"] == [[3, 4]]
    assert loop["noisy_electrodes"] == [[9, 15]]
    # Scored without them: the noisy one's noise, which nothing predicts, would be most of
    # every figure (here the model and persistence scored -10 dB with it, 21-22 dB without).
    assert report["session"]["electrodes_not_scored"] == [[3, 4], [9, 15]]
    psnr = report["models"]["default"]["accuracy"]["psnr_db"]
    assert np.mean(psnr["model"]) > 15 and np.mean(psnr["persistence"]) > 10


def test_a_recording_whose_frames_have_too_many_non_finite_electrodes_is_refused_naming_them(
    tmp_path,
):
    """Electrodes that sent NaN or inf the whole session, more than [ingest]
    max_non_finite_fraction of the grid (here 60 of 360): every frame is missing (as the
    daemon keeps them), so the replay is refused before anything runs, naming them, not
    failed by the AR fit's 'must hold at least 1000 usable (electrode, frame) rows'."""
    session = generate_session(SynthConfig(duration_s=1.0, seed=6))
    frames = session.frames.copy()
    frames[:, :3, :] = np.nan
    frames[::2, 5, 6] = np.inf
    path = tmp_path / "dead.xdf"
    write_xdf(path, Session(frames, session.timestamps, session.sample_rate_hz, session.grid))
    result, _ = _replayed(tmp_path, path)
    assert result.exit_code == 1
    assert (
        f"dead.xdf: 0 of {session.n_frames} frames have at most 0.1 of their electrodes NaN or "
        "infinite ([ingest] max_non_finite_fraction); one wave decision needs at least 80. NaN "
        "or infinite in every frame: electrodes (row, col) [(0, 0), (0, 1), (0, 2), (0, 3), "
        "(0, 4), (0, 5), (0, 6), (0, 7), ... (60 in all)]"
    ) in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output


def test_a_recording_that_drops_out_early_replays_its_ar_fitted_on_measured_frames(tmp_path):
    """A dropout over most of the session's first 60 % of slots: the AR baseline is fitted on
    the slots that hold the first 60 % of its measured frames, not failed with 'must hold at
    least 1000 usable (electrode, frame) rows'."""
    session = generate_session(SynthConfig(duration_s=3.0, seed=8))
    keep = np.r_[0:5, 495 : session.n_frames]
    path = tmp_path / "dropout.xdf"
    write_xdf(
        path,
        Session(
            session.frames[keep], session.timestamps[keep], session.sample_rate_hz, session.grid
        ),
    )
    result, report = _replayed(tmp_path, path, "--stride", "64")
    assert result.exit_code == 0, result.output
    assert report["session"]["missing_frames"] == 490
    assert report["models"]["default"]["loop"]["predictions"] > 0


def _replayed(tmp_path: Path, path: Path, *options: str) -> tuple[Result, dict | None]:
    """``corticast replay PATH`` with its report in ``tmp_path / "out"``: the command's result
    and the report, where one was written."""
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["replay", str(path), "--report", str(out), "--no-progress", *options]
    )
    written = out / "report.json"
    return result, json.loads(written.read_text()) if written.exists() else None


def test_an_undefined_psnr_is_never_written_nor_shown_as_a_perfect_one(truth_report, tmp_path):
    """report.json wrote +inf (MSE 0) and NaN (undefined) PSNR alike as null, and the page read
    null as +inf: a model with NaN at a horizon was reported as beating every baseline. Now
    +inf is "inf", NaN null, and an undefined PSNR beats nothing. ``report_json`` is what
    ``ReplayReport.write`` writes report.json and renders the page from."""
    horizons, windows = 16, 4
    mse = {name: np.full((windows, horizons), 1e-2) for name in ("persistence", "linear", "ar")}
    mse["model"] = np.full((windows, horizons), 1e-4)  # 20 dB above every baseline ...
    mse["model"][:, 0] = 0.0  # ... identical frames at +1 ...
    mse["model"][1, 4] = np.nan  # ... and an undefined score at +5
    scores = Scores(
        np.arange(windows), mse, {name: np.full((windows, horizons), 0.5) for name in mse}, 0
    )
    data = copy.deepcopy(truth_report["report"])  # its accuracy replaced, as the replay's was
    data["models"]["default"]["accuracy"] = accuracy_section(scores, np.zeros(windows, bool))
    written = json.loads(json.dumps(report_json(data), allow_nan=False))  # as report.json has it
    page = _Page(render_html(written))
    text = re.sub(r"\s+", " ", "".join(page.text))
    assert "does not beat every baseline at every horizon" in text
    psnr = written["models"]["default"]["accuracy"]
    assert psnr["psnr_db"]["model"][0] == "inf" and psnr["psnr_db"]["model"][4] is None
    assert psnr["pooled_psnr_db"]["model"] is None  # the NaN window spoils the pooled MSE
    rows = {row[0]: row[1] for row in page.tables[1][1:]}  # the model's column
    assert rows["+1 (3.6 ms)"] == "+inf" and rows["+5 (18.0 ms)"] == "n/a"
    assert rows["all horizons pooled"] == "n/a"
    assert page.tables[0][1][1] == "+inf"  # the summary's +1


def test_a_model_without_its_step_graph_in_stream_mode_is_refused_naming_both_files(tmp_path):
    """README: ``corticast replay session.xdf -r report/ -m a.onnx -m b.onnx``. A window graph
    alone (stream mode, the default, serves its step graph) is refused before the session is
    read, naming the model, the step graph it looked for and both ways out; exit 2: the same
    file fails again."""
    settings = load_settings(None)
    alone = tmp_path / "a.onnx"
    shutil.copyfile(settings.model.path, alone)
    result = runner.invoke(
        app,
        ["replay", "synthetic:1@2", "-r", str(tmp_path / "r"), "-m", str(alone), "--no-progress"],
    )
    assert result.exit_code == 2, result.output
    assert str(alone) in result.output and str(tmp_path / "a.step.onnx") in result.output
    assert "--step" in result.output and "mode" in result.output
    assert "Traceback" not in result.output
