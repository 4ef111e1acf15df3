"""Does stream mode cost accuracy? Window mode vs stream mode on the same held-out frames.

Window mode re-encodes the newest 16 frames from a zero state for every prediction, exactly as
the model was trained. Stream mode (``service.inference.streaming_predictor``) carries the encoder
state from frame to frame, so the state summarises the whole stream. This runs both through the
daemon's own predictors over every frame of a held-out generated session (stride 1) and prints
per-horizon PSNR for each, next to persistence and linear extrapolation (latency of each mode:
``bench.benchmarks.inference_latency``). Both run batched
(``service.inference.batch_runner``): bitwise the predictors' own predictions, many per call.

Usage: ``python -m bench.benchmarks.streaming_accuracy --model models/weights/default.onnx
--step models/weights/default.step.onnx --data synthetic:900@60``
"""

from __future__ import annotations

import argparse

import numpy as np

from models.sources import load_spec
from service.core.scores import PSNR_SCALE, psnr_db
from service.inference.batch_runner import BatchRequest, BatchRunner
from service.inference.predictor import DEFAULT_STREAM, Normaliser
from service.inference.settings import ModelSettings

PAST = FUTURE = 16
CHUNK = 512
"""Windows predicted per batched run (bounds the memory, not the result)."""


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
    stats = normaliser.stats_for_prediction()
    mean, scale = stats
    frames = (session.frames - mean) / scale  # scored in model units, as in `evaluate`
    nominal = np.rint((session.timestamps - session.timestamps[0]) * session.sample_rate_hz)
    seq = nominal.astype(np.int64)  # a dropped sample leaves a hole in the sequence

    names = ("window", "stream", "persistence", "linear")
    squared = {name: np.zeros(FUTURE) for name in names}
    scored = 0
    scorable = [
        newest
        for newest in range(PAST - 1, session.n_frames - FUTURE)
        # a dropped sample inside is not a scorable window (stream mode re-primes after it)
        if seq[newest + FUTURE] - seq[newest - PAST + 1] == PAST + FUTURE - 1
    ]
    for start in range(0, len(scorable), CHUNK):
        chunk = scorable[start : start + CHUNK]
        requests = [
            BatchRequest(session.frames[n - PAST + 1 : n + 1], int(seq[n]), None, stats)
            for n in chunk
        ]
        predicted = {"window": window.run(requests), "stream": stream.run(requests)}
        for k, newest in enumerate(chunk):
            target = frames[newest + 1 : newest + 1 + FUTURE]
            last, before = frames[newest], frames[newest - 1]
            steps = np.arange(1, FUTURE + 1, dtype=np.float32)[:, None, None]
            outputs = {
                "window": (predicted["window"][k] - mean) / scale,
                "stream": (predicted["stream"][k] - mean) / scale,
                "persistence": np.broadcast_to(last, target.shape),
                "linear": last + steps * (last - before),
            }
            for name, output in outputs.items():
                squared[name] += np.square(output - target).mean(axis=(1, 2))
            scored += 1

    psnr = {n: psnr_db(squared[n] / scored) for n in names}
    print(
        f"{args.data}: {scored} windows at stride 1, {PSNR_SCALE} (10 log10(R²/MSE)); "
        f"stream mode re-primed {stream.plan.reprimes} time(s) and handed over to a fresh "
        f"state {stream.plan.handovers} time(s) "
        f"({f'every {args.reprime_every} frames' if args.reprime_every else 'never'})\n"
    )
    print("| frame | " + " | ".join(names) + " | stream - window |")
    print("|---:|" + "---:|" * (len(names) + 1))
    for k in range(FUTURE):
        cells = " | ".join(f"{psnr[n][k]:.2f}" for n in names)
        print(f"| {k + 1} | {cells} | {psnr['stream'][k] - psnr['window'][k]:+.2f} |")
    pooled = {n: float(psnr_db(squared[n].mean() / scored)) for n in names}
    cells = " | ".join(f"{pooled[n]:.2f}" for n in names)
    print(f"| all | {cells} | {pooled['stream'] - pooled['window']:+.2f} |")


if __name__ == "__main__":
    main()
