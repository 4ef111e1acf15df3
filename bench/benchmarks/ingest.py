"""Ingest benchmark: stream the test pattern faster than real time and account for every sample.

The rig runs as its own process (`corticast rig --source pattern`), as on a real setup where
the amplifier software is another program. A reader thread follows the ring buffer the way a
recorder would and decodes every frame, so loss, reordering and misplaced electrodes are
counted from the data itself, not from the ingestor's own counters.

Usage: ``python -m bench.benchmarks.ingest --speed 10 --seconds 60`` (or ``make bench-ingest``).
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass

import numpy as np
import pylsl

from bench.data.pattern import INDEX_MODULUS, decode_pattern
from service.core.python_module import python_module_command
from service.ingest.ingestor import Ingestor
from service.ingest.lsl import quiet_liblsl
from service.ingest.settings import IngestSettings, StreamSettings


@dataclass
class _Tally:
    """What the checking reader saw."""

    frames: int = 0
    invalid: int = 0
    lost: int = 0
    out_of_order: int = 0
    misplaced: int = 0
    overrun: int = 0
    last_index: int | None = None


def _follow(ingestor: Ingestor, tally: _Tally, stop: threading.Event) -> None:
    """Read every frame once, in order, and check it against the pattern."""
    next_seq = 0
    while not stop.is_set() or ingestor.ring.next_seq > next_seq:
        if not ingestor.ring.wait_for(next_seq, timeout=0.1):
            continue
        window = ingestor.ring.read_since(next_seq)
        if window.seq[0] != next_seq:
            tally.overrun += int(window.seq[0] - next_seq)
        next_seq = int(window.seq[-1]) + 1
        tally.frames += len(window)
        tally.invalid += int(np.count_nonzero(~window.valid))
        index, cells_ok = decode_pattern(window.frames[window.valid])
        tally.misplaced += int(np.count_nonzero(~cells_ok))
        if index.size == 0:
            continue
        previous = index[0] - 1 if tally.last_index is None else tally.last_index
        steps = np.diff(index, prepend=previous) % INDEX_MODULUS
        tally.lost += int(np.sum(np.maximum(steps - 1, 0)[steps != 0]))
        tally.out_of_order += int(np.count_nonzero(steps == 0))
        tally.last_index = int(index[-1])


def run(speed: float, seconds: float, chunk_size: int) -> dict[str, float | int | str]:
    """Stream for ``seconds`` of wall time at ``speed`` x real time; return the figures."""
    source_id = f"corticast-bench-{uuid.uuid4().hex[:8]}"
    rig = subprocess.Popen(
        python_module_command(
            "service.cli.app",
            "--log-level",
            "WARNING",
            "rig",
            "--source",
            "pattern",
            "--source-id",
            source_id,
            "--speed",
            str(speed),
            "--chunk-size",
            str(chunk_size),
            "--wait-for-consumer",
            "--seconds",
            str(seconds),
        ),
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    settings = IngestSettings(ring_seconds=60.0)
    ingestor = Ingestor(
        StreamSettings(source_id=source_id, resolve_timeout_s=20.0),
        settings,
        cost_history=int(speed * 277.78 * seconds / chunk_size * 1.2) + 1024,
    )
    tally = _Tally()
    stop = threading.Event()
    follower = threading.Thread(target=_follow, args=(ingestor, tally, stop))
    with ingestor:
        follower.start()
        _, rig_log = rig.communicate(timeout=seconds + 60)
        deadline = time.monotonic() + 2.0
        sent = _samples_sent(rig_log)
        while ingestor.status().samples < sent and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        follower.join()
        status = ingestor.status()
        costs = ingestor.chunk_costs()
    p50, p90, p99 = np.percentile(costs, [50, 90, 99]) * 1e6
    return {
        "speed": f"{speed:g}x",
        "wall seconds": seconds,
        "chunk size": chunk_size,
        "samples sent by rig": sent,
        "samples received": status.samples,
        "lost (sent - received)": sent - status.samples,
        "lost (pattern check)": tally.lost,
        "out of order (pattern check)": tally.out_of_order,
        "misplaced electrodes": tally.misplaced,
        "frames marked missing": status.missing_frames,
        "reader overruns": tally.overrun,
        "chunks": status.chunks,
        "measured rate (Hz)": round(status.measured_rate_hz, 3),
        "rate problem": status.rate_problem or "none",
        "pull+write per chunk p50 (µs)": round(p50, 1),
        "pull+write per chunk p90 (µs)": round(p90, 1),
        "pull+write per chunk p99 (µs)": round(p99, 1),
        "pull+write per chunk max (µs)": round(float(costs.max()) * 1e6, 1),
    }


def _samples_sent(rig_log: str) -> int:
    for line in rig_log.splitlines():
        if line.startswith("rig: sent "):
            return int(line.split()[2])
    raise RuntimeError(f"the rig did not report what it sent; its log:\n{rig_log}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", type=float, default=10.0, help="multiple of real time")
    parser.add_argument("--seconds", type=float, default=60.0, help="wall-clock duration")
    parser.add_argument("--chunk-size", type=int, default=4, help="samples per rig chunk")
    args = parser.parse_args()
    quiet_liblsl()
    figures = run(args.speed, args.seconds, args.chunk_size)
    print(
        f"ingest benchmark — {platform.node()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, liblsl {pylsl.library_version()}\n"
    )
    print("| figure | value |\n|---|---|")
    for name, value in figures.items():
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
