"""The evaluation report of a replay: ``report.json``, PNG figures and ``report.html``.

Built from what the loop published (one :class:`~bench.replay.record.ReplayRecord` per model)
and the session's timeline and ground truth. Every number carries its unit and definition in
the JSON itself (``definitions``), so the file can be read without this code; the HTML shows
the same numbers with a short summary first. The JSON is strict (no NaN tokens: missing or
undefined values are ``null``), but a PSNR of +inf (MSE 0: identical frames, a perfect
prediction) is written as the string ``"inf"``, so that it is never confused with an undefined
one (NaN, ``null``), which beats nothing.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.ground_truth import PATTERN_LABELS
from bench.data.stimulation import STREAMS_KEY
from bench.replay import _plots as plots
from bench.replay._html import render_html
from bench.replay._models import ModelChoice
from bench.replay._prediction_scorer import PREDICTORS_AND_BASELINES, Scores
from bench.replay._stim import ONSET_TOLERANCE_S, decisions, score, seizure_episodes
from bench.replay._waves import TrueWaves, block_summary, errors, truth_per_window
from bench.replay.record import ReplayRecord
from bench.replay.timeline import Timeline
from models.plots import plot_psnr_curves
from service.config import PolicySettings, Settings
from service.core.atomic_write import write_atomically
from service.core.scores import DATA_RANGE, PSNR_SCALE, psnr_db

FORMAT = "corticast.replay/1"
STRIP_HORIZONS = (1, 4, 8, 16)
"""Predicted frames shown in the prediction strips."""
HORIZONS = 16
DEFINITIONS = {
    "slot": "one nominal frame period (3.6 ms at 277.78 Hz) of the daemon's ring buffer; a "
    "dropped sample is a placeholder slot holding the last frame, marked invalid",
    "horizon": "predicted frame k = 1..16, k frame periods after the newest measured frame",
    "units": "scores are in the first model's normalised units ((µV - mean) / scale per "
    "electrode, scale = 4 training s.d.; for a robust-online first model, the median and "
    "4 x 1.4826 x MAD it had at each window's newest frame), so every model and baseline is "
    "scored alike",
    "psnr_db": f"10 log10(R² / MSE) with R = {DATA_RANGE:g} normalised units (±4 training s.d., "
    "the range the models' output can reach; the one scale of corticast evaluate, the "
    "benchmarks and the daemon's live accuracy), MSE pooled over all electrodes and scored "
    'windows at that horizon; the string "inf" where the MSE is 0 (identical frames), null '
    "where the PSNR is undefined (NaN)",
    "pooled_psnr_db": "the same with the MSE pooled over all 16 horizons too",
    "ssim": "structural similarity per frame (7x7 uniform window, R as above, scikit-image's "
    "definition), averaged over scored windows; 1 = identical",
    "scored_window": "a prediction whose 16 true frames were all recorded (none dropped)",
    "fast_vs_realtime": "the two modes score different windows: --fast runs every stride-th "
    "window (default 32; one due on a gap's placeholder runs at the frame after the gap, as "
    "in the daemon) and skips none for lack of time; --realtime scores what a daemon at "
    "[scheduler] stride (default 1) ran live, less the windows it could not keep up with "
    "(counted under latency). Pooled figures of the two therefore differ by which windows "
    "they average; in stream mode a window's prediction can also differ a little, because the "
    "carried state depends on the frames fed before it (re-primed every [model] "
    "reprime_every_frames). Compare models within one mode",
    "model": "what the loop published: with [loop] blend_enabled (the daemon's default), the "
    "model blended per horizon with persistence and, with [loop] blend_ar (default), the live "
    "AR baseline refitted on the session's last seconds as the daemon refits it, by the "
    "weights fitted on the live scores (service.loop.blend); otherwise the model's own "
    "prediction",
    "persistence": "baseline: the newest measured frame repeated for 16 frames",
    "linear": "baseline: each electrode's last change continued, x_t + k (x_t - x_{t-1})",
    "ar": "baseline (fitted AR): each electrode from its own last 11 frames and its 4 "
    "neighbours' mean last frame plus a bias, 13 coefficients shared by all electrodes, fitted "
    "by least squares on the first 60 % of the session's measured frames, rolled forward "
    "16 frames",
    "wave_errors": "per predicted frame: |speed - reference| / reference (%) and "
    "|direction - reference| wrapped to [0, 180] deg, on frames where the reference is "
    "defined; medians",
    "true_frame_estimate": "the loop's wave estimator on the same block with the 16 frames "
    "that really followed in place of the prediction (the estimator's error alone); "
    "'predicted vs true frames' compares the two estimates, on frames where the ground truth "
    "defines one velocity when the session has ground truth",
    "trigger": "a stimulation request the bridge admitted (it passed every interlock: "
    "refractory, budgets, data age, ...); the replay's bridge is a dry run and sends nothing",
    "sensitivity": "fraction of ground-truth seizures with at least one trigger between "
    f"{ONSET_TOLERANCE_S:g} s before onset and offset",
    "false_triggers_per_hour": "triggers outside every seizure window per hour of session "
    "time outside seizures",
    "lead_before_onset_s": "annotated onset minus the first trigger's time (negative: the "
    "first trigger came after onset)",
    "lead_time_to_target_s": "the policy's predicted arrival of the wavefront at the target "
    "region after the newest measured frame",
    "age_ms": "newest frame written to the ring -> prediction published (realtime: the "
    "daemon's clock; fast: compute time only, there is no waiting)",
    "lsl_to_received_ms": "realtime only: LSL timestamp of the newest input frame (when the "
    "rig pushed it) -> prediction received by the replay's ZeroMQ subscriber",
    "x_realtime": "session duration x models / wall time of the loop's runs (model load "
    "and warm-up included; reading the session, the estimates on true frames and the report "
    "excluded)",
    "x_realtime_total": "the same over the whole replay: reading the session to writing the report",
    "x_realtime_cpu": "session duration x models / CPU time the replay process spent in the "
    "loop's runs (all its threads); with the machine to itself the wall time is at most this, "
    "so it bounds the speed there from below (fast mode; in realtime the work is done in the "
    "spawned daemon)",
}


@dataclass
class ReplayRun:
    """Everything a report is built from."""

    spec: str
    settings: Settings
    config: Path | None
    mode: str
    stride: int
    timeline: Timeline
    session_info: dict[str, Any]
    models: list[ModelChoice]
    records: list[ReplayRecord]
    variants: list[tuple[dict[str, Any], PolicySettings]]
    true_waves: TrueWaves
    scored_channels: np.ndarray
    """(rows, cols) bool: the channels every prediction was scored on (the session's dead and
    noisy ones left out)."""
    replay_wall_s: float
    started_at: float
    timings: dict[str, float] = field(default_factory=dict)
    examples: list[tuple[str, int]] = field(default_factory=list)


NO_TARGET = (
    "No target region is configured ([policy] target_electrodes is empty):\n"
    "the policy never requests stimulation. Configure one to see decisions."
)
"""Why a replay has no stimulation request, in the HTML report and across ``decisions.png``."""


class ReplayReport:
    """The report of one replay run; :meth:`write` puts it in a directory."""

    def __init__(self, run: ReplayRun) -> None:
        self.run = run
        self.episodes = seizure_episodes(run.timeline)
        self.data: dict[str, Any] = self._build()

    def write(self, directory: Path, *, figures: bool = True) -> Path:
        """Write the figures (unless ``figures`` is False: drawing them takes most of a short
        session's report), ``report.json`` and ``report.html``; returns the HTML's path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        self.data["figures"] = self._figures(directory) if figures else {}
        self.data["run"]["report_wall_s"] = time.perf_counter() - started
        total = time.perf_counter() - self.run.started_at
        self.data["run"]["total_wall_s"] = total
        self.data["run"]["x_realtime_total"] = (
            self.run.timeline.duration_s * len(self.run.models) / total
        )
        strict = report_json(self.data)
        write_atomically(
            directory / "report.json", json.dumps(strict, indent=1, allow_nan=False) + "\n"
        )
        html = directory / "report.html"
        write_atomically(html, render_html(strict))
        return html

    # ------------------------------------------------------------------ numbers
    def _build(self) -> dict[str, Any]:
        run = self.run
        timeline = run.timeline
        duration = timeline.duration_s
        models = {}
        for choice, record in zip(run.models, run.records, strict=True):
            models[choice.name] = self._model_section(choice, record)
        return {
            "format": FORMAT,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "session": {
                "spec": run.spec,
                "slots": len(timeline),
                "missing_frames": timeline.missing,
                "non_finite_frames": timeline.non_finite,
                "stimulation_trains": timeline.trains,
                "marker_stream_openings": timeline.stream_openings,
                "blanked_frames": timeline.blanked_frames,
                "marker_streams": run.session_info.get(STREAMS_KEY, []),
                "held_values": int(timeline.held.sum()),
                "held_electrodes": np.argwhere(timeline.held > 0).tolist(),
                "electrodes_not_scored": np.argwhere(~run.scored_channels).tolist(),
                "duration_s": duration,
                "sample_rate_hz": timeline.sample_rate_hz,
                "ground_truth": timeline.truth is not None,
                "seizures": self.episodes,
                "patterns": self._pattern_seconds(),
                "info": _session_summary(run.session_info),
            },
            "run": {
                "mode": run.mode,
                "stride": run.stride,
                "models": [choice.name for choice in run.models],
                "config": None if run.config is None else str(run.config),
                "replay_wall_s": run.replay_wall_s,
                **run.timings,
                "x_realtime": duration * len(run.models) / run.replay_wall_s,
                "x_realtime_cpu": duration * len(run.models) / run.timings["replay_cpu_s"]
                if run.timings.get("replay_cpu_s")
                else None,
                "backend": run.settings.model.backend,
                "threads": run.settings.model.threads,
                "scheduler": run.settings.scheduler.model_dump(mode="json")
                | {"stride": run.stride},
                "policy": run.settings.policy.model_dump(mode="json"),
                "waves": run.settings.waves.model_dump(mode="json"),
                "interlocks": run.settings.interlocks.model_dump(mode="json"),
                "sweep": [values for values, _ in run.variants[1:]],
            },
            "definitions": DEFINITIONS,
            "waves_true_frames": self._true_wave_errors(),
            "models": models,
        }

    def _model_section(self, choice: ModelChoice, record: ReplayRecord) -> dict[str, Any]:
        run = self.run
        scores = record.scorer.scores()
        predictions = record.predictions
        rows = decisions(record.stims[0], run.timeline)
        stim = score(rows, self.episodes, run.timeline.duration_s)
        stim["policy_decisions"] = record.policy_checks[0]
        stim["decisions"] = rows
        return {
            "model": {
                "path": str(choice.path),
                "family": choice.metadata.family,
                "config": choice.metadata.config,
                "predictor": record.predictor,
            },
            "loop": dict(record.counters)
            | {"published_predictions": len(predictions["input_seq"])}
            | {"dead_electrodes": record.dead_electrodes}
            | {"noisy_electrodes": record.noisy_electrodes}
            | self._alignment(predictions),
            "accuracy": self._accuracy(scores),
            "latency_ms": _latency(predictions),
            "waves": self._model_wave_errors(record),
            "stimulation": stim,
            "sweep": self._sweep(record),
        }

    def _alignment(self, predictions: dict[str, np.ndarray]) -> dict[str, Any]:
        """Do the published slot numbers name the frames the report looks up?

        Each prediction carries its newest frame's slot and LSL timestamp; the timestamp
        minus that slot's session time is the same for all (the rig's start, in realtime; 0
        in fast mode) unless slots were lost or added on the way. Predictions more than half
        a frame off that constant are counted as misaligned."""
        seq = predictions["input_seq"]
        if seq.size == 0:
            return {"timestamp_offset_s": None, "misaligned_predictions": 0}
        times = self.run.timeline.times_s
        inside = seq < len(times)
        offsets = predictions["input_timestamp"][inside] - times[seq[inside]]
        offset = float(np.median(offsets))
        half = 0.5 / self.run.timeline.sample_rate_hz
        off = np.count_nonzero(np.abs(offsets - offset) > half) + np.count_nonzero(~inside)
        return {"timestamp_offset_s": offset, "misaligned_predictions": int(off)}

    def _accuracy(self, scores: Scores) -> dict[str, Any]:
        return accuracy_section(scores, self._window_in_seizure(scores.input_seq))

    def _window_in_seizure(self, seqs: np.ndarray) -> np.ndarray:
        """Whether each window's first predicted frame lies in a ground-truth seizure."""
        flags = self.run.timeline.truth_at("seizure")
        if flags is None or seqs.size == 0:
            return np.zeros(seqs.shape, dtype=bool)
        return flags[np.minimum(seqs + 1, len(flags) - 1)]

    def _true_wave_errors(self) -> dict[str, Any]:
        true = self.run.true_waves
        out: dict[str, Any] = {"windows": int(true.seq.size), "vs_truth": None}
        truth = truth_per_window(self.run.timeline, true.seq)
        if truth is not None and true.seq.size:
            out["vs_truth"] = errors(true.speed_mps, true.direction_deg, *truth)
        return out

    def _model_wave_errors(self, record: ReplayRecord) -> dict[str, Any]:
        waves = record.waves
        out: dict[str, Any] = {
            "windows": int(waves["input_seq"].size),
            "predicted_vs_truth": None,
            "predicted_vs_true_frames": None,
        }
        if waves["input_seq"].size == 0:
            return out
        truth = truth_per_window(self.run.timeline, waves["input_seq"])
        if truth is not None:
            out["predicted_vs_truth"] = errors(waves["speed_mps"], waves["direction_deg"], *truth)
        true = self.run.true_waves
        common, mine, theirs = np.intersect1d(waves["input_seq"], true.seq, return_indices=True)
        if common.size:
            # With ground truth, only frames that hold one travelling wave: elsewhere both
            # estimates describe noise, and their difference says nothing about the model.
            truth = truth_per_window(self.run.timeline, common)
            out["predicted_vs_true_frames"] = errors(
                waves["speed_mps"][mine],
                waves["direction_deg"][mine],
                true.speed_mps[theirs],
                true.direction_deg[theirs],
                where=None if truth is None else np.isfinite(truth[0]) & np.isfinite(truth[1]),
            )
        return out

    def _sweep(self, record: ReplayRecord) -> list[dict[str, Any]] | None:
        variants = self.run.variants
        if len(variants) < 2:
            return None
        # The configured policy (variant 0) is the reference each variant is read against:
        # its row holds its own values of the swept thresholds.
        configured = variants[0][1]
        table = []
        for index, (values, _) in enumerate(variants):
            if index == 0:
                values = {key: getattr(configured, key) for key in variants[1][0]}
            rows = decisions(record.stims[index], self.run.timeline)
            result = score(rows, self.episodes, self.run.timeline.duration_s)
            table.append(
                {
                    "values": values,
                    "configured": index == 0,
                    "requests": result["requests"],
                    "triggers": result["triggers"],
                    "sensitivity": result["sensitivity"],
                    "false_triggers": result["false_triggers"],
                    "false_triggers_per_hour": result["false_triggers_per_hour"],
                    "triggers_per_hour": result["triggers_per_hour"],
                    "median_lead_before_onset_s": result["median_lead_before_onset_s"],
                    "policy_decisions": record.policy_checks[index],
                }
            )
        return table

    def _pattern_seconds(self) -> dict[str, float] | None:
        labels = self.run.timeline.truth_at("label")
        if labels is None:
            return None
        counts = np.bincount(labels[labels >= 0], minlength=len(PATTERN_LABELS))
        period = 1.0 / self.run.timeline.sample_rate_hz
        return {name: float(counts[i] * period) for i, name in enumerate(PATTERN_LABELS)}

    # ------------------------------------------------------------------ figures
    def _figures(self, directory: Path) -> dict[str, str]:
        run = self.run
        names = [choice.name for choice in run.models]
        figures = self._accuracy_figures(directory, names)
        kept = {record.name: record.examples for record in run.records}
        if run.examples and any(kept.values()):
            plots.plot_strips(
                directory / "strips.png",
                run.timeline.frames,
                run.timeline.times_s,
                run.examples,
                kept,
                STRIP_HORIZONS,
                1e3 / run.timeline.sample_rate_hz,
            )
            figures["strips"] = "strips.png"
        series = self._wave_series()
        if len(series) > 1 or (series and self.run.timeline.truth is not None):
            plots.plot_waves(
                directory / "waves.png",
                series,
                self.episodes,
                title="Wave speed and direction of the 16 predicted frames of each window",
            )
            figures["waves"] = "waves.png"
            if self.episodes:
                onset, offset = self.episodes[0]
                plots.plot_waves(
                    directory / "waves_first_seizure.png",
                    series,
                    self.episodes,
                    xlim=(max(0.0, onset - 3.0), offset + 2.0),
                    title="The same around the first ground-truth seizure",
                )
                figures["waves_first_seizure"] = "waves_first_seizure.png"
        lanes = {n: self.data["models"][n]["stimulation"]["decisions"] for n in names}
        plots.plot_decisions(
            directory / "decisions.png",
            lanes,
            self.episodes,
            run.timeline.duration_s,
            none_because=NO_TARGET
            if not run.settings.policy.target_electrodes
            else "No request: no predicted wave met every policy threshold in this session.",
        )
        figures["decisions"] = "decisions.png"
        plots.plot_latency(directory / "latency.png", _latency_samples(run.records))
        figures["latency"] = "latency.png"
        sweeps = {
            n: self.data["models"][n]["sweep"] for n in names if self.data["models"][n]["sweep"]
        }
        if sweeps and self.episodes:
            plots.plot_sweep(directory / "sweep.png", sweeps)
            figures["sweep"] = "sweep.png"
        return figures

    def _accuracy_figures(self, directory: Path, names: list[str]) -> dict[str, str]:
        """PSNR (the models' own figure, ``models.plots``) and SSIM against horizon."""
        baselines = ("persistence", "linear", "ar")
        first = self.data["models"][names[0]]["accuracy"]
        if not first["psnr_db"]:
            return {}
        accuracy = {n: self.data["models"][n]["accuracy"] for n in names}
        psnr = {n: np.array(a["psnr_db"]["model"], dtype=float) for n, a in accuracy.items()}
        ssim = {n: np.array(a["ssim"]["model"], dtype=float) for n, a in accuracy.items()}
        pooled = {n: a["pooled_psnr_db"]["model"] for n, a in accuracy.items()}
        for baseline in baselines:
            psnr[baseline] = np.array(first["psnr_db"][baseline], dtype=float)
            ssim[baseline] = np.array(first["ssim"][baseline], dtype=float)
            pooled[baseline] = first["pooled_psnr_db"][baseline]
        labels = {
            name: f"{name}{' (baseline)' if name in baselines else ''}: "
            f"{_db(pooled[name])} dB pooled"
            for name in psnr
        }
        run = self.run
        caption = (
            f"{first['scored_windows']} windows of {run.spec}, replay ({run.mode}, stride "
            f"{run.stride}); {PSNR_SCALE} (10 log10(R²/MSE), ±4 training s.d.) of model "
            f"{names[0]}"
        )
        plot_psnr_curves(directory / "psnr.png", psnr, labels, dashed=baselines, caption=caption)
        plots.plot_ssim(directory / "ssim.png", ssim, baselines, 1e3 / run.timeline.sample_rate_hz)
        return {"psnr": "psnr.png", "ssim": "ssim.png"}

    def _wave_series(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per window: time of its first predicted frame, median speed, mean direction."""
        timeline = self.run.timeline
        series: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        true = self.run.true_waves

        def at(seqs: np.ndarray) -> np.ndarray:
            return timeline.times_s[np.minimum(seqs + 1, len(timeline) - 1)]

        truth = truth_per_window(timeline, true.seq)
        if truth is not None:
            speed, direction = block_summary(truth[0], truth[1])
            series["ground truth (generator)"] = (at(true.seq), speed, direction)
        series["estimated on the true frames"] = (
            at(true.seq),
            *block_summary(true.speed_mps, true.direction_deg, true.wave),
        )
        for record in self.run.records:
            waves = record.waves
            if waves["input_seq"].size:
                speed, direction = block_summary(
                    waves["speed_mps"], waves["direction_deg"], waves["wave"]
                )
                series[f"estimated on predicted frames ({record.name})"] = (
                    at(waves["input_seq"]),
                    speed,
                    direction,
                )
        return series


def accuracy_section(scores: Scores, in_seizure: np.ndarray) -> dict[str, Any]:
    """A model's ``accuracy`` in the report: PSNR (at ``service.core.scores.DATA_RANGE``, the
    scale of ``corticast evaluate`` too) and SSIM per horizon, and PSNR pooled over all scored
    windows and over those in and outside seizures (``in_seizure``: one flag per window)."""
    out: dict[str, Any] = {
        "scored_windows": int(scores.input_seq.size),
        "unscorable_windows": scores.unscorable,
        "held_values_not_scored": scores.held_values_not_scored,
        "data_range": DATA_RANGE,
        "psnr_db": {},
        "ssim": {},
        "pooled_psnr_db": {},
        "pooled_psnr_db_in_seizure": {},
        "pooled_psnr_db_outside_seizure": {},
    }
    if scores.input_seq.size == 0:
        return out
    for name in PREDICTORS_AND_BASELINES:
        mse, ssim = scores.mse[name], scores.ssim[name]
        out["psnr_db"][name] = psnr_db(mse.mean(axis=0)).tolist()
        out["ssim"][name] = ssim.mean(axis=0).tolist()
        out["pooled_psnr_db"][name] = float(psnr_db(mse.mean()))
        for key, mask in (("in_seizure", in_seizure), ("outside_seizure", ~in_seizure)):
            value = float(psnr_db(mse[mask].mean())) if mask.any() else None
            out[f"pooled_psnr_db_{key}"][name] = value
    out["windows_in_seizure"] = int(np.count_nonzero(in_seizure))
    return out


def _latency(predictions: dict[str, np.ndarray]) -> dict[str, Any]:
    samples = _latency_ms(predictions)
    return {name: _percentiles(values) for name, values in samples.items()} | {
        "skipped_windows_reported_by_predictions": int(predictions["skipped_before"].sum()),
        "windows_with_missing_frames": int(np.count_nonzero(predictions["missing_frames"])),
    }


def _latency_ms(predictions: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per prediction, in ms. ``lsl_to_received`` is only defined in realtime, where the newest
    frame's LSL timestamp is the rig's push time on the same machine's clock."""
    return {
        "inference": 1e3 * predictions["inference_s"],
        "age": 1e3 * predictions["age_s"],
        "transit": 1e3 * predictions["transit_s"],
        "lsl_to_received": 1e3 * (predictions["received_at"] - predictions["input_timestamp"]),
    }


def _latency_samples(records: Sequence[ReplayRecord]) -> dict[str, dict[str, np.ndarray]]:
    return {record.name: _latency_ms(record.predictions) for record in records}


def _percentiles(values: np.ndarray) -> dict[str, float | None] | None:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    p50, p90, p99 = np.percentile(finite, [50, 90, 99])
    return {
        "n": int(finite.size),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "max": float(finite.max()),
    }


def _session_summary(info: dict[str, Any]) -> dict[str, Any]:
    """What the session says about itself, without its bulky parts."""
    out = {k: v for k, v in info.items() if k in ("generator", "seed", "n_frames_generated")}
    episodes = info.get("episodes")
    if isinstance(episodes, list):
        out["episodes"] = [
            {k: e.get(k) for k in ("kind", "start_s", "duration_s")} for e in episodes[:200]
        ]
    artefacts = info.get("artefacts")
    if isinstance(artefacts, dict):
        out["artefacts"] = {k: v for k, v in artefacts.items() if not isinstance(v, list)}
    return out


PSNR_KEYS = (
    "psnr_db",
    "pooled_psnr_db",
    "pooled_psnr_db_in_seizure",
    "pooled_psnr_db_outside_seizure",
)
"""The PSNR figures of a model's ``accuracy``: where +inf is written "inf"."""


def report_json(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` in report.json's form (what the page is rendered from too): strict JSON,
    NaN and missing values null, but each PSNR of ±inf written "inf" / "-inf", so a perfect
    prediction and an undefined score stay apart."""
    models = {
        name: {**entry, "accuracy": _infinities_named(entry["accuracy"])}
        for name, entry in data["models"].items()
    }
    return _strict({**data, "models": models})


def _infinities_named(accuracy: dict[str, Any]) -> dict[str, Any]:
    return accuracy | {
        key: {name: _db_json(value) for name, value in accuracy[key].items()} for key in PSNR_KEYS
    }


def _db_json(value: Any) -> Any:
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_db_json(v) for v in value]
    if value is not None and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def _strict(value: Any) -> Any:
    """NaN/inf -> None, numpy -> plain Python, tuples -> lists: strict JSON."""
    if isinstance(value, dict):
        return {str(k): _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    if isinstance(value, np.ndarray):
        return _strict(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def _db(value: float | None) -> str:
    """A pooled PSNR for a legend: "n/a" undefined (NaN) or missing, "+inf" for MSE 0."""
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value:+}" if math.isinf(value) else f"{value:.2f}"
