"""Another tool stimulating the same array, as the chaos soak plays it: it announces each train
on an LSL marker stream of its own, which the daemon reads (``[ingest]
stimulation_marker_streams``) and blanks.

It delivers nothing (the device is the daemon's); what the soak checks is the daemon's side:
no train of its own decided on frames an announced train's artefact is on, and no arming while
the stream is not read. Each marker is a bare text (as such tools write), stamped on the LSL
clock when pushed; its stamp goes to a JSON-lines log, one ``{"time": ...}`` per marker, for
the auditor (``bench.benchmarks.chaos._auditor.AnnouncedTrains``).

Usage: ``python -m bench.benchmarks.chaos._pulser --name NAME --log FILE --seed N``
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import threading
from pathlib import Path

import pylsl

from service.core.stimulation_markers import STREAM_TYPE


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="the marker stream's LSL name")
    parser.add_argument("--log", type=Path, required=True, help="JSON lines, one per marker")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--every", type=float, nargs=2, default=(3.0, 6.0), metavar=("LOW", "HIGH"),
        help="seconds between trains, drawn uniformly",
    )  # fmt: skip
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    info = pylsl.StreamInfo(
        args.name, STREAM_TYPE, 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, args.name
    )
    outlet = pylsl.StreamOutlet(info)
    rng = random.Random(args.seed)
    with open(args.log, "a", encoding="utf-8") as log:
        count = 0
        while not stop.wait(rng.uniform(*args.every)):
            count += 1
            stamp = pylsl.local_clock()
            outlet.push_sample([f"train {count}"], stamp)
            log.write(json.dumps({"time": stamp}) + "\n")
            log.flush()
    del outlet
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
