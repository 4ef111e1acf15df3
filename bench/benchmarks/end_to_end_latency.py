"""End-to-end latency: LSL push of the newest sample -> its prediction received over ZeroMQ.

Three parties, as on a rig: this process pushes a generated session sample by sample (chunks
of one, stamped with ``pylsl.local_clock()`` at the push) through a real LSL outlet; the daemon
(`corticast serve`, its own process, default model, stride 1) reads it, predicts and
publishes; a subscriber thread here receives each prediction. The latency of a prediction is
its arrival time minus the LSL timestamp of the newest sample it was computed from (the same
monotonic clock in every process of one machine). Prints a markdown table.

``--hog N`` adds a second phase of the same length with N CPU-burning processes beside the
daemon and prints both phases in one table, with their ratio: what a noisy neighbour does to
the loop, measured in one run so that it means the same on any machine. The daemon is armed
(dry run) throughout, so that a stream gone stale is a fault, counted per phase (it disarms;
the benchmark re-arms). ``--control-load N`` makes the second phase one of control-plane load
instead: N HTTP clients polling ``/status`` and ``/metrics`` with the token, and N ZeroMQ clients
asking the query socket, each kind in a process of its own (``bench.benchmarks._control_load``),
with the requests answered per second in the table: what the API costs the loop.
``--control-plane shared`` serves the API and the query socket from the loop's own process
(``[api] own_process = false``, sharing its interpreter lock) instead of a process of their own
(the default): the before and after of moving them out. ``--realtime fifo`` runs the daemon's
ingest and inference threads real-time (``[realtime]``; needs the permission). The measuring
process runs under SCHED_FIFO where permitted (``bench.benchmarks._neighbours``).

Usage: ``python -m bench.benchmarks.end_to_end_latency --seconds 300``,
``python -m bench.benchmarks.end_to_end_latency --seconds 60 --hog 2 --realtime fifo``,
``python -m bench.benchmarks.end_to_end_latency --seconds 60 --control-load 4
[--control-plane shared]``
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
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import httpx
import numpy as np
import pylsl

from bench.benchmarks._control_load import ControlLoad, served
from bench.benchmarks._neighbours import (
    CpuHogs,
    as_lowest_realtime_process,
    as_normal_process,
    raise_instrument,
)
from bench.data.synth import Artefacts, SynthConfig, generate_session
from bench.rig.frame_source import SessionSource
from bench.rig.rig import SimulatedRig
from service.inference.settings import ModelSettings
from service.zmq_api.client import PredictionClient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="length of each phase")
    parser.add_argument("--stride", type=int, default=1)
    defaults = ModelSettings()
    parser.add_argument(
        "--threads", type=int, default=defaults.threads, help="model threads in the daemon"
    )
    parser.add_argument("--mode", choices=("window", "stream"), default=defaults.mode)
    parser.add_argument(
        "--hog", type=int, default=0, metavar="N",
        help="a second phase with N CPU-burning processes beside the daemon",
    )  # fmt: skip
    parser.add_argument(
        "--control-load", type=int, default=0, metavar="N",
        help="a second phase with N HTTP clients (/status, /metrics) and N ZeroMQ query clients",
    )  # fmt: skip
    parser.add_argument(
        "--control-rate", type=float, default=0.0, metavar="HZ",
        help="requests per second per control-load client at most (0: as fast as answered)",
    )  # fmt: skip
    parser.add_argument(
        "--control-plane", choices=("own", "shared"), default="own",
        help="HTTP API and query socket in a process of their own, or in the loop's",
    )  # fmt: skip
    parser.add_argument(
        "--realtime", choices=("off", "fifo", "rr"), default="off",
        help="[realtime] policy of the daemon's ingest and inference threads",
    )  # fmt: skip
    parser.add_argument(
        "--daemon-policy", choices=("normal", "rr1"), default="normal",
        help="rr1: start the daemon under SCHED_RR 1, as realtime.conf's CPUSchedulingPolicy does",
    )  # fmt: skip
    parser.add_argument("--ingest-cpus", default="", help="[realtime] ingest_cpus, e.g. 1")
    parser.add_argument("--inference-cpus", default="", help="[realtime] inference_cpus, e.g. 1")
    args = parser.parse_args()
    if args.hog < 0:
        parser.error(f"--hog must be >= 0, got {args.hog}")
    if args.control_load < 0 or args.control_rate < 0:
        parser.error(
            f"--control-load and --control-rate must be >= 0, got {args.control_load} and "
            f"{args.control_rate}"
        )
    if args.hog and args.control_load:
        parser.error("--hog and --control-load are separate runs: give one of them")
    instrument = raise_instrument()

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
            f'[bridge]\ndry_run = true\naudit_log = "{tmp}/audit.jsonl"\n'
            f'[zmq]\npub_endpoint = "tcp://127.0.0.1:{ports["pub"]}"\n'
            f'query_endpoint = "tcp://127.0.0.1:{ports["query"]}"\n'
            f'[api]\nport = {ports["api"]}\ntoken = "{_TOKEN}"\n'
            f"own_process = {str(args.control_plane == 'own').lower()}\n"
            f'[realtime]\npolicy = "{args.realtime}"\n'
            f"ingest_cpus = [{args.ingest_cpus}]\ninference_cpus = [{args.inference_cpus}]\n"
        )
        rig = SimulatedRig(SessionSource(session, loop=True), source_id=source_id, chunk_size=1)
        with rig:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "service.cli.app", "--log-level", "WARNING", "serve",
                 "--config", str(config)],
                stdout=subprocess.DEVNULL,
                preexec_fn=(
                    as_lowest_realtime_process if args.daemon_policy == "rr1"
                    else as_normal_process
                ),
            )  # fmt: skip
            try:
                phases = _measure(ports, args.seconds, _second_phase(args, ports))
                status = httpx.get(f"http://127.0.0.1:{ports['api']}/status", headers=_AUTH).json()
            finally:
                daemon.terminate()
                daemon.wait(10)
    _report(phases, status, args, instrument)


_TOKEN = "e2e-bench-token-" + "0123456789abcdef" * 2
_AUTH = {"Authorization": f"Bearer {_TOKEN}"}

Load = Callable[[], AbstractContextManager]
"""A phase's neighbours: a context manager, started for the phase and ended after it."""


def _second_phase(args: argparse.Namespace, ports: dict[str, int]) -> tuple[str, Load] | None:
    """The name and load of the phase after the quiet one, or None for none."""
    if args.hog:
        return f"hog {args.hog}", lambda: CpuHogs(args.hog)
    if args.control_load:
        api, query = f"http://127.0.0.1:{ports['api']}", f"tcp://127.0.0.1:{ports['query']}"
        return f"API+query {args.control_load}", lambda: ControlLoad(
            api, _TOKEN, query, args.control_load, args.control_rate
        )
    return None


def _measure(ports: dict[str, int], seconds: float, second: tuple[str, Load] | None) -> list[dict]:
    """Each phase's predictions and counts: quiet, then ``second`` (name, load) if given."""
    api = f"http://127.0.0.1:{ports['api']}"
    deadline = time.monotonic() + 60
    while not _ready(f"{api}/readyz"):
        if time.monotonic() > deadline:
            raise RuntimeError("the daemon did not become ready within 60 s")
        time.sleep(0.2)
    # One row of floats per prediction, allocated up front: a growing list of per-prediction
    # tuples and dicts would make this process's full garbage collections tens of ms long by
    # the end of a 5 min run, and a pause here delays the push and the receive it measures.
    loads: list[tuple[str, Load]] = [("quiet", nullcontext)]
    loads += [second] if second else []
    phase_names = [name for name, _ in loads]
    rows = np.full((int(seconds * 300 * len(phase_names)) + 1000, len(_COLUMNS)), np.nan)
    count = 0
    phase = 0
    stop = threading.Event()
    keeper = _ArmKeeper(api)
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
                    *(latency[stamp] for stamp in _HEADER_STAMPS), arrived, phase,
                )  # fmt: skip
                count += 1

        thread = threading.Thread(target=receive, daemon=True)
        thread.start()
        keeper.start()
        counts = []
        for phase, (name, load) in enumerate(loads):  # noqa: B007 (``receive`` reads ``phase``)
            before, missed = keeper.counts(), sum(client.missed.values())
            with load() as running:
                time.sleep(seconds)
            counts.append({"name": name, **_difference(keeper.counts(), before)})
            counts[-1]["missed"] = sum(client.missed.values()) - missed
            counts[-1]["control"] = _control_rates(running)
        stop.set()
        keeper.stop()
        thread.join(2)
    table = rows[:count]
    return [
        {
            **counts[k],
            "latency": _between(table[table[:, _COLUMN["phase"]] == k], "pushed", "arrived"),
            "stages": {
                name: _between(table[table[:, _COLUMN["phase"]] == k], start, end)
                for name, start, end in STAGES
            },
        }
        for k in range(len(phase_names))
    ]


def _control_rates(load: object) -> dict[str, float]:
    """Per kind of control-load client, requests answered and failed per second (none: 0)."""
    if not isinstance(load, ControlLoad) or not load.counts:
        return {"http": 0.0, "query": 0.0, "failed": 0.0, "cpu": 0.0}
    answered = {kind: served(n) / load.seconds[kind] for kind, n in load.counts.items()}
    failed = sum(
        (sum(n.values()) - served(n)) / load.seconds[kind] for kind, n in load.counts.items()
    )
    cpu = sum(load.cpu_seconds[kind] / load.seconds[kind] for kind in load.counts)
    return {**answered, "failed": failed, "cpu": 100 * cpu}


class _ArmKeeper:
    """Arms the daemon and re-arms it after every disarm (a stale-stream fault disarms), once a
    second, so that each phase counts its own faults; reads the counts from ``/status``."""

    def __init__(self, api: str) -> None:
        self._api = api
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._latest: dict[str, float] = {}
        self.arm_failures: list[str] = []

    def start(self) -> None:
        self._latest = self._read()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def counts(self) -> dict[str, float]:
        """Stale-stream faults and skipped windows so far, and the disarms the keeper saw."""
        return {**self._read(), "rearmed": self._latest.get("rearmed", 0)}

    def _read(self) -> dict[str, float]:
        status = httpx.get(f"{self._api}/status", headers=_AUTH, timeout=5).json()
        return {
            "stale_faults": status["faults"].get("stream", 0),
            "skipped": status["scheduler"]["skipped_windows"],
            "armed": status["armed"],
        }

    def _run(self) -> None:
        armed_once, rearmed = False, 0
        while True:
            now = self._read()
            if not now["armed"]:
                answer = httpx.post(f"{self._api}/control/arm", headers=_AUTH, timeout=5)
                if answer.status_code != 200:
                    self.arm_failures.append(answer.text)
                elif armed_once:
                    rearmed += 1
                armed_once = armed_once or answer.status_code == 200
            self._latest = {**now, "rearmed": rearmed}
            if self._stop.wait(1.0):
                return


def _difference(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before[key] for key in ("stale_faults", "skipped", "rearmed")}


_HEADER_STAMPS = ("available_at", "started_at", "finished_at", "handed_at", "published_at")
"""The loop's clock stamps in each prediction header's ``latency``, in the order they happen."""
_COLUMNS = ("input_seq", "pushed", *_HEADER_STAMPS, "arrived", "phase")
"""One row per prediction received: its input slot, its clock stamps from push to arrival
(all on the one local clock), and the phase it arrived in."""
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


def _report(phases: list[dict], status: dict, args: argparse.Namespace, instrument: str) -> None:
    print(
        f"{platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"{args.seconds:g} s per phase at stride {args.stride}, model threads {args.threads}, "
        f"{args.mode} mode; rig pushing chunks of 1 sample at 277.78 Hz; {instrument}; "
        f"daemon process {args.daemon_policy}, [realtime] policy {args.realtime!r}, "
        f"ingest_cpus [{args.ingest_cpus}], "
        f"inference_cpus [{args.inference_cpus}]; control plane: "
        + ("a process of its own" if args.control_plane == "own" else "in the loop's process")
    )
    if args.control_load:
        pace = f"at most {args.control_rate:g}/s each" if args.control_rate else "unpaced"
        print(
            f"- control load: {args.control_load} HTTP clients (GET /status, /metrics in turn, "
            f"bearer token) and {args.control_load} ZeroMQ query clients (status, latest in "
            f"turn), one request in flight each, {pace}"
        )
    print()
    for stage in ("ingest", "inference"):
        got = status["realtime"][stage]
        if got is not None:
            refused = f" (refused: {'; '.join(got['refused'])})" if got["refused"] else ""
            print(
                f"- daemon's {stage} thread ran under {got['policy']} {got['priority']} on CPUs "
                f"{got['cpus']}{refused}"
            )
    publisher = status["realtime"].get("zmq_io")
    if publisher is not None:
        print(
            f"- daemon's ZeroMQ publisher I/O thread ran under {publisher['policy']} "
            f"{publisher['priority']}"
        )
    names = [phase["name"] for phase in phases]
    ratio = len(phases) == 2
    print("\n| figure | " + " | ".join(names) + (" | ratio |" if ratio else " |"))
    print("|---|" + "---:|" * (len(names) + ratio))
    figures = [
        ("predictions received", [float(p["latency"].size) for p in phases], "{:,.0f}"),
        ("daemon's skipped windows", [p["skipped"] for p in phases], "{:,.0f}"),
        ("stale-stream faults (each disarms; re-armed)", [p["stale_faults"] for p in phases],
         "{:.0f}"),
        ("ZeroMQ messages missed by the subscriber", [p["missed"] for p in phases], "{:,.0f}"),
    ]  # fmt: skip
    if args.control_load:
        figures += [
            ("control load: HTTP requests answered per s", [p["control"]["http"] for p in phases],
             "{:,.0f}"),
            ("control load: ZeroMQ queries answered per s", [p["control"]["query"] for p in phases],
             "{:,.0f}"),
            ("control load: requests failed per s", [p["control"]["failed"] for p in phases],
             "{:,.1f}"),
            ("control load: its clients' CPU, % of a core", [p["control"]["cpu"] for p in phases],
             "{:.0f}"),
        ]  # fmt: skip
    for label, q in (("p50", 50), ("p99", 99), ("max", 100)):
        values = [_percentile(p["latency"], q) for p in phases]
        figures.append((f"push -> received {label} (ms)", values, "{:.2f}"))
    for label, values, form in figures:
        cells = [form.format(v) for v in values]
        if ratio:
            cells.append(f"{values[1] / values[0]:.2f}x" if values[0] else "-")
        print(f"| {label} | " + " | ".join(cells) + " |")
    quiet_p50, quiet_p99 = (_percentile(phases[0]["latency"], q) for q in (50, 99))
    print(
        f"| target quiet p50 < 5 ms, p99 < 10 ms | "
        f"{'met' if quiet_p50 < 5 and quiet_p99 < 10 else 'NOT met'} |" + " |" * ratio * 2
    )
    if ratio:
        quiet, loaded = phases
        p99_ratio = _percentile(loaded["latency"], 99) / _percentile(quiet["latency"], 99)
        met = p99_ratio <= 1.5 and loaded["stale_faults"] == 0
        beside = "under the API/query load" if args.control_load else "with the hog"
        print(
            f"| goal: p99 {beside} <= 1.5x quiet, no stale-stream fault | "
            f"{'met' if met else 'NOT met'} ({p99_ratio:.2f}x, {loaded['stale_faults']:.0f}) "
            "| | |"
        )
    print("\n| stage (ms) | " + " | ".join(f"{n} p50 | {n} p99" for n in names) + " |")
    print("|---|" + "---:|" * (2 * len(names)))
    for stage in STAGES:
        cells = []
        for phase in phases:
            seconds = phase["stages"][stage[0]]
            cells += [f"{_percentile(seconds, 50):.2f}", f"{_percentile(seconds, 99):.2f}"]
        print(f"| {stage[0]} | " + " | ".join(cells) + " |")


def _percentile(seconds: np.ndarray, q: float) -> float:
    """The ``q``-th percentile in ms; NaN when the phase received nothing."""
    return float(np.percentile(seconds * 1e3, q)) if seconds.size else float("nan")


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
