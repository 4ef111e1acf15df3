"""``replay --fast`` per window and batched, on the same session, in one run.

For each stride, the configured model's loop runs over the session twice through
``bench.replay.fast.FastReplay``: one window per model call (``--no-batch``), then with the
predictions computed ahead in batches (the default). Each row gives the loop's wall time and
the x real time it makes (session seconds / loop seconds, what ``corticast replay`` prints as
"loop"), the CPU time the process spent, and the inference time the records count (per window:
the call; batched: each window's share of its batch). The batched run must publish the same
predictions: every ``--check-every``-th window's future is compared bitwise, and the wave
estimates of every window. Ratios, not times, carry between machines: on a host shared with
other work, compare rows of one run only, and give ``--rounds`` > 1: the two paths then run
alternately (per window, batched, per window, ...) and each row is the median of its rounds,
so load that comes and goes falls on both.

Usage::

    corticast synth /tmp/session.xdf --seconds 60
    python -m bench.replay.speed /tmp/session.xdf --strides 32,1
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.replay._input import load_replay_session
from bench.replay._models import choose_models
from bench.replay._prediction_scorer import PredictionScorer, fit_session_ar
from bench.replay.fast import FastReplay
from bench.replay.record import ReplayRecord
from bench.replay.timeline import Timeline, lay_out, ring_capacity
from service.config import Settings, load_settings
from service.inference.predictor import StreamSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("session", help="session file (.xdf, .xdfz, .nwb) or synthetic:SEED@S")
    parser.add_argument("--strides", default="32,1", help="comma-separated (default 32,1)")
    parser.add_argument("--config", type=Path, help="corticast TOML (default: built-in)")
    parser.add_argument(
        "--check-every", type=int, default=16, help="compare every Nth window's future"
    )
    parser.add_argument("--rounds", type=int, default=1, help="alternating runs of each path")
    args = parser.parse_args()
    strides = [int(s) for s in args.strides.split(",")]
    settings = load_settings(args.config)
    rate = settings.stream.sample_rate_hz
    session = load_replay_session(args.session, settings)
    timeline = lay_out(
        session,
        rate,
        ring_capacity(settings.ingest.ring_seconds, rate),
        max_non_finite_fraction=settings.ingest.max_non_finite_fraction,
    )
    print(
        f"### replay --fast, per window vs batched ({args.session}, {timeline.duration_s:.1f} s; "
        f"{settings.model.mode} mode, {settings.model.backend}, {settings.model.threads} "
        f"model thread(s); {platform.processor() or platform.machine()}, {os.cpu_count()} "
        f"cores; median of {args.rounds} alternating round(s); load average before: "
        f"{os.getloadavg()[0]:.1f})\n"
    )
    print("| stride | path | windows | loop wall s | x real time | CPU s | x real time by CPU "
          "| inference s | speed-up |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for stride in strides:
        runs: dict[bool, list[dict]] = {False: [], True: []}
        for _ in range(args.rounds):
            for batch in (False, True):
                runs[batch].append(_run(settings, timeline, stride, args.check_every, batch=batch))
            _check_same(runs[False][-1]["record"], runs[True][-1]["record"])
        rows = {batch: _median(rounds) for batch, rounds in runs.items()}
        for batch, row in rows.items():
            speed_up = rows[False]["wall_s"] / row["wall_s"]
            print(
                f"| {stride} | {'batched' if batch else 'per window'} | {row['windows']} | "
                f"{row['wall_s']:.2f} | {timeline.duration_s / row['wall_s']:.1f}x | "
                f"{row['cpu_s']:.2f} | {timeline.duration_s / row['cpu_s']:.1f}x | "
                f"{row['inference_s']:.2f} | {speed_up:.2f}x |"
            )
    print(
        "\nBatched predictions and wave estimates equal the per-window ones (checked every "
        f"round); load average after: {os.getloadavg()[0]:.1f}."
    )


def _run(settings: Settings, timeline: Timeline, stride: int, every: int, *, batch: bool) -> dict:
    """One replay of the configured model; its record and what it cost."""
    rate = settings.stream.sample_rate_hz
    (model,) = choose_models([], settings, StreamSpec(sample_rate_hz=rate))
    ar = fit_session_ar(timeline, *model.normalisation)
    scorer = PredictionScorer(timeline, *model.normalisation, ar)
    checked = list(range(StreamSpec().past_frames - 1, len(timeline), stride * every))
    record = ReplayRecord(model.name, scorer, checked)
    with tempfile.TemporaryDirectory() as audit:
        replay = FastReplay(
            settings, stride=stride, policies=[settings.policy], audit_dir=Path(audit),
            batch=batch,
        )  # fmt: skip
        wall, cpu = time.perf_counter(), time.process_time()
        replay.run(timeline, model, record)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "record": record,
        "wall_s": wall,
        "cpu_s": cpu,
        "windows": record.counters["predictions"],
        "inference_s": float(record.predictions["inference_s"].sum()),
    }


def _median(rounds: list[dict]) -> dict:
    """Each figure's median over the rounds of one path."""
    figures = ("wall_s", "cpu_s", "inference_s")
    return {
        "windows": rounds[0]["windows"],
        **{name: float(np.median([r[name] for r in rounds])) for name in figures},
    }


def _check_same(alone: ReplayRecord, batched: ReplayRecord) -> None:
    """Raise unless the batched replay published what the per-window one did."""
    if batched.counters != alone.counters or batched.examples.keys() != alone.examples.keys():
        raise SystemExit(f"batched replay differs: {batched.counters} vs {alone.counters}")
    for seq, (used, future) in alone.examples.items():
        if batched.examples[seq][0] != used or not np.array_equal(batched.examples[seq][1], future):
            raise SystemExit(f"batched replay predicted other frames at window {seq}")
    for name, column in alone.waves.items():
        if not np.array_equal(batched.waves[name], column, equal_nan=True):
            raise SystemExit(f"batched replay estimated other waves ({name})")


if __name__ == "__main__":
    main()
