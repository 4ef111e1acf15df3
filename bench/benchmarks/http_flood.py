"""Unauthenticated 100 MB request bodies against the served daemon: what do they cost it?

Starts the daemon as ``corticast serve`` does (its own process, the default model, stream mode,
bridge in dry run) fed by a simulated rig (another process), with a 1 ms wake-up probe thread in the
server process (``bench.benchmarks._flood_server``). Then N clients at once each PUT a JSON body of
SIZE MB to ``/control/policy`` without a token, over raw sockets: each sends its body 1 MiB at a
time and stops as soon as the server answers. Reports, as a markdown table: each answer's status and
the bytes sent before it came, the server's resident memory before, at its peak (sampled every 10
ms) and 2 s after, and the probe's worst lateness before and during the flood (the daemon's
staleness limit is 36 ms: an armed loop delayed past it faults and disarms), and whether the daemon
counted a fault.

Usage: ``python -m bench.benchmarks.http_flood [--clients 3] [--mb 100]``
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

from service.core.python_module import python_module_command

_TOKEN = "flood-bench-token-" + "0123456789abcdef" * 2
_PIECE = 2**20


@dataclass
class Answer:
    status: str
    sent_mb: float
    seconds: float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--mb", type=int, default=100, help="body size of each request, MB")
    args = parser.parse_args()
    body = b'{"min_pgd": "' + b"a" * (args.mb * 10**6 - 16) + b'"}'
    with tempfile.TemporaryDirectory() as tmp, _Served(Path(tmp)) as served:
        served.wait_ready()
        time.sleep(2.0)  # a quiet stretch: the probe's baseline
        before_rss, quiet_start = served.rss_mb(), time.monotonic()
        peak = _Peak(served.pid)
        flood_start = time.monotonic()
        answers: list[Answer | None] = [None] * args.clients
        threads = [
            threading.Thread(target=_flood, args=(served.port, body, answers, k))
            for k in range(args.clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        flood_end = time.monotonic()
        time.sleep(2.0)
        peak.stop()
        after_rss = served.rss_mb()
        status = httpx.get(f"{served.url}/status", timeout=10).json()
        probe = served.probe()
    quiet = max((d for t, d in probe if quiet_start - 2.0 <= t < flood_start), default=0.0)
    during = max((d for t, d in probe if flood_start <= t <= flood_end + 0.2), default=0.0)
    _report(args, answers, before_rss, peak, after_rss, quiet, during, status)


class _Served:
    """The daemon (with the probe) and a rig, each its own process, on free ports."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.source_id = f"corticast-flood-{uuid.uuid4().hex[:8]}"
        self.probe_file = tmp / "probe.txt"
        self.processes: list[subprocess.Popen] = []

    def __enter__(self) -> _Served:
        config = self.tmp / "flood.toml"
        config.write_text(
            f'[stream]\nsource_id = "{self.source_id}"\n'
            f'[bridge]\naudit_log = "{self.tmp}/audit.jsonl"\n'
            f'[zmq]\npub_endpoint = "tcp://127.0.0.1:*"\nquery_endpoint = "tcp://127.0.0.1:*"\n'
            f'[api]\nport = {self.port}\ntoken = "{_TOKEN}"\n'
        )
        env = {**os.environ, "CORTICAST_STREAM__SOURCE_ID": self.source_id}
        rig = python_module_command("service.cli.app", "rig", "--source", "synthetic")
        self.processes.append(subprocess.Popen(rig, env=env, stderr=subprocess.DEVNULL))
        server = python_module_command(
            "bench.benchmarks._flood_server", str(config), str(self.probe_file)
        )
        self.processes.append(subprocess.Popen(server, env=env))
        return self

    def __exit__(self, *exc: object) -> None:
        for process in reversed(self.processes):
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    @property
    def pid(self) -> int:
        return self.processes[-1].pid

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2) as poll:  # one client: each parses the CA bundle (~20 ms)
            while time.monotonic() < deadline:
                if self.processes[-1].poll() is not None:
                    raise RuntimeError("the daemon exited before it was ready (see its log)")
                try:
                    if poll.get(f"{self.url}/readyz").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
        raise RuntimeError(f"the daemon was not ready within {timeout_s} s")

    def rss_mb(self) -> float:
        return _proc_status_mb(self.pid, "VmRSS")

    def probe(self) -> list[tuple[float, float]]:
        rows = (line.split() for line in self.probe_file.read_text().splitlines())
        return [(float(t), float(d)) for t, d in rows if t and d]


class _Peak:
    """The largest VmRSS seen, sampled every 10 ms on a thread, until stop()."""

    def __init__(self, pid: int) -> None:
        self.pid, self.mb = pid, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.mb = max(self.mb, _proc_status_mb(self.pid, "VmRSS"))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.hwm = _proc_status_mb(self.pid, "VmHWM")


def _flood(port: int, body: bytes, answers: list[Answer | None], k: int) -> None:
    """One unauthenticated PUT: send the body a piece at a time until the server answers."""
    start = time.monotonic()
    head = (
        f"PUT /control/policy HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    view, sent = memoryview(body), 0
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(300)
        try:
            sock.sendall(head)
            while sent < len(body) and not select.select([sock], [], [], 0)[0]:
                sock.sendall(view[sent : sent + _PIECE])
                sent += len(view[sent : sent + _PIECE])
            reply = sock.recv(4096)
            status = reply.split(b" ", 2)[1].decode() if reply else "closed"
        except OSError as err:
            status = f"{type(err).__name__}"
    answers[k] = Answer(status, sent / 1e6, time.monotonic() - start)


def _proc_status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _report(args, answers, before_rss, peak, after_rss, quiet, during, status) -> None:
    print(f"\n{args.clients} unauthenticated {args.mb} MB JSON PUTs to /control/policy\n")
    print("| what | figure |\n|---|---|")
    for k, answer in enumerate(answers):
        print(
            f"| client {k} | {answer.status} after {answer.sent_mb:.1f} MB sent, "
            f"{answer.seconds:.2f} s |"
        )
    print(f"| server RSS before | {before_rss:.0f} MB |")
    print(f"| server RSS peak (sampled / VmHWM) | {peak.mb:.0f} MB / {peak.hwm:.0f} MB |")
    print(f"| server RSS 2 s after | {after_rss:.0f} MB |")
    print(f"| probe's worst 1 ms wake-up lateness, quiet 2 s before | {quiet:.1f} ms |")
    print(f"| probe's worst 1 ms wake-up lateness, during the flood | {during:.1f} ms |")
    print(f"| daemon faults counted | {json.dumps(status.get('faults', {}))} |")


if __name__ == "__main__":
    main()
