"""Accuracy and cost of the wave estimator on the generator's ground truth; prints markdown.

Plane waves over a grid of speeds, directions and SNRs are laid on the 1/f background; each
session is cut into blocks of ``past_frames`` measured frames plus 16 "predicted" frames (the
true continuation, i.e. a perfect predictor, so only the estimator is judged) and the estimate
on the predicted frames is scored against the per-frame ground truth. Radial, rotating, plane
and background-only sessions give the pattern confusion matrix. Cost is the wall time of
``WaveEstimator.estimate`` per block, over many blocks.

SNR is ``20 log10(wave rms / background rms)`` over the full band, the wave's rms being its
amplitude / sqrt(2).

Run: ``python -m bench.wave_accuracy`` (``--quick`` for a smaller grid).
"""

from __future__ import annotations

import os

# BLAS threads that spin on a loaded host make one small matrix product cost milliseconds;
# the daemon must run BLAS single-threaded too (set before numpy is imported).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from bench.ground_truth import PATTERN_LABELS
from bench.synth import (
    Background,
    Episode,
    PlaneWave,
    RadialWave,
    SpiralWave,
    SynthConfig,
    generate_session,
)
from service.wave_settings import WaveSettings
from service.waves import PATTERNS, WaveEstimator

BACKGROUND_RMS_UV = 20.0
SPEEDS_MPS = (0.05, 0.1, 0.2, 0.5, 1.0)
DIRECTIONS_DEG = (-180.0, -135.0, -90.0, -45.0, 0.0, 45.0, 90.0, 135.0)
SNRS_DB = (20.0, 10.0, 0.0)
FREQUENCY_HZ = 10.0
SESSION_S = 1.5
SETTLE_S = 0.3
"""Blocks start after the episode's ramp and the background's own start."""
BLOCK_STRIDE = 23
"""Frames between block starts: blocks overlap, but not in the same phase of the wave."""
TRUE_PATTERN = {"plane": "planar", "radial": "radial", "spiral": "rotating"}
"""The generator's label -> the estimator's pattern name; background is disorganised."""


@dataclass(frozen=True)
class Errors:
    """Per-frame speed (relative) and direction (degrees) errors of one condition."""

    speed: np.ndarray
    direction: np.ndarray


def amplitude_for(snr_db: float) -> float:
    """Wave amplitude (µV) whose rms is ``snr_db`` above the background's rms."""
    return math.sqrt(2.0) * BACKGROUND_RMS_UV * 10.0 ** (snr_db / 20.0)


def session_frames(episode: Episode | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames and per-frame truth labels of one background session with ``episode`` on it."""
    config = SynthConfig(
        duration_s=SESSION_S,
        seed=seed,
        background=Background(rms_uv=BACKGROUND_RMS_UV),
        episodes=() if episode is None else (episode,),
    )
    session = generate_session(config)
    return session.frames, session.truth


def blocks(n_frames: int, length: int, fs: float) -> Iterator[slice]:
    """Block positions over the settled part of a session."""
    for start in range(round(SETTLE_S * fs), n_frames - length + 1, BLOCK_STRIDE):
        yield slice(start, start + length)


def plane_errors(
    estimator: WaveEstimator, speed: float, snr_db: float, length: int, seeds: Sequence[int]
) -> Errors:
    """Errors on the predicted frames of plane waves at ``speed`` over all directions."""
    speed_err, dir_err = [], []
    for index, direction in enumerate(DIRECTIONS_DEG):
        seed = seeds[index % len(seeds)] * 1000 + index
        episode = PlaneWave(
            start_s=0.0,
            duration_s=SESSION_S,
            amplitude_uv=amplitude_for(snr_db),
            frequency_hz=FREQUENCY_HZ,
            speed_mps=speed,
            direction_deg=direction,
        )
        frames, truth = session_frames(episode, seed)
        for span in blocks(frames.shape[0], length, estimator.sample_rate_hz):
            estimate = estimator.estimate(frames[span])
            tail = estimate.predicted
            true_v = truth.velocity_mps[span][tail]
            true_speed = np.hypot(true_v[:, 0], true_v[:, 1])
            true_dir = np.degrees(np.arctan2(true_v[:, 1], true_v[:, 0]))
            speed_err.append(np.abs(estimate.speed_mps[tail] - true_speed) / true_speed)
            dir_err.append(
                np.abs((estimate.direction_deg[tail] - true_dir + 180.0) % 360.0 - 180.0)
            )
    return Errors(speed=np.concatenate(speed_err), direction=np.concatenate(dir_err))


def pattern_episodes(rng: np.random.Generator, snr_db: float) -> Iterator[Episode | None]:
    """Plane, radial (outward and inward), rotating (both senses) and background sessions."""
    amplitude = amplitude_for(snr_db)
    common = {"start_s": 0.0, "duration_s": SESSION_S, "amplitude_uv": amplitude}
    centre = (4.75e-3, 4.25e-3)
    for k in range(4):
        jitter = rng.uniform(-1.5e-3, 1.5e-3, size=2)
        x, y = centre[0] + jitter[0], centre[1] + jitter[1]
        yield PlaneWave(
            **common,
            frequency_hz=float(rng.uniform(6.0, 14.0)),
            speed_mps=float(rng.uniform(0.05, 0.5)),
            direction_deg=float(rng.uniform(-180.0, 180.0)),
        )
        yield RadialWave(
            **common,
            frequency_hz=float(rng.uniform(6.0, 14.0)),
            speed_mps=float(rng.uniform(0.08, 0.3)),
            source_x_m=x,
            source_y_m=y,
            inward=bool(k % 2),
        )
        yield SpiralWave(
            **common,
            frequency_hz=float(rng.uniform(6.0, 14.0)),
            speed_mps=float(rng.uniform(0.2, 0.5)),
            centre_x_m=x,
            centre_y_m=y,
            handedness=1 if k % 2 else -1,
        )
        yield None


def confusion(estimator: WaveEstimator, snr_db: float, length: int, seed: int) -> np.ndarray:
    """(4, 4) counts of predicted frames: rows true pattern, columns estimated (``PATTERNS``)."""
    counts = np.zeros((len(PATTERNS), len(PATTERNS)), dtype=np.int64)
    rng = np.random.default_rng(seed)
    for index, episode in enumerate(pattern_episodes(rng, snr_db)):
        frames, truth = session_frames(episode, seed * 1000 + index)
        for span in blocks(frames.shape[0], length, estimator.sample_rate_hz):
            estimate = estimator.estimate(frames[span])
            tail = estimate.predicted
            labels = truth.label[span][tail]
            names = [TRUE_PATTERN.get(PATTERN_LABELS[i], "disorganised") for i in labels]
            true_index = np.array([PATTERNS.index(name) for name in names])
            np.add.at(counts, (true_index, estimate.pattern[tail]), 1)
    return counts


def cost(estimator: WaveEstimator, length: int, n_blocks: int) -> tuple[float, float, float]:
    """Median, 99th percentile and mean wall time (ms) of ``estimate`` on ``length`` frames."""
    episode = PlaneWave(start_s=0.0, duration_s=SESSION_S, amplitude_uv=amplitude_for(10.0))
    frames, _ = session_frames(episode, 7)
    spans = list(blocks(frames.shape[0], length, estimator.sample_rate_hz))
    for span in spans:
        estimator.estimate(frames[span])  # warm caches
    times = np.empty(n_blocks)
    for i in range(n_blocks):
        block = frames[spans[i % len(spans)]]
        start = time.perf_counter()
        estimator.estimate(block)
        times[i] = time.perf_counter() - start
    times *= 1e3
    return float(np.median(times)), float(np.percentile(times, 99)), float(times.mean())


def _accuracy_table(estimator: WaveEstimator, length: int, seeds: Sequence[int]) -> str:
    rows = [
        "| SNR (dB) | speed (m/s) | speed err median | speed err p90 "
        "| dir err median (°) | dir err p90 (°) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for snr in SNRS_DB:
        pooled_s, pooled_d = [], []
        for speed in SPEEDS_MPS:
            err = plane_errors(estimator, speed, snr, length, seeds)
            pooled_s.append(err.speed)
            pooled_d.append(err.direction)
            rows.append(_row(f"{snr:g}", f"{speed:g}", err.speed, err.direction))
        rows.append(
            _row(f"**{snr:g}**", "**all**", np.concatenate(pooled_s), np.concatenate(pooled_d))
        )
    return "\n".join(rows)


def _row(snr: str, speed: str, speed_err: np.ndarray, dir_err: np.ndarray) -> str:
    return (
        f"| {snr} | {speed} | {100 * np.median(speed_err):.1f} % "
        f"| {100 * np.percentile(speed_err, 90):.1f} % | {np.median(dir_err):.1f} "
        f"| {np.percentile(dir_err, 90):.1f} |"
    )


def _confusion_table(counts: np.ndarray) -> str:
    header = "| true \\ estimated | " + " | ".join(PATTERNS) + " | recall |"
    rows = [header, "|---" * (len(PATTERNS) + 2) + "|"]
    for i, name in enumerate(PATTERNS):
        total = counts[i].sum()
        recall = f"{100 * counts[i, i] / total:.0f} %" if total else "–"
        cells = " | ".join(str(int(c)) for c in counts[i])
        rows.append(f"| {name} | {cells} | {recall} |")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer seeds and timed blocks")
    parser.add_argument("--past-frames", type=int, default=WaveSettings().past_frames)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    default = WaveSettings(past_frames=args.past_frames)
    # One octave centred on the waves' frequency: the rig's band set for its rhythm.
    matched = default.model_copy(
        update={"low_hz": FREQUENCY_HZ / math.sqrt(2), "high_hz": FREQUENCY_HZ * math.sqrt(2)}
    )
    length = default.past_frames + default.predicted_frames
    seeds = (args.seed,) if args.quick else (args.seed, args.seed + 1)

    print(
        f"## Wave estimator on generator ground truth\n\nBlocks of {default.past_frames} "
        f"measured + {default.predicted_frames} predicted frames, scored on the predicted "
        f"ones; plane waves at {FREQUENCY_HZ:g} Hz, {len(DIRECTIONS_DEG)} directions x "
        f"{len(seeds)} seed(s), on a 1/f background of {BACKGROUND_RMS_UV:g} µV rms."
    )
    for title, settings in (("default band", default), ("band matched to the wave", matched)):
        print(
            f"\n### Plane waves, {title} ({settings.low_hz:.3g}–{settings.high_hz:.3g} Hz): "
            "relative speed error and direction error\n"
        )
        print(_accuracy_table(WaveEstimator(settings), length, seeds))

    estimator = WaveEstimator(default)
    for snr in SNRS_DB:
        counts = confusion(estimator, snr, length, args.seed)
        accuracy = np.trace(counts) / counts.sum()
        print(
            f"\n### Pattern confusion at {snr:g} dB, default band (predicted frames; "
            f"{accuracy:.0%} correct)\n"
        )
        print(_confusion_table(counts))

    n_blocks = 300 if args.quick else 3000
    print("\n### Cost of `WaveEstimator.estimate` per block (BLAS single-threaded)\n")
    print("| block | median (ms) | p99 (ms) | mean (ms) |\n|---|---:|---:|---:|")
    for past in sorted({16, default.past_frames}):
        total = past + default.predicted_frames
        median, p99, mean = cost(estimator, total, n_blocks)
        print(
            f"| {total} frames ({past} + {default.predicted_frames}) "
            f"| {median:.3f} | {p99:.3f} | {mean:.3f} |"
        )


if __name__ == "__main__":
    main()
