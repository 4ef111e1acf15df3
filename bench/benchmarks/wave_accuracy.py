"""Accuracy and cost of the wave estimator on the generator's ground truth; prints markdown.

Plane waves over a grid of frequencies, speeds, directions and SNRs are laid on the 1/f
background; each session is cut into blocks of ``past_frames`` measured frames plus 16
"predicted" frames (the true continuation, i.e. a perfect predictor, so only the estimator is
judged) and the estimate on the predicted frames is scored against the per-frame ground truth.
Every condition is scored with the default settings and with the previous estimator's design
(phase from the configured band, gradient from neighbours only: ``adaptive_band = false``,
``gradient_span = 0``) on the same sessions. Radial, rotating, plane and background-only
sessions give the pattern confusion matrix. Cost is the wall time of ``WaveEstimator.estimate``
per block with BLAS single-threaded, as in the daemon, both configurations interleaved.

SNR is ``20 log10(wave rms / background rms)`` over the full band, the wave's rms being its
amplitude / sqrt(2). The DESIGN target, at 0 dB: median speed error < 10 % and median direction
error < 10°; a cell that meets both is marked ✓.

Run: ``python -m bench.benchmarks.wave_accuracy`` (``--quick`` for one seed and fewer timed blocks).
"""

from __future__ import annotations

import os

# BLAS threads that spin on a loaded host make one small matrix product cost milliseconds;
# the daemon runs BLAS single-threaded too (set before numpy is imported, and again below
# with threadpoolctl for libraries that ignore the variables).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from bench.data.ground_truth import PATTERN_LABELS
from bench.data.synth import (
    Background,
    Episode,
    PlaneWave,
    RadialWave,
    SpiralWave,
    SynthConfig,
    generate_session,
)
from service.core.grid import DEFAULT_GRID, NOMINAL_RATE_HZ
from service.policy.settings import PolicySettings
from service.policy.stimulation_policy import longest_run
from service.waves.estimator import PATTERNS, WaveEstimate, WaveEstimator
from service.waves.settings import WaveSettings

BACKGROUND_RMS_UV = 20.0
SPEEDS_MPS = (0.05, 0.1, 0.2, 0.5, 1.0)
FREQUENCIES_HZ = (5.0, 10.0, 20.0, 30.0)
"""Inside the default 4–30 Hz band (the range the estimator searches for the rhythm)."""
DIRECTIONS_DEG = (-180.0, -135.0, -90.0, -45.0, 0.0, 45.0, 90.0, 135.0)
SNRS_DB = (20.0, 10.0, 0.0)
SESSION_S = 1.5
SETTLE_S = 0.3
"""Blocks start after the episode's ramp and the background's own start."""
BLOCK_STRIDE = 23
"""Frames between block starts: blocks overlap, but not in the same phase of the wave."""
TRUE_PATTERN = {"plane": "planar", "radial": "radial", "spiral": "rotating"}
"""The generator's label -> the estimator's pattern name; background is disorganised."""
SPEED_TARGET = 0.10
DIRECTION_TARGET_DEG = 10.0
ARRAY_WIDTH_M = (DEFAULT_GRID.cols - 1) * DEFAULT_GRID.pitch_m
"""9.5 mm: the span over which the array sees a wave's phase change."""
WIDE_BAND_HZ = (1.5, 45.0)
"""Configured band for the rows beyond the default band (2 and 40 Hz)."""
EDGE_ROWS: tuple[tuple[float, int], ...] = ((2.0, 256), (40.0, 48))
"""(frequency, past frames) beyond the default band: 2 Hz needs ~1 s of past (2 cycles)."""


@dataclass(frozen=True)
class Errors:
    """Per-frame speed (relative) and direction (degrees) errors of one condition."""

    speed: np.ndarray
    direction: np.ndarray

    @property
    def meets_target(self) -> bool:
        return bool(
            np.median(self.speed) < SPEED_TARGET
            and np.median(self.direction) < DIRECTION_TARGET_DEG
        )

    @staticmethod
    def pool(parts: Sequence[Errors]) -> Errors:
        return Errors(
            speed=np.concatenate([p.speed for p in parts]),
            direction=np.concatenate([p.direction for p in parts]),
        )


def amplitude_for(snr_db: float) -> float:
    """Wave amplitude (µV) whose rms is ``snr_db`` above the background's rms."""
    return math.sqrt(2.0) * BACKGROUND_RMS_UV * 10.0 ** (snr_db / 20.0)


def session_frames(
    episode: Episode | None, seed: int, duration_s: float = SESSION_S
) -> tuple[np.ndarray, np.ndarray]:
    """Frames and per-frame truth of one background session with ``episode`` on it."""
    config = SynthConfig(
        duration_s=duration_s,
        seed=seed,
        background=Background(rms_uv=BACKGROUND_RMS_UV),
        episodes=() if episode is None else (episode,),
    )
    session = generate_session(config)
    return session.frames, session.truth


def blocks(n_frames: int, length: int, fs: float) -> Iterator[slice]:
    """Block positions over the settled part of a session."""
    return blocks_of(n_frames, length, fs, BLOCK_STRIDE)


def blocks_of(n_frames: int, length: int, fs: float, stride: int) -> Iterator[slice]:
    """Block positions ``stride`` frames apart over the settled part of a session."""
    for start in range(round(SETTLE_S * fs), n_frames - length + 1, stride):
        yield slice(start, start + length)


def plane_errors(
    estimators: Sequence[WaveEstimator],
    frequency: float,
    speed: float,
    snr_db: float,
    seeds: Sequence[int],
) -> list[Errors]:
    """Errors of each estimator on the predicted frames of plane waves over all directions.

    The estimators must share ``past_frames``: they see the same blocks of the same sessions.
    """
    length = estimators[0].settings.past_frames + estimators[0].settings.predicted_frames
    duration = max(SESSION_S, SETTLE_S + 2 * length / estimators[0].sample_rate_hz)
    speed_err: list[list[np.ndarray]] = [[] for _ in estimators]
    dir_err: list[list[np.ndarray]] = [[] for _ in estimators]
    for seed in seeds:
        for index, direction in enumerate(DIRECTIONS_DEG):
            episode = PlaneWave(
                start_s=0.0,
                duration_s=duration,
                amplitude_uv=amplitude_for(snr_db),
                frequency_hz=frequency,
                speed_mps=speed,
                direction_deg=direction,
            )
            frames, truth = session_frames(episode, seed * 1000 + index, duration)
            for span in blocks(frames.shape[0], length, estimators[0].sample_rate_hz):
                true_v = truth.velocity_mps[span][-estimators[0].settings.predicted_frames :]
                true_speed = np.hypot(true_v[:, 0], true_v[:, 1])
                true_dir = np.degrees(np.arctan2(true_v[:, 1], true_v[:, 0]))
                for k, estimator in enumerate(estimators):
                    estimate = estimator.estimate(frames[span])
                    tail = estimate.predicted
                    speed_err[k].append(np.abs(estimate.speed_mps[tail] - true_speed) / true_speed)
                    dir_err[k].append(
                        np.abs((estimate.direction_deg[tail] - true_dir + 180.0) % 360.0 - 180.0)
                    )
    return [
        Errors(speed=np.concatenate(s), direction=np.concatenate(d))
        for s, d in zip(speed_err, dir_err, strict=True)
    ]


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


REVERSAL_HZ = 10.0
"""Frequency of the phase reversals' oscillation."""
REVERSALS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "across the middle of the columns": lambda rows, cols: np.where(cols < 9.5, 1.0, -1.0),
    "across the middle of the rows": lambda rows, cols: np.where(rows < 8.5, 1.0, -1.0),
    "off centre (after 5 columns)": lambda rows, cols: np.where(cols < 4.5, 1.0, -1.0),
    "a standing half wavelength": lambda rows, cols: np.cos(np.pi * cols / cols.max()),
}
"""Phase reversals: an oscillation in phase on either side of a line and in anti-phase across
it (a dipole under the array), or a standing wave; each maps (rows, cols) to a gain."""


def pgd_and_speed_pass(estimate: WaveEstimate, policy: PolicySettings) -> np.ndarray:
    """Per predicted frame of ``estimate``, whether the policy's PGD and speed checks hold:
    what a wave that is not travelling must not pass on ``persistence_frames`` in a row."""
    tail = estimate.predicted
    speed = estimate.speed_mps[tail]
    ok = (estimate.pgd[tail] >= policy.min_pgd) & (speed >= policy.min_speed_mps)
    return ok & (speed <= policy.max_speed_mps)


def reversal_blocks(estimator: WaveEstimator, snr_db: float, seed: int) -> dict[str, tuple]:
    """Per reversal, (blocks, blocks passing, share of predicted frames passing) the policy's
    default PGD and speed checks, on ``persistence_frames`` consecutive predicted frames for a
    block: nothing travels, so a block that passes could ask for stimulation (in a direction
    of either sign along the reversal's axis)."""
    policy = PolicySettings()
    background = session_frames(None, seed, duration_s=3.0)[0]
    t = np.arange(len(background)) / estimator.sample_rate_hz
    rows, cols = np.indices(DEFAULT_GRID.shape)
    length = estimator.settings.past_frames + estimator.settings.predicted_frames
    oscillation = amplitude_for(snr_db) * np.cos(2 * np.pi * REVERSAL_HZ * t)
    results = {}
    for name, gain in REVERSALS.items():
        frames = (background + oscillation[:, None, None] * gain(rows, cols)).astype(np.float32)
        passing, blocks, frames_passing = 0, 0, []
        for span in blocks_of(frames.shape[0], length, estimator.sample_rate_hz, stride=7):
            ok = pgd_and_speed_pass(estimator.estimate(frames[span]), policy)
            blocks += 1
            passing += longest_run(ok)[1] >= policy.persistence_frames
            frames_passing.append(ok)
        results[name] = (blocks, passing, float(np.concatenate(frames_passing).mean()))
    return results


def confusion(estimator: WaveEstimator, snr_db: float, seed: int) -> np.ndarray:
    """(4, 4) counts of predicted frames: rows true pattern, columns estimated (``PATTERNS``)."""
    length = estimator.settings.past_frames + estimator.settings.predicted_frames
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


def cost(
    estimators: Sequence[WaveEstimator], length: int, n_blocks: int
) -> list[tuple[float, float, float]]:
    """Median, 99th percentile and mean wall time (ms) of each estimator's ``estimate``.

    The estimators take turns block by block, so a load that comes and goes on the host
    weighs on all of them alike.
    """
    episode = PlaneWave(start_s=0.0, duration_s=SESSION_S, amplitude_uv=amplitude_for(10.0))
    frames, _ = session_frames(episode, 7)
    spans = list(blocks(frames.shape[0], length, estimators[0].sample_rate_hz))
    for estimator in estimators:
        for span in spans:
            estimator.estimate(frames[span])  # warm caches
    times = np.empty((len(estimators), n_blocks))
    for i in range(n_blocks):
        block = frames[spans[i % len(spans)]]
        for k, estimator in enumerate(estimators):
            start = time.perf_counter()
            estimator.estimate(block)
            times[k, i] = time.perf_counter() - start
    times *= 1e3
    return [(float(np.median(t)), float(np.percentile(t, 99)), float(t.mean())) for t in times]


def _wide(default: WaveSettings, past: int) -> WaveSettings:
    """``default`` with the band ``WIDE_BAND_HZ`` and ``past`` measured frames (its default
    extension is the least its low edge needs: a quarter period, 47 frames of 1.5 Hz)."""
    return default.model_copy(
        update={"low_hz": WIDE_BAND_HZ[0], "high_hz": WIDE_BAND_HZ[1], "past_frames": past}
    )


def _cell(err: Errors) -> str:
    mark = " ✓" if err.meets_target else ""
    return (
        f"{100 * np.median(err.speed):.1f} / {100 * np.percentile(err.speed, 90):.0f} % · "
        f"{np.median(err.direction):.1f} / {np.percentile(err.direction, 90):.0f}°{mark}"
    )


def _grid_table(results: dict[tuple[float, float], Errors], freqs: Sequence[float]) -> str:
    """Rows speed, columns frequency (and all frequencies pooled), cells median / p90."""
    header = "| speed (m/s) | " + " | ".join(f"{f:g} Hz" for f in freqs) + " | all |"
    rows = [header, "|---:" + "|---" * (len(freqs) + 1) + "|"]
    for speed in SPEEDS_MPS:
        cells = [_cell(results[(f, speed)]) for f in freqs]
        pooled = Errors.pool([results[(f, speed)] for f in freqs])
        rows.append(f"| {speed:g} | " + " | ".join(cells) + f" | {_cell(pooled)} |")
    pooled = [Errors.pool([results[(f, s)] for s in SPEEDS_MPS]) for f in freqs]
    everything = Errors.pool(pooled)
    rows.append(
        "| **all** | " + " | ".join(_cell(p) for p in pooled) + f" | **{_cell(everything)}** |"
    )
    return "\n".join(rows)


def _summary_table(
    by_snr: dict[float, dict[tuple[float, float], Errors]], freqs: Sequence[float]
) -> str:
    """Per SNR and speed, pooled over frequencies and directions, with the target verdict."""
    rows = [
        "| SNR (dB) | speed (m/s) | speed err median | speed err p90 | dir err median (°) "
        "| dir err p90 (°) | cells meeting target | pooled meets target |",
        "|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for snr, results in by_snr.items():
        for speed in (*SPEEDS_MPS, None):
            keys = [(f, s) for f in freqs for s in SPEEDS_MPS if speed is None or s == speed]
            err = Errors.pool([results[k] for k in keys])
            met = sum(results[k].meets_target for k in keys)
            rows.append(
                f"| {snr:g} | {'all' if speed is None else f'{speed:g}'} "
                f"| {100 * np.median(err.speed):.1f} % "
                f"| {100 * np.percentile(err.speed, 90):.1f} % "
                f"| {np.median(err.direction):.1f} | {np.percentile(err.direction, 90):.1f} "
                f"| {met}/{len(keys)} | {'✓' if err.meets_target else '✗'} |"
            )
    return "\n".join(rows)


def _wavelength_table(freqs: Sequence[float]) -> str:
    """Wavelength in array widths: what the array can resolve, independent of the estimator."""
    header = "| speed (m/s) | " + " | ".join(f"{f:g} Hz" for f in freqs) + " |"
    rows = [header, "|---:" + "|---:" * len(freqs) + "|"]
    for speed in SPEEDS_MPS:
        cells = []
        for f in freqs:
            wavelength = speed / f
            span = 2 * math.pi * ARRAY_WIDTH_M / wavelength
            cells.append(f"{wavelength / ARRAY_WIDTH_M:.1f} ({span:.1f} rad)")
        rows.append(f"| {speed:g} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


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
    parser.add_argument("--quick", action="store_true", help="one seed, fewer timed blocks")
    parser.add_argument("--past-frames", type=int, default=WaveSettings().past_frames)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with threadpool_limits(1):
        _run(args)


def _run(args: argparse.Namespace) -> None:
    default = WaveSettings(past_frames=args.past_frames)
    previous = default.model_copy(update={"adaptive_band": False, "gradient_span": 0.0})
    seeds = (args.seed,) if args.quick else (args.seed, args.seed + 1)
    new_est, old_est = WaveEstimator(default), WaveEstimator(previous)

    print(
        f"## Wave estimator on generator ground truth\n\nBlocks of {default.past_frames} "
        f"measured + {default.predicted_frames} predicted frames, scored on the predicted "
        f"ones; plane waves in {len(DIRECTIONS_DEG)} directions x {len(seeds)} seed(s) per "
        f"cell, on a 1/f background of {BACKGROUND_RMS_UV:g} µV rms; configured band "
        f"{default.low_hz:g}–{default.high_hz:g} Hz. Cells: speed error median / p90 · "
        f"direction error median / p90; ✓ = median speed error < {100 * SPEED_TARGET:.0f} % "
        f"and median direction error < {DIRECTION_TARGET_DEG:.0f}° (the DESIGN target at 0 dB)."
    )
    new_results: dict[float, dict[tuple[float, float], Errors]] = {}
    old_results: dict[float, dict[tuple[float, float], Errors]] = {}
    for snr in SNRS_DB:
        new_results[snr], old_results[snr] = {}, {}
        for f in FREQUENCIES_HZ:
            for speed in SPEEDS_MPS:
                new, old = plane_errors((new_est, old_est), f, speed, snr, seeds)
                new_results[snr][(f, speed)] = new
                old_results[snr][(f, speed)] = old

    for title, results in (
        ("default settings (adaptive phase band, long-baseline gradient)", new_results),
        ("previous estimator (phase from the configured band, neighbours only)", old_results),
    ):
        print(f"\n### Plane waves, {title}\n")
        print(_summary_table(results, FREQUENCIES_HZ))
        for snr in SNRS_DB:
            print(f"\n#### {snr:g} dB, {title.split(' (')[0]}\n")
            print(_grid_table(results[snr], FREQUENCIES_HZ))

    print(
        "\n### What the array can resolve: wavelength in array widths (9.5 mm), and the phase "
        "a plane wave accumulates across the array\n\nAt 0 dB the background's phase noise, "
        "averaged over the array, is of the order of a few tenths of a radian per block, so "
        "waves that change phase by only ~1–1.5 rad across the array (wavelengths of 4–6 "
        "array widths and more) cannot be timed to 10 % in one 64-frame block by any "
        "phase-gradient estimator; at 5 Hz the 48 measured frames also hold under one cycle, "
        "too little to settle a band narrow enough to suppress the background.\n"
    )
    print(_wavelength_table((2.0, *FREQUENCIES_HZ, 40.0)))

    print(
        f"\n### Beyond the default band: configured band {WIDE_BAND_HZ[0]:g}–"
        f"{WIDE_BAND_HZ[1]:g} Hz, the least extension_frames for it "
        f"({_wide(default, 48).extension_at(NOMINAL_RATE_HZ)}; default settings otherwise)\n"
    )
    rows = [
        "| frequency | past frames | SNR (dB) | "
        + " | ".join(f"{s:g} m/s" for s in SPEEDS_MPS)
        + " |",
        "|---:|---:|---:" + "|---" * len(SPEEDS_MPS) + "|",
    ]
    for frequency, past in EDGE_ROWS:
        estimator = WaveEstimator(_wide(default, past))
        for snr in (20.0, 0.0):
            cells = [
                _cell(plane_errors((estimator,), frequency, speed, snr, seeds)[0])
                for speed in SPEEDS_MPS
            ]
            rows.append(f"| {frequency:g} Hz | {past} | {snr:g} | " + " | ".join(cells) + " |")
    print("\n".join(rows))

    for snr in SNRS_DB:
        counts = confusion(new_est, snr, args.seed)
        accuracy = np.trace(counts) / counts.sum()
        print(
            f"\n### Pattern confusion at {snr:g} dB, default settings (predicted frames; "
            f"{accuracy:.0%} correct)\n"
        )
        print(_confusion_table(counts))

    print(
        "\n### Phase reversals: nothing travels (default settings)\n\nA 10 Hz oscillation "
        "in phase on either side of a line and in anti-phase across it, over the 1/f "
        "background; blocks 7 frames apart. A block passes when the policy's default PGD and "
        "speed checks hold on its persistence_frames consecutive predicted frames: such a "
        "block could ask for stimulation, in a direction of either sign along the reversal's "
        "axis.\n\n| reversal | SNR (dB) | blocks passing | predicted frames passing |\n"
        "|---|---:|---:|---:|"
    )
    for snr in (10.0, 0.0):
        for name, (count, passing, share) in reversal_blocks(new_est, snr, args.seed).items():
            print(f"| {name} | {snr:g} | {passing} of {count} | {share:.1%} |")

    n_blocks = 300 if args.quick else 3000
    print(
        "\n### Cost of `WaveEstimator.estimate` per block (BLAS single-threaded; default and "
        "previous settings interleaved)\n"
    )
    print(
        "| block | default median (ms) | p99 | mean | previous median (ms) | p99 | mean |\n"
        "|---|---:|---:|---:|---:|---:|---:|"
    )
    for past in sorted({16, default.past_frames}):
        total = past + default.predicted_frames
        (nm, np99, nmean), (om, op99, omean) = cost((new_est, old_est), total, n_blocks)
        print(
            f"| {total} frames ({past} + {default.predicted_frames}) | {nm:.3f} | {np99:.3f} "
            f"| {nmean:.3f} | {om:.3f} | {op99:.3f} | {omean:.3f} |"
        )


if __name__ == "__main__":
    main()
