"""End-to-end latency: LSL push of the newest sample -> its prediction received over ZeroMQ.

Three parties, as on a rig: this process pushes a generated session sample by sample (chunks
of one, stamped with ``pylsl.local_clock()`` at the push) through a real LSL outlet; the daemon
(`corticast serve`, its own process, default model, stride 1) reads it, predicts and
publishes; a subscriber thread here receives each prediction. The latency of a prediction is
its arrival time minus the LSL timestamp of the newest sample it was computed from (the same
monotonic clock in every process of one machine). Prints a markdown table.

Usage: ``python -m bench.benchmarks.end_to_end_latency --seconds 300``
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pylsl

from bench.data.synth import Artefacts, SynthConfig, generate_session
from bench.rig.frame_source import SessionSource
from bench.rig.rig import SimulatedRig
from service.inference.settings import ModelSettings
from service.zmq_api.client import PredictionClient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--stride", type=int, default=1)
    defaults = ModelSettings()
    parser.add_argument(
        "--threads", type=int, default=defaults.threads, help="model threads in the daemon"
    )
    parser.add_argument("--mode", choices=("window", "stream"), default=defaults.mode)
    args = parser.parse_args()

    source_id = f"corticast-e2e-{uuid.uuid4().hex[:8]}"
    ports = {"api": _free_port(), "pub": _free_port(), "query": _free_port()}
    session = generate_session(
        SynthConfig(duration_s=60.0, seed=5, artefacts=Artefacts(line_uv=5.0))
    )
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "e2e.toml"
        config.write_text(
            f'[stream]\nsource_id = "{source_id}"\n'
            f'[model]\nthreads = {args.threads}\nmode = "{args.mode}"\n'
            f"[scheduler]\nstride = {args.stride}\n"
            f'[bridge]\naudit_log = "{tmp}/audit.jsonl"\n'
            f'[zmq]\npub_endpoint = "tcp://127.0.0.1:{ports["pub"]}"\n'
            f'query_endpoint = "tcp://127.0.0.1:{ports["query"]}"\n'
            f"[api]\nport = {ports['api']}\ndev_no_token = true\n"
        )
        rig = SimulatedRig(SessionSource(session, loop=True), source_id=source_id, chunk_size=1)
        with rig:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "service.cli.app", "--log-level", "WARNING", "serve",
                 "--config", str(config)],
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                result = _measure(ports, args.seconds)
                status = httpx.get(f"http://127.0.0.1:{ports['api']}/status").json()
            finally:
                daemon.terminate()
                daemon.wait(10)
    _report(result, status, args)


def _measure(ports: dict[str, int], seconds: float) -> dict[str, np.ndarray]:
    url = f"http://127.0.0.1:{ports['api']}/readyz"
    deadline = time.monotonic() + 60
    while not _ready(url):
        if time.monotonic() > deadline:
            raise RuntimeError("the daemon did not become ready within 60 s")
        time.sleep(0.2)
    # One row of floats per prediction, allocated up front: a growing list of per-prediction
    # tuples and dicts would make this process's full garbage collections tens of ms long by
    # the end of a 5 min run, and a pause here delays the push and the receive it measures.
    rows = np.full((int(seconds * 300) + 1000, len(_COLUMNS)), np.nan)
    count = 0
    stop = threading.Event()
    with PredictionClient(f"tcp://127.0.0.1:{ports['pub']}", None) as client:

        def receive() -> None:
            nonlocal count
            while not stop.is_set() and count < len(rows):
                message = client.receive(timeout_s=0.2)
                if message is None:
                    continue
                arrived = pylsl.local_clock()
                header, latency = message.header, message.header["latency"]
                rows[count] = (
                    header["input_seq"], header["input_timestamp"],
                    *(latency[stamp] for stamp in _HEADER_STAMPS), arrived,
                )  # fmt: skip
                count += 1

        thread = threading.Thread(target=receive, daemon=True)
        thread.start()
        time.sleep(seconds)
        stop.set()
        thread.join(2)
        missed = dict(client.missed)
    table = rows[:count]
    return {
        "latency": _between(table, "pushed", "arrived"),
        "stages": {name: _between(table, start, end) for name, start, end in STAGES},
        "seq": table[:, _COLUMN["input_seq"]].astype(np.int64),
        "missed": missed,
    }


_HEADER_STAMPS = ("available_at", "started_at", "finished_at", "handed_at", "published_at")
"""The loop's clock stamps in each prediction header's ``latency``, in the order they happen."""
_COLUMNS = ("input_seq", "pushed", *_HEADER_STAMPS, "arrived")
"""One row per prediction received: its input slot, then its clock stamps from push to arrival
(all on the one local clock)."""
_COLUMN = {name: k for k, name in enumerate(_COLUMNS)}
STAGES = (
    ("LSL push -> in the ring (transport + ingest)", "pushed", "available_at"),
    ("in the ring -> inference starts (scheduler wait)", "available_at", "started_at"),
    ("inference", "started_at", "finished_at"),
    ("inference done -> handed to the wave stage", "finished_at", "handed_at"),
    ("handed -> published on ZeroMQ", "handed_at", "published_at"),
    ("published -> received by the subscriber", "published_at", "arrived"),
)
"""Where a prediction's time goes: each stage runs from one stamp of ``_COLUMNS`` to the next."""


def _between(table: np.ndarray, start: str, end: str) -> np.ndarray:
    """Seconds from stamp ``start`` to stamp ``end`` of each prediction (``_COLUMNS`` names)."""
    return table[:, _COLUMN[end]] - table[:, _COLUMN[start]]


def _report(result: dict, status: dict, args: argparse.Namespace) -> None:
    latency_ms = result["latency"] * 1e3
    seqs = result["seq"]
    span = int(seqs[-1] - seqs[0] + 1) if seqs.size else 0
    p50, p99 = np.percentile(latency_ms, [50, 99])
    print(
        f"{platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"{args.seconds:g} s at stride {args.stride}, model threads {args.threads}, "
        f"{args.mode} mode; "
        f"rig pushing chunks of 1 sample at 277.78 Hz\n"
    )
    print("| figure | value |")
    print("|---|---|")
    print(f"| predictions received | {latency_ms.size:,} |")
    print(f"| frames spanned (newest input seq, first to last) | {span:,} |")
    print(
        f"| frames with no prediction of their own (skipped) | {max(span - latency_ms.size, 0):,} |"
    )
    print(f"| daemon's skipped windows (status) | {status['scheduler']['skipped_windows']:,} |")
    print(f"| ZeroMQ messages missed by the subscriber | {result['missed']} |")
    print(f"| push -> received p50 | {p50:.2f} ms |")
    print(f"| push -> received p99 | {p99:.2f} ms |")
    print(f"| push -> received max | {latency_ms.max():.2f} ms |")
    print(f"| target p50 < 5 ms, p99 < 10 ms | {'met' if p50 < 5 and p99 < 10 else 'NOT met'} |")
    print("\n| stage | p50 | p99 | max |")
    print("|---|---:|---:|---:|")
    for name, seconds in result["stages"].items():
        p50, p99, worst = np.percentile(seconds * 1e3, [50, 99, 100])
        print(f"| {name} | {p50:.2f} ms | {p99:.2f} ms | {worst:.2f} ms |")


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()
