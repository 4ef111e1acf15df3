"""End-to-end latency: LSL push of the newest sample -> its prediction received over ZeroMQ.

Three parties, as on a rig: this process pushes a generated session sample by sample (chunks
of one, each stamped with the ``pylsl.local_clock()`` time it is due) through a real LSL
outlet; the daemon (`corticast serve`, its own process, default model, stride 1) reads it,
predicts and publishes; a subscriber thread here receives each prediction. The latency of a
prediction is its arrival time minus the time the newest sample it was computed from was
pushed (the same monotonic clock in every process of one machine; the rig logs each push,
which comes a little after the sample is due, because its sleep overshoots: that lateness is
the instrument's, and shown as a stage of its own). Prints a markdown table.

``--hog N`` adds a second phase of the same length with N CPU-burning processes beside the
daemon and prints both phases in one table, with their ratio: what a noisy neighbour does to
the loop, measured in one run so that it means the same on any machine. The daemon is armed
(dry run) throughout, so that a stream gone stale is a fault, counted per phase (it disarms;
the benchmark re-arms). ``--control-load N`` makes the second phase one of control-plane load
instead: N HTTP clients polling ``/status`` and ``/metrics`` with the token, and N ZeroMQ clients
asking the query socket, each kind in a process of its own (``bench.benchmarks._control_load``),
with the requests answered per second in the table: what the API costs the loop.
``--subscribe ipc`` subscribes at the daemon's ``[zmq] pub_ipc_endpoint`` (a unix socket, bound
beside the TCP one) instead of its TCP ``pub_endpoint``; ``--subscribe ab`` alternates the two,
phase by phase, and prints them side by side. ``--rounds N`` repeats the phases N times in
turn (quiet, load, quiet, load, ...) and pools each kind's: a slow drift of the host (another
user's load) then falls on both alike. ``--control-plane shared`` serves the API and the query
socket from the loop's own process (``[api] own_process = false``, sharing its interpreter
lock) instead of a process of their own (the default): the before and after of moving them
out. ``--realtime fifo`` runs the daemon's ingest and inference threads real-time
(``[realtime]``; needs the permission). The measuring process runs under SCHED_FIFO where
permitted (``bench.benchmarks._neighbours``). A stale-stream fault is not always the daemon's:
the table counts the rig's own pauses longer than the stale limit, and ``--watch-cpus`` each
CPU's freezes, as a SCHED_FIFO 99 watcher pinned there sees them (``bench.benchmarks.
_cpu_freezes``): on the development VM a CPU that real-time threads kept busy without a break
froze for about 50 ms about once a second, and whatever ran there with it.

Usage: ``python -m bench.benchmarks.end_to_end_latency --seconds 300``,
``python -m bench.benchmarks.end_to_end_latency --seconds 60 --hog 2 --realtime fifo``,
``... --daemon-policy rr1 --realtime fifo --ingest-cpus 0 --inference-cpus 1 --watch-cpus``,
``python -m bench.benchmarks.end_to_end_latency --seconds 20 --rounds 3 --stride 2 --subscribe ab``,
``python -m bench.benchmarks.end_to_end_latency --seconds 60 --control-load 4
[--control-plane shared]``
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pylsl

from bench.benchmarks._control_load import ControlLoad, served
from bench.benchmarks._cpu_freezes import CpuFreezeWatch
from bench.benchmarks._neighbours import (
    CpuHogs,
    as_lowest_realtime_process,
    as_normal_process,
    raise_instrument,
)
from bench.data.synth import Artefacts, SynthConfig, generate_session
from bench.rig.frame_source import SessionSource
from bench.rig.rig import SimulatedRig
from service.core.python_module import python_module_command
from service.inference.settings import ModelSettings
from service.ingest.settings import IngestSettings, StreamSettings
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
    parser.add_argument(
        "--subscribe", choices=("tcp", "ipc", "ab"), default="tcp",
        help="the daemon's PUB endpoint to subscribe at; ab: tcp and ipc in alternate phases",
    )  # fmt: skip
    parser.add_argument(
        "--rounds", type=int, default=1, help="the phases repeated this many times in turn"
    )
    parser.add_argument("--ingest-cpus", default="", help="[realtime] ingest_cpus, e.g. 1")
    parser.add_argument("--inference-cpus", default="", help="[realtime] inference_cpus, e.g. 1")
    parser.add_argument(
        "--watch-cpus", action="store_true",
        help="count each CPU's freezes (bench.benchmarks._cpu_freezes) per phase",
    )  # fmt: skip
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
    if args.subscribe == "ab" and (args.hog or args.control_load):
        parser.error(
            "--subscribe ab compares the two endpoints quiet: give no --hog or --control-load"
        )
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    instrument = raise_instrument()

    source_id = f"corticast-e2e-{uuid.uuid4().hex[:8]}"
    ports = {"api": _free_port(), "pub": _free_port(), "query": _free_port()}
    session = generate_session(
        SynthConfig(duration_s=60.0, seed=5, artefacts=Artefacts(line_uv=5.0))
    )
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "e2e.toml"
        endpoints = {"tcp": f"tcp://127.0.0.1:{ports['pub']}", "ipc": f"ipc://{tmp}/pub.sock"}
        config.write_text(
            f'[stream]\nsource_id = "{source_id}"\n'
            f'[model]\nthreads = {args.threads}\nmode = "{args.mode}"\n'
            f"[scheduler]\nstride = {args.stride}\n"
            f'[bridge]\ndry_run = true\naudit_log = "{tmp}/audit.jsonl"\n'
            f'[zmq]\npub_endpoint = "{endpoints["tcp"]}"\n'
            f'pub_ipc_endpoint = "{endpoints["ipc"]}"\n'
            f'query_endpoint = "tcp://127.0.0.1:{ports["query"]}"\n'
            f'[api]\nport = {ports["api"]}\ntoken = "{_TOKEN}"\n'
            f"own_process = {str(args.control_plane == 'own').lower()}\n"
            f'[realtime]\npolicy = "{args.realtime}"\n'
            f"ingest_cpus = [{args.ingest_cpus}]\ninference_cpus = [{args.inference_cpus}]\n"
        )
        phases = _phases(args, ports, endpoints)
        rig = SimulatedRig(
            SessionSource(session, loop=True), source_id=source_id, chunk_size=1,
            # Every push from the daemon's start (a minute at most) to the end of the run.
            push_log=int((60 + 10 + args.seconds * len(phases)) * session.sample_rate_hz),
        )  # fmt: skip
        with rig:
            daemon = subprocess.Popen(
                python_module_command(
                    "service.cli.app", "--log-level", "WARNING", "serve", "--config", str(config)
                ),
                stdout=subprocess.DEVNULL,
                preexec_fn=(
                    as_lowest_realtime_process if args.daemon_policy == "rr1"
                    else as_normal_process
                ),
            )  # fmt: skip
            try:
                with CpuFreezeWatch() if args.watch_cpus else nullcontext() as watch:
                    results = _measure(ports, args.seconds, phases, rig, watch)
                status = httpx.get(f"http://127.0.0.1:{ports['api']}/status", headers=_AUTH).json()
            finally:
                daemon.terminate()
                daemon.wait(10)
    _report(results, status, args, instrument)


_TOKEN = "e2e-bench-token-" + "0123456789abcdef" * 2
_AUTH = {"Authorization": f"Bearer {_TOKEN}"}

Load = Callable[[], AbstractContextManager]
"""A phase's neighbours: a context manager, started for the phase and ended after it."""


@dataclass(frozen=True)
class Phase:
    """One measuring phase: its name (phases of one name are pooled), its neighbours, and the
    endpoint the subscriber receives at."""

    name: str
    load: Load
    endpoint: str


def _phases(
    args: argparse.Namespace, ports: dict[str, int], endpoints: dict[str, str]
) -> list[Phase]:
    """The phases in the order they run: a quiet one, then the load's or the other
    endpoint's if asked, all of it ``--rounds`` times."""
    if args.subscribe == "ab":
        kinds = [Phase(name, nullcontext, endpoints[name]) for name in ("tcp", "ipc")]
        return kinds * args.rounds
    endpoint = endpoints[args.subscribe]
    kinds = [Phase("quiet", nullcontext, endpoint)]
    if args.hog:
        kinds.append(Phase(f"hog {args.hog}", lambda: CpuHogs(args.hog), endpoint))
    if args.control_load:
        api, query = f"http://127.0.0.1:{ports['api']}", f"tcp://127.0.0.1:{ports['query']}"
        kinds.append(
            Phase(
                f"API+query {args.control_load}",
                lambda: ControlLoad(api, _TOKEN, query, args.control_load, args.control_rate),
                endpoint,
            )
        )
    return kinds * args.rounds


def _measure(
    ports: dict[str, int], seconds: float, phases: list[Phase], rig: SimulatedRig,
    watch: CpuFreezeWatch | None = None,
) -> list[dict]:  # fmt: skip
    """Each kind of phase's predictions and counts, pooled over its rounds, in first-run order;
    with ``watch``, each CPU's freezes too."""
    api = f"http://127.0.0.1:{ports['api']}"
    deadline = time.monotonic() + 60
    with httpx.Client(timeout=0.5) as poll:  # one client: each parses the CA bundle (~20 ms)
        while not _ready(poll, f"{api}/readyz"):
            if time.monotonic() > deadline:
                raise RuntimeError("the daemon did not become ready within 60 s")
            time.sleep(0.2)
    # One row of floats per prediction, allocated up front: a growing list of per-prediction
    # tuples and dicts would make this process's full garbage collections tens of ms long by
    # the end of a 5 min run, and a pause here delays the push and the receive it measures.
    rows = np.full((int(seconds * 300 * len(phases)) + 1000, len(_COLUMNS)), np.nan)
    missed = [0] * len(phases)
    count = 0
    phase = 0
    stop = threading.Event()
    keeper = _ArmKeeper(api)

    def receive() -> None:
        """Receive at the running phase's endpoint (a new subscription when it changes);
        each row is counted in the phase its subscription was made for."""
        nonlocal count
        client, endpoint, seen = None, "", 0
        try:
            while not stop.is_set() and count < len(rows):
                own = phase
                if phases[own].endpoint != endpoint:
                    if client is not None:
                        client.close()
                    endpoint, seen = phases[own].endpoint, 0
                    client = PredictionClient(endpoint, None)
                message = client.receive(timeout_s=0.2)
                if message is None:
                    continue
                received = pylsl.local_clock()
                header, latency = message.header, message.header["latency"]
                rows[count] = (
                    header["input_seq"], header["input_timestamp"], np.nan,
                    *(latency[stamp] for stamp in _HEADER_STAMPS), received, own,
                )  # fmt: skip
                count += 1
                now = sum(client.missed.values())
                missed[own] += now - seen
                seen = now
        finally:
            if client is not None:
                client.close()

    thread = threading.Thread(target=receive, daemon=True)
    keeper.start()
    time.sleep(_SETTLE_S)  # the first phase must not pay for the start (first arming, warm-up)
    thread.start()
    counts, spans = [], []
    for phase, kind in enumerate(phases):  # noqa: B007 (``receive`` reads ``phase``)
        before = keeper.counts()
        began = pylsl.local_clock()
        with kind.load() as running:
            time.sleep(seconds)
        spans.append((began, pylsl.local_clock()))
        stalls = rig.push_stalls(*spans[-1], STALE_LIMIT_S)
        counts.append(
            _difference(keeper.counts(), before) | _control_rates(running) | {"rig_stalls": stalls}
        )
    stop.set()
    keeper.stop()
    thread.join(2)
    if watch is not None:
        watch.stop()
    table = rows[:count]
    table[:, _COLUMN["pushed"]] = rig.pushed_at(table[:, _COLUMN["due"]])
    names = list(dict.fromkeys(kind.name for kind in phases))
    results = []
    for name in names:
        ks = [k for k, kind in enumerate(phases) if kind.name == name]
        mine = table[np.isin(table[:, _COLUMN["phase"]], ks)]
        results.append(
            {
                "name": name,
                **{key: sum(counts[k][key] for k in ks) for key in _COUNTED},
                "missed": sum(missed[k] for k in ks),
                "control": {key: np.mean([counts[k][key] for k in ks]) for key in _RATES},
                "latency": _between(mine, "pushed", "received"),
                "stages": {stage: _between(mine, start, end) for stage, start, end in STAGES},
                "freezes": None if watch is None else _freezes(watch, [spans[k] for k in ks]),
            }
        )
    return results


def _freezes(watch: CpuFreezeWatch, spans: list[tuple[float, float]]) -> dict[int, np.ndarray]:
    """Per CPU, the lengths (s) of its freezes during ``spans`` (one kind's phases)."""
    seen = [watch.freezes(*span) for span in spans]
    return {cpu: np.concatenate([s[cpu] for s in seen]) for cpu in watch.cpus}


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
            "rested": status["scheduler"]["rested_s"] + status["scheduler"]["wave_stage_rested_s"],
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


STALE_LIMIT_S = IngestSettings().stale_after_frames / StreamSettings().sample_rate_hz
"""Age at which the daemon (at its defaults, as run here) calls the stream stale: a pause of
the rig's own longer than this can fault the daemon, and is counted as the instrument's."""
_SETTLE_S = 5.0
"""Seconds between the daemon's first arming and the first phase, unmeasured."""
_KEEPER_COUNTED = ("stale_faults", "skipped", "rested", "rearmed")
"""What the arm keeper counts from the daemon's ``/status``."""
_COUNTED = (*_KEEPER_COUNTED, "rig_stalls")
_RATES = ("http", "query", "failed", "cpu")


def _difference(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before[key] for key in _KEEPER_COUNTED}


_HEADER_STAMPS = ("arrived_at", "started_at", "finished_at", "handed_at", "published_at")
"""The loop's clock stamps in each prediction header's ``latency``, in the order they happen."""
_COLUMNS = ("input_seq", "due", "pushed", *_HEADER_STAMPS, "received", "phase")
"""One row per prediction received: its input slot, its clock stamps from the newest sample's
LSL timestamp (when it was due) and its push to the arrival (all on the one local clock), and
the phase it arrived in."""
_COLUMN = {name: k for k, name in enumerate(_COLUMNS)}
STAGES = (
    ("sample due -> pushed by the rig (the instrument's lateness)", "due", "pushed"),
    ("LSL push -> in the ring (transport + ingest)", "pushed", "arrived_at"),
    ("in the ring -> inference starts (scheduler wait)", "arrived_at", "started_at"),
    ("inference", "started_at", "finished_at"),
    ("inference done -> handed to the wave stage", "finished_at", "handed_at"),
    ("handed -> published on ZeroMQ", "handed_at", "published_at"),
    ("published -> received by the subscriber", "published_at", "received"),
)
"""Where a prediction's time goes: each stage runs from one stamp of ``_COLUMNS`` to the next."""


def _between(table: np.ndarray, start: str, end: str) -> np.ndarray:
    """Seconds from stamp ``start`` to stamp ``end`` of each prediction (``_COLUMNS`` names)."""
    return table[:, _COLUMN[end]] - table[:, _COLUMN[start]]


def _print_placement(realtime: dict) -> None:
    """What the daemon's loop threads ran under (``/status``'s ``realtime``)."""
    for stage in ("ingest", "inference"):
        got = realtime[stage]
        if got is not None:
            refused = f" (refused: {'; '.join(got['refused'])})" if got["refused"] else ""
            print(
                f"- daemon's {stage} thread ran under {got['policy']} {got['priority']} on CPUs "
                f"{got['cpus']}{refused}"
            )
    publisher = realtime.get("zmq_io")
    if publisher is not None:
        ran = (
            f"{publisher['policy']} {publisher['priority']}"
            if publisher["policy"] is not None
            else "the process's policy"
        )
        refused = f" (refused: {'; '.join(publisher['refused'])})" if publisher["refused"] else ""
        print(f"- daemon's ZeroMQ publisher I/O thread ran under {ran}{refused}")


_Row = tuple[str, list[float], str]
"""A table row: its label, one value per phase, and their format."""


def _freeze_rows(phases: list[dict]) -> list[_Row]:
    """Per CPU, how often ``--watch-cpus``' watcher saw it freeze, and the longest."""
    rows: list[_Row] = []
    for cpu in phases[0]["freezes"]:
        lengths = [p["freezes"][cpu] for p in phases]
        rows += [
            (f"CPU {cpu} froze > 20 ms (a SCHED_FIFO 99 watcher's wake-ups; times)",
             [float(x.size) for x in lengths], "{:.0f}"),
            (f"CPU {cpu}: longest freeze (ms)",
             [float(x.max() * 1e3) if x.size else 0.0 for x in lengths], "{:.1f}"),
        ]  # fmt: skip
    return rows


def _control_rows(phases: list[dict]) -> list[_Row]:
    """What ``--control-load``'s clients got answered, and the CPU they took."""
    return [
        ("control load: HTTP requests answered per s", [p["control"]["http"] for p in phases],
         "{:,.0f}"),
        ("control load: ZeroMQ queries answered per s", [p["control"]["query"] for p in phases],
         "{:,.0f}"),
        ("control load: requests failed per s", [p["control"]["failed"] for p in phases],
         "{:,.1f}"),
        ("control load: its clients' CPU (imports included), % of a core",
         [p["control"]["cpu"] for p in phases],
         "{:.0f}"),
    ]  # fmt: skip


def _report(phases: list[dict], status: dict, args: argparse.Namespace, instrument: str) -> None:
    print(
        f"{platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"{args.seconds:g} s per phase at stride {args.stride}, model threads {args.threads}, "
        f"{args.mode} mode; rig pushing chunks of 1 sample at 277.78 Hz; {instrument}; "
        f"daemon process {args.daemon_policy}, [realtime] policy {args.realtime!r}, "
        f"ingest_cpus [{args.ingest_cpus}], "
        f"inference_cpus [{args.inference_cpus}]; control plane: "
        + ("a process of its own" if args.control_plane == "own" else "in the loop's process")
        + f"; subscriber at the {_SUBSCRIBED[args.subscribe]}; each phase {args.rounds}x in turn"
    )
    if args.control_load:
        pace = f"at most {args.control_rate:g}/s each" if args.control_rate else "unpaced"
        print(
            f"- control load: {args.control_load} HTTP clients (GET /status, /metrics in turn, "
            f"bearer token) and {args.control_load} ZeroMQ query clients (status, latest in "
            f"turn), one request in flight each, {pace}"
        )
    print()
    _print_placement(status["realtime"])
    names = [phase["name"] for phase in phases]
    ratio = len(phases) == 2
    print("\n| figure | " + " | ".join(names) + (" | ratio |" if ratio else " |"))
    print("|---|" + "---:|" * (len(names) + ratio))
    figures = [
        ("predictions received", [float(p["latency"].size) for p in phases], "{:,.0f}"),
        ("daemon's skipped windows", [p["skipped"] for p in phases], "{:,.0f}"),
        ("time the loop's threads rested, real-time ([realtime] idle_share; s)",
         [p["rested"] for p in phases], "{:.2f}"),
        ("stale-stream faults (each disarms; re-armed)", [p["stale_faults"] for p in phases],
         "{:.0f}"),
        (f"the rig's own pauses > {STALE_LIMIT_S * 1e3:.0f} ms (the instrument's: each can "
         "fault the daemon)", [p["rig_stalls"] for p in phases], "{:.0f}"),
        ("ZeroMQ messages missed by the subscriber", [p["missed"] for p in phases], "{:,.0f}"),
    ]  # fmt: skip
    if phases[0]["freezes"] is not None:
        figures += _freeze_rows(phases)
    if args.control_load:
        figures += _control_rows(phases)
    for label, q in (("p50", 50), ("p99", 99), ("max", 100)):
        values = [_percentile(p["latency"], q) for p in phases]
        figures.append((f"push -> received {label} (ms)", values, "{:.2f}"))
    overheads = [_overhead(p) for p in phases]
    figures += [
        ("loop overhead: push -> received p50 - inference p50 (ms)", overheads, "{:.2f}"),
        ("the same per prediction: p50 of (push -> received - its inference) (ms)",
         [_percentile(p["latency"] - p["stages"]["inference"], 50) for p in phases], "{:.2f}"),
    ]  # fmt: skip
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
    print(
        "| goal: loop overhead < 0.5 ms | "
        + " | ".join("met" if value < 0.5 else "NOT met" for value in overheads)
        + " |" * (1 + ratio)
    )
    if ratio and args.subscribe != "ab":
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


_SUBSCRIBED = {
    "tcp": "TCP pub_endpoint",
    "ipc": "unix-socket pub_ipc_endpoint",
    "ab": "TCP pub_endpoint and the unix-socket pub_ipc_endpoint in alternate phases",
}


def _overhead(phase: dict) -> float:
    """What the loop adds to inference (ms): the end-to-end p50 less the inference p50."""
    inference = phase["stages"]["inference"]
    return _percentile(phase["latency"], 50) - _percentile(inference, 50)


def _percentile(seconds: np.ndarray, q: float) -> float:
    """The ``q``-th percentile in ms of the finite values (a prediction whose push the rig did
    not log has none); NaN when there are none."""
    finite = seconds[np.isfinite(seconds)]
    return float(np.percentile(finite * 1e3, q)) if finite.size else float("nan")


def _ready(poll: httpx.Client, url: str) -> bool:
    try:
        return poll.get(url).status_code == 200
    except httpx.HTTPError:
        return False


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()
