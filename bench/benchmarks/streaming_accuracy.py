"""Does stream mode cost accuracy? Window mode vs stream mode on the same held-out frames.

Window mode re-encodes the newest 16 frames from a zero state for every prediction, exactly as
the model was trained. Stream mode (``service.inference.streaming_predictor``) carries the encoder
state from frame to frame, so the state summarises the whole stream. This runs both through the
daemon's own predictors over every frame of a held-out generated session (stride 1) and prints
per-horizon PSNR for each, next to persistence and linear extrapolation (latency of each mode:
``bench.benchmarks.inference_latency``). Both run batched
(``service.inference.batch_runner``): bitwise the predictors' own predictions, many per call.

The session is fed as the daemon's scheduler feeds it: laid out slot by slot as the ring holds
it (a dropped sample is a placeholder holding the last frame, ``bench.replay.timeline``), and
each window repaired or refused by the missing-frame policy (``[scheduler] missing_frames``,
``max_missing_frames``). So stream mode carries its state across a short gap, as the daemon
does, and starts over after a refused window; a window is scored only where every frame it
predicts was received.

Usage: ``python -m bench.benchmarks.streaming_accuracy --model models/weights/default.onnx
--step models/weights/default.step.onnx --data synthetic:900@60``
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from bench.replay.timeline import Timeline, lay_out, ring_capacity
from models.sources import load_spec
from service.core.robust_scale import Stats
from service.core.scores import PSNR_SCALE, psnr_db
from service.inference.batch_runner import BatchRequest, BatchRunner
from service.inference.missing_frames import IRREGULAR, MISSING_FRAME_POLICIES, prepare_window
from service.inference.predictor import DEFAULT_STREAM, Normaliser
from service.inference.settings import ModelSettings, SchedulerSettings
from service.ingest.settings import IngestSettings

PAST = FUTURE = 16
CHUNK = 512
"""Windows predicted per batched run (bounds the memory, not the result)."""
NAMES = ("window", "stream", "persistence", "linear")


@dataclass(frozen=True)
class ModeScores:
    """Sums of squared errors per horizon (model units) over the windows scored."""

    squared: dict[str, np.ndarray]
    scored: int
    run: int
    """Windows the scheduler would have run (stride 1)."""
    refused: int
    """Windows the missing-frame policy refused."""


def scheduler_feed(
    timeline: Timeline, stats: Stats, policy: str, max_missing: int
) -> tuple[list[BatchRequest], int]:
    """The calls the daemon's scheduler makes at stride 1 on ``timeline``: each window as the
    missing-frame policy leaves it, in order, re-priming where the scheduler resets the
    predictor: the first after a refusal, and one that feeds frames otherwise than the window
    before it (``interpolate``); and how many windows it refused. None ends on a
    placeholder: the ingestor writes a gap's placeholders together with the frame after them,
    so the scheduler runs that frame's window and skips theirs."""
    requests: list[BatchRequest] = []
    refused, reprime = 0, False
    for newest in range(PAST - 1, len(timeline) - FUTURE):
        if not timeline.valid[newest]:
            continue
        span = slice(newest - PAST + 1, newest + 1)
        frames, _ = prepare_window(timeline.frames[span], timeline.valid[span], policy, max_missing)
        if frames is None:
            refused += 1
            reprime = True  # as the scheduler resets a stream-mode predictor on a refusal
            continue
        if requests and not reprime:
            fed = requests[-1]
            overlap = fed.newest_seq - (newest - PAST + 1) + 1
            reprime = overlap > 0 and not np.array_equal(fed.window[-overlap:], frames[:overlap])
        requests.append(BatchRequest(frames, newest, None, stats, reprime))
        reprime = False
    return requests, refused


def compare_modes(
    timeline: Timeline,
    window: BatchRunner,
    stream: BatchRunner,
    stats: Stats,
    *,
    policy: str,
    max_missing: int,
) -> ModeScores:
    """Both modes over the scheduler's calls; scored where every predicted frame arrived."""
    mean, scale = stats
    frames = (timeline.frames - mean) / scale  # scored in model units, as in `evaluate`
    requests, refused = scheduler_feed(timeline, stats, policy, max_missing)
    squared = {name: np.zeros(FUTURE) for name in NAMES}
    scored = 0
    steps = np.arange(1, FUTURE + 1, dtype=np.float32)[:, None, None]
    for start in range(0, len(requests), CHUNK):
        chunk = requests[start : start + CHUNK]
        predicted = {"window": window.run(chunk), "stream": stream.run(chunk)}
        for k, request in enumerate(chunk):
            newest = request.newest_seq
            if not timeline.valid[newest + 1 : newest + 1 + FUTURE].all():
                continue  # a placeholder is not the truth
            target = frames[newest + 1 : newest + 1 + FUTURE]
            last, before = frames[newest], frames[newest - 1]
            outputs = {
                "window": (predicted["window"][k] - mean) / scale,
                "stream": (predicted["stream"][k] - mean) / scale,
                "persistence": np.broadcast_to(last, target.shape),
                "linear": last + steps * (last - before),
            }
            for name, output in outputs.items():
                squared[name] += np.square(output - target).mean(axis=(1, 2))
            scored += 1
    return ModeScores(squared, scored, len(requests), refused)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="window graph (.onnx)")
    parser.add_argument("--step", required=True, help="step graph (.step.onnx)")
    parser.add_argument("--data", default="synthetic:900@60", help="one session spec")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--reprime-every",
        type=int,
        default=ModelSettings().reprime_every_frames,
        help="stream mode hands over to a fresh state this often, in frames (0: never, the state "
        "is carried until a gap forces a re-prime); "
        "the default is the daemon's",
    )
    scheduler = SchedulerSettings()
    parser.add_argument(
        "--missing-frames",
        choices=[p for p in MISSING_FRAME_POLICIES if p != IRREGULAR],
        default=scheduler.missing_frames,
        help="what the scheduler does with a window that has missing frames (the daemon's)",
    )
    parser.add_argument("--max-missing-frames", type=int, default=scheduler.max_missing_frames)
    args = parser.parse_args()

    session = load_spec(args.data)[0]
    window = BatchRunner(args.model, "window", DEFAULT_STREAM, threads=args.threads)
    stream = BatchRunner(
        args.step, "stream", DEFAULT_STREAM, threads=args.threads,
        reprime_every_frames=args.reprime_every or None,
    )  # fmt: skip
    normaliser = Normaliser(window.metadata)
    if normaliser.online is not None:
        parser.error(
            f"{args.model} is a robust-online model: this benchmark scores fixed models in "
            "their own units; use `corticast replay --fast` for it"
        )
    rate = DEFAULT_STREAM.sample_rate_hz
    ingest = IngestSettings()
    timeline = lay_out(
        session, rate, ring_capacity(ingest.ring_seconds, rate),
        max_non_finite_fraction=ingest.max_non_finite_fraction,
    )  # fmt: skip
    result = compare_modes(
        timeline, window, stream, normaliser.stats_for_prediction(),
        policy=args.missing_frames, max_missing=args.max_missing_frames,
    )  # fmt: skip
    squared, scored = result.squared, result.scored
    psnr = {n: psnr_db(squared[n] / scored) for n in NAMES}
    print(
        f"{args.data}: {scored} windows scored at stride 1 ({result.run} run, "
        f"{result.refused} refused by missing_frames = {args.missing_frames!r}, "
        f"{timeline.missing} placeholder slots), {PSNR_SCALE} (10 log10(R²/MSE)); "
        f"stream mode re-primed {stream.plan.reprimes} time(s) and handed over to a fresh "
        f"state {stream.plan.handovers} time(s) "
        f"({f'every {args.reprime_every} frames' if args.reprime_every else 'never'})\n"
    )
    print("| frame | " + " | ".join(NAMES) + " | stream - window |")
    print("|---:|" + "---:|" * (len(NAMES) + 1))
    for k in range(FUTURE):
        cells = " | ".join(f"{psnr[n][k]:.2f}" for n in NAMES)
        print(f"| {k + 1} | {cells} | {psnr['stream'][k] - psnr['window'][k]:+.2f} |")
    pooled = {n: float(psnr_db(squared[n].mean() / scored)) for n in NAMES}
    cells = " | ".join(f"{pooled[n]:.2f}" for n in NAMES)
    print(f"| all | {cells} | {pooled['stream'] - pooled['window']:+.2f} |")


if __name__ == "__main__":
    main()
