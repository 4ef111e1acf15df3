"""Replay a recorded or generated session through the closed loop and report what it did.

Before a setting is used on an animal, researchers replay recorded sessions and look at what
the system would have predicted and done (as responsive-neurostimulation systems simulate
detection settings on stored recordings). :func:`run_replay` reads the session, lays it out
as the daemon's ring holds it, runs every model over exactly the same frames, either in
process (``fast``, :mod:`bench.replay.fast`) or through a real LSL outlet into a spawned
daemon (``realtime``, :mod:`bench.replay.realtime`), then writes the report
(:mod:`bench.replay.report`). ``corticast replay`` is the command line of it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from bench.data.ground_truth import PATTERN_LABELS
from bench.data.session import Session
from bench.data.stimulation import STREAMS_KEY, stream_named
from bench.replay._audit_log import audit_logs_moved_into
from bench.replay._input import load_replay_session
from bench.replay._models import ModelChoice, choose_models, timeline_stats
from bench.replay._prediction_scorer import PredictionScorer, fit_session_ar
from bench.replay._sweep import sweep_variants
from bench.replay._waves import live_channels, true_frame_waves
from bench.replay.fast import DEFAULT_STRIDE, FastReplay
from bench.replay.realtime import RealtimeReplay
from bench.replay.record import ReplayRecord
from bench.replay.report import ReplayReport, ReplayRun
from bench.replay.timeline import Timeline, lay_out, ring_capacity
from service.config import Settings
from service.core.autoregressive import FittedAutoregressive
from service.core.progress import Progress
from service.inference.predictor import StreamSpec

REPLAY_MODES = ("fast", "realtime")

_log = logging.getLogger("corticast.replay")


_PATTERN_EXAMPLES = (("seizure", "seizure"), ("plane wave", "plane"), ("background", "background"))
"""Example windows for the prediction strips: (title, ground-truth pattern label)."""


@dataclass(frozen=True)
class ReplayResult:
    """Where the report went, and its contents (``report.json`` as a dict)."""

    html: Path
    json: Path
    report: dict[str, Any]


def run_replay(
    spec: str,
    settings: Settings,
    report_dir: Path,
    *,
    models: Sequence[Path] = (),
    mode: str = "fast",
    config: Path | None = None,
    stride: int | None = None,
    sweep: Sequence[str] = (),
    stream_name: str | None = None,
    progress: Callable[[int, int], Progress] | None = None,
    batch: bool = True,
    figures: bool = True,
) -> ReplayResult:
    """Replay ``spec`` through every model's loop and write the report into ``report_dir``.

    Parameters
    ----------
    spec
        A session file (``.xdf``, ``.xdfz``, ``.nwb``), ``synthetic:SEED@SECONDS`` or
        ``synthetic-mix:SEED@SECONDS`` (``models.sources``).
    settings
        The daemon's configuration (``config`` plus environment), as the loop would run.
    report_dir
        Created if missing; receives ``report.html``, ``report.json``, the PNGs, and the
        dry-run bridges' audit logs (and in realtime, each daemon's log), each replacing an
        earlier replay's (an audit log is not appended to: its trains would count); not their
        lock files (``bench.replay._audit_log``).
    models
        Exported window graphs to compare; none: the configured model.
    mode
        ``"fast"`` (in-process, no waiting) or ``"realtime"`` (LSL -> spawned daemon).
    config
        The TOML file ``settings`` came from; the realtime daemon is started with it.
    stride
        Frames between predictions: fast default ``DEFAULT_STRIDE``, realtime default the
        configured ``[scheduler] stride``.
    sweep
        ``key=v1,v2,...`` policy thresholds to sweep (fast mode only).
    stream_name
        Stream (XDF) or ElectricalSeries (NWB) to replay when a file holds several.
    progress
        ``progress(total, models)`` returns a bar (``update(n)``, ``close()``; tqdm is one)
        fed with the slots processed; None: quiet.
    batch
        Fast mode: compute predictions ahead in batches (``bench.replay.fast``); the same
        predictions as without.
    figures
        Draw the report's figures; without them the report holds the same numbers, written
        sooner (``ReplayReport.write``).

    Raises
    ------
    ValueError, FileNotFoundError, bench.data.session_io.SessionFileError,
    service.inference.predictor.ModelMismatchError
        Bad arguments, a session or model that does not fit the configuration.
    """
    started_at = time.perf_counter()
    _check_arguments(mode, sweep, stride)
    rate = settings.stream.sample_rate_hz
    stream = StreamSpec(sample_rate_hz=rate)
    choices = choose_models(models, settings, stream)
    variants = [({}, settings.policy), *sweep_variants(sweep, settings.policy, settings.interlocks)]
    session = load_replay_session(spec, settings, stream_name=stream_name)
    _log_marker_streams(spec, session)
    timeline = lay_out(
        session,
        rate,
        ring_capacity(settings.ingest.ring_seconds, rate),
        max_non_finite_fraction=settings.ingest.max_non_finite_fraction,
    )
    timings = {"read_s": time.perf_counter() - started_at}
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)

    used_stride = stride or (DEFAULT_STRIDE if mode == "fast" else settings.scheduler.stride)
    bar = progress(len(timeline) * len(choices), len(choices)) if progress else None
    tick = bar.update if bar is not None else (lambda _: None)
    online = choices[0].online
    units = None if online is None else timeline_stats(timeline, online)
    scoring = choices[0].normalisation
    scored = live_channels(timeline)
    ar = fit_session_ar(timeline, *scoring, stats=units, channels=scored)
    examples = _example_windows(timeline, stream.past_frames)
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        with audit_logs_moved_into(report_dir) as audit_dir:
            runner: FastReplay | RealtimeReplay
            if mode == "fast":
                runner = FastReplay(
                    settings,
                    stride=used_stride,
                    policies=[policy for _, policy in variants],
                    audit_dir=audit_dir,
                    progress=tick,
                    batch=batch,
                )
            else:
                runner = RealtimeReplay(
                    settings, config, stride=stride, log_dir=report_dir, audit_dir=audit_dir,
                    progress=tick,
                )  # fmt: skip
            records = _replay_each(
                runner, choices, session, timeline, examples, variants, (scoring, scored), units, ar
            )
    finally:
        if bar is not None:
            bar.close()
    replay_wall = time.perf_counter() - started
    timings["replay_cpu_s"] = time.process_time() - cpu_started

    window_seqs = np.concatenate([record.waves["input_seq"] for record in records])
    began = time.perf_counter()
    true_waves = true_frame_waves(timeline, window_seqs, settings.waves, live=scored)
    timings["true_frame_waves_s"] = time.perf_counter() - began
    run = ReplayRun(
        spec=spec,
        settings=settings,
        config=config,
        mode=mode,
        stride=used_stride,
        timeline=timeline,
        session_info=session.info,
        models=choices,
        records=records,
        variants=variants,
        true_waves=true_waves,
        scored_channels=scored,
        replay_wall_s=replay_wall,
        started_at=started_at,
        timings=timings,
        examples=examples,
    )
    report = ReplayReport(run)
    html = report.write(report_dir, figures=figures)
    return ReplayResult(html=html, json=report_dir / "report.json", report=report.data)


def _log_marker_streams(spec: str, session: Session) -> None:
    """Which of the recording's marker streams' trains the replay blanks, and which it left
    out (another rig's), and why: the report says it too."""
    for entry in session.info.get(STREAMS_KEY, []):
        _log.info(
            "replay %s: stimulation marker stream %s %s: %s",
            spec, stream_named(entry),
            "applied" if entry["applied"] else "left out", entry["why"],
        )  # fmt: skip


def _check_arguments(mode: str, sweep: Sequence[str], stride: int | None) -> None:
    if mode not in REPLAY_MODES:
        raise ValueError(f"'mode' must be one of {REPLAY_MODES}, got {mode!r}")
    if sweep and mode != "fast":
        raise ValueError(
            "'--sweep' needs --fast: each policy variant is judged on the same predictions in "
            "one in-process run (a realtime sweep would replay the session once per variant)"
        )
    if stride is not None and (not isinstance(stride, int) or stride < 1):
        raise ValueError(f"'--stride' must be an integer >= 1, got {stride!r}")


def _replay_each(
    runner: FastReplay | RealtimeReplay,
    choices: Sequence[ModelChoice],
    session: Session,
    timeline: Timeline,
    examples: list[tuple[str, int]],
    variants: list,
    scoring: tuple[tuple[np.ndarray, np.ndarray], np.ndarray],
    units: Any,
    ar: FittedAutoregressive,
) -> list[ReplayRecord]:
    """One record per model, each replayed over the whole session, scored on the channels
    ``scoring[1]`` in the units of ``scoring[0]`` (the first model's normalisation: every
    model on one scale), or per window in ``units`` (the causal statistics of a robust-online
    first model)."""
    (mean, scale), channels = scoring
    records = []
    # BLAS on one thread, as in the daemon: on a busy machine, threaded BLAS turns the small
    # matrix work of scoring and wave estimates into waiting.
    with threadpool_limits(1):
        for choice in choices:
            scorer = PredictionScorer(timeline, mean, scale, ar, stats=units, channels=channels)
            record = ReplayRecord(
                choice.name, scorer, [seq for _, seq in examples], variants=len(variants)
            )
            began = time.perf_counter()
            if isinstance(runner, FastReplay):
                runner.run(timeline, choice, record)
            else:
                runner.run(_artefact_blanked(session, timeline), choice, record)
            record.counters["wall_s"] = time.perf_counter() - began
            records.append(record)
    return records


def _artefact_blanked(session: Session, timeline: Timeline) -> Session:
    """``session`` as a realtime daemon must receive it: the frames ``timeline`` blanks as
    stimulation artefact all NaN, which its ingestor keeps as missing, holding the frame
    before, as its ring blanked them live (a daemon cannot know a recording's markers)."""
    if not timeline.blanked.any():
        return session
    frames = session.frames.copy()
    frames[timeline.source_index[timeline.blanked]] = np.nan
    return dataclasses.replace(session, frames=frames)


def _example_windows(
    timeline: Timeline, past_frames: int, horizons: int = 16
) -> list[tuple[str, int]]:
    """A few windows worth looking at: the middle of the first seizure, plane wave and
    background stretch in the ground truth; without it, a quarter, half and three quarters in.
    """
    n = len(timeline)
    lo, hi = past_frames - 1, n - horizons - 1
    if hi <= lo:
        return []
    labels = timeline.truth_at("label")
    chosen: list[tuple[str, int]] = []
    if labels is not None:
        for title, label in _PATTERN_EXAMPLES:
            run = _first_run(labels == PATTERN_LABELS.index(label))
            if run is not None:
                chosen.append((title, int(np.clip((run[0] + run[1]) // 2, lo, hi))))
    if not chosen:
        chosen = [(f"{q:.0%} in", int(lo + q * (hi - lo))) for q in (0.25, 0.5, 0.75)]
    return chosen


def _first_run(flags: np.ndarray, min_length: int = 64) -> tuple[int, int] | None:
    """Start and stop of the first run of True at least ``min_length`` long."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        if stop - start >= min_length:
            return int(start), int(stop)
    return None
