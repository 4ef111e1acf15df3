"""Which channels the wave stage leaves out, and what one noisy channel does to its estimate.

Two tables, printed as markdown:

1. **The rule on the generator mixture.** Sessions of ``bench.data.synth.mixture`` (every
   family, its artefacts: dead, noisy (20-200 µV of added noise), intermittent channels, gains
   spread by electrode), cut into windows as long as the daemon's baseline window (2 s). Each
   window's channels are classified by ``service.core.live_channels.check_channels`` and compared
   with what the generator did: clean channels masked (false masks), and the noisy ones
   masked, by how loud they were against the window's median channel.
2. **One noisy channel on a plane wave.** White noise of a multiple of the background's rms
   added to one electrode; the estimate's direction error, PGD and amplitude (in the robust
   s.d.s the policy reads) over the predicted frames, with the rule's mask and with dead
   channels only (the rule before noisy channels were masked). The last column is the share
   of frames that pass the policy's default PGD and amplitude checks: on a wave at 10 dB
   under a quiet baseline few should, and a noisy channel should not make more of them pass.

Run: ``python -m bench.benchmarks.channel_masks`` (``--quick``: fewer sessions and waves).
"""

from __future__ import annotations

import os

# As in the daemon: BLAS single-threaded (set before numpy is imported).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import math
from collections.abc import Sequence
from itertools import pairwise

import numpy as np
from threadpoolctl import threadpool_limits

from bench.data.synth import Background, PlaneWave, SynthConfig, generate_session
from bench.data.synth.mixture import generate_mixture_session
from service.core.grid import DEFAULT_GRID, NOMINAL_RATE_HZ
from service.core.live_channels import check_channels
from service.policy.settings import PolicySettings
from service.waves.estimator import WaveEstimator

WINDOW_S = 2.0
"""The daemon's default baseline window (``[loop] robust_sd_seconds``)."""
LOUDNESS_BANDS = (0.0, 3.0, 10.0, 30.0, math.inf)
"""Bands of a noisy channel's spread over the median channel's, for table 1."""
BACKGROUND_UV = 20.0
NOISE_FACTORS = (0.0, 3.0, 10.0, 30.0, 100.0, 1e3, 1e4)
"""Added noise on the one channel, in multiples of the background's rms."""
WAVE_SNR_DB = 10.0
NOISY_ELECTRODE = (6, 11)


def mixture_masks(seeds: Sequence[int], session_s: float) -> tuple[dict[str, int], np.ndarray]:
    """Counts over every window of the mixture sessions: clean channel-windows and how many
    were masked dead or noisy; and, per loudness band, noisy channel-windows and how many
    were masked, as a (bands, 2) array."""
    window = round(WINDOW_S * NOMINAL_RATE_HZ)
    clean = {"channel-windows": 0, "masked dead": 0, "masked noisy": 0}
    noisy_counts = np.zeros((len(LOUDNESS_BANDS) - 1, 2), dtype=np.int64)
    for seed in seeds:
        session = generate_mixture_session(seed, session_s)
        artefacts = session.info["artefacts"]
        bad = np.zeros(DEFAULT_GRID.shape, dtype=bool)
        for key in ("dead_channels", "intermittent_channels", "noisy_channels"):
            for row, col in artefacts[key]:
                bad[row, col] = True
        noisy = np.zeros(DEFAULT_GRID.shape, dtype=bool)
        for row, col in artefacts["noisy_channels"]:
            noisy[row, col] = True
        for start in range(0, session.n_frames - window + 1, window):
            frames = session.frames[start : start + window]
            check = check_channels(frames)
            clean["channel-windows"] += int(np.count_nonzero(~bad))
            clean["masked dead"] += int(np.count_nonzero(check.dead & ~bad))
            clean["masked noisy"] += int(np.count_nonzero(check.noisy & ~bad))
            spread = np.median(np.abs(frames - np.median(frames, axis=0)), axis=0)
            loudness = spread[noisy] / np.median(spread)
            band = np.digitize(loudness, LOUDNESS_BANDS[1:-1])
            np.add.at(noisy_counts[:, 0], band, 1)
            np.add.at(noisy_counts[:, 1], band, check.noisy[noisy].astype(np.int64))
    return clean, noisy_counts


def noisy_wave_rows(
    estimator: WaveEstimator, directions: Sequence[float], speeds: Sequence[float], seed: int
) -> list[str]:
    """Table 2's rows: one per noise factor and mask."""
    policy = PolicySettings()
    window = round(WINDOW_S * NOMINAL_RATE_HZ)
    length = estimator.min_frames
    amplitude = math.sqrt(2) * BACKGROUND_UV * 10 ** (WAVE_SNR_DB / 20)
    results: dict[tuple[float, str], list[np.ndarray]] = {}
    for k, (direction, speed) in enumerate(
        (d, s) for d in directions for s in speeds
    ):  # fmt: skip
        episode = PlaneWave(
            start_s=0.0,
            duration_s=WINDOW_S + 1.0,
            amplitude_uv=amplitude,
            frequency_hz=10.0,
            speed_mps=speed,
            direction_deg=direction,
        )
        config = SynthConfig(
            duration_s=WINDOW_S + 1.0,
            seed=seed * 1000 + k,
            background=Background(rms_uv=BACKGROUND_UV),
            episodes=(episode,),
        )
        clean = generate_session(config).frames
        added = np.random.default_rng([seed, k]).standard_normal(len(clean)).astype(np.float32)
        for factor in NOISE_FACTORS:
            frames = clean.copy()
            frames[:, NOISY_ELECTRODE[0], NOISY_ELECTRODE[1]] += factor * BACKGROUND_UV * added
            check = check_channels(frames[:window])
            for name, live in (("dead and noisy", check.live), ("dead only", ~check.dead)):
                unit = estimator.robust_sd(frames[:window], live)
                for start in range(window, len(frames) - length + 1, 23):
                    estimate = estimator.estimate(frames[start : start + length], live)
                    tail = estimate.predicted
                    error = (estimate.direction_deg[tail] - direction + 180.0) % 360.0 - 180.0
                    ratio = estimate.amplitude_uv[tail] / unit
                    passes = (estimate.pgd[tail] >= policy.min_pgd) & (
                        ratio >= policy.min_amplitude_sd
                    )
                    masked = np.full(error.shape, not live[NOISY_ELECTRODE])
                    row = np.stack([np.abs(error), estimate.pgd[tail], ratio, passes, masked])
                    results.setdefault((factor, name), []).append(row)
    lines = []
    for (factor, name), parts in results.items():
        error, pgd, ratio, passes, masked = np.concatenate(parts, axis=1)
        lines.append(
            f"| {factor:g}x | {name} | {masked.mean():.0%} | {np.median(error):.1f} "
            f"| {np.percentile(error, 90):.1f} | {np.median(pgd):.2f} | {np.median(ratio):.2f} "
            f"| {passes.mean():.1%} |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sessions and waves")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with threadpool_limits(1):
        _run(args)


def _run(args: argparse.Namespace) -> None:
    sessions = 6 if args.quick else 36
    seeds = range(args.seed, args.seed + sessions)
    clean, noisy = mixture_masks(seeds, session_s=12.0)
    print(
        f"## Channels the wave stage leaves out\n\n### The rule on the generator mixture\n\n"
        f"{sessions} mixture sessions of 12 s (seeds {seeds.start}-{seeds.stop - 1}), "
        f"windows of {WINDOW_S:g} s.\n\n"
        f"| clean channel-windows | masked dead | masked noisy |\n|---:|---:|---:|\n"
        f"| {clean['channel-windows']} | {clean['masked dead']} | {clean['masked noisy']} |\n"
    )
    print(
        "| noisy channel, spread of its frames / median channel's | channel-windows "
        "| masked noisy |"
    )
    print("|---|---:|---:|")
    for (low, high), (count, masked) in zip(pairwise(LOUDNESS_BANDS), noisy, strict=True):
        share = f"{masked / count:.0%}" if count else "-"
        print(f"| {low:g}-{high:g}x | {count} | {masked} ({share}) |")

    directions = (0.0, 135.0) if args.quick else (0.0, 90.0, -135.0, 45.0)
    speeds = (0.2,) if args.quick else (0.1, 0.5)
    estimator = WaveEstimator()
    print(
        f"\n### One noisy channel on a plane wave\n\n10 Hz plane waves at {WAVE_SNR_DB:g} dB "
        f"over a {BACKGROUND_UV:g} µV rms 1/f background, directions "
        f"{', '.join(f'{d:g}°' for d in directions)}, speeds "
        f"{', '.join(f'{s:g}' for s in speeds)} m/s; white noise added to electrode "
        f"{NOISY_ELECTRODE}; mask and robust s.d. from the first {WINDOW_S:g} s, "
        f"predicted frames of the blocks in the last second scored.\n\n"
        "| added noise (x background rms) | mask | electrode masked | direction "
        "error median (°) | p90 | PGD median | amplitude median (robust s.d.s) | frames "
        "passing PGD and amplitude |\n|---:|---|---:|---:|---:|---:|---:|---:|"
    )
    print("\n".join(noisy_wave_rows(estimator, directions, speeds, args.seed)))


if __name__ == "__main__":
    main()
