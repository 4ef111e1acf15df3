"""The control plane's load, for ``bench.benchmarks.end_to_end_latency --control-load``: HTTP
clients polling ``/status`` and ``/metrics``, and ZeroMQ clients asking the query socket.

The daemon serves its HTTP API, its ZeroMQ query socket and the loop from one process, so one
interpreter lock: a busy control plane can delay the loop. Each kind of load runs in a process
of its own (at the normal policy on every CPU, like the benchmark's other neighbours), so that
the clients' own Python work does not take the daemon's lock. The load is bounded: a fixed
number of clients, each with one request in flight at a time (a closed loop), optionally paced
to a rate. Each process says ``running`` once its clients have started, runs until its stdin
closes, then prints its counts as one JSON line.

Usage (what :class:`ControlLoad` starts): ``python -m bench.benchmarks._control_load http URL
TOKEN CLIENTS RATE`` or ``... query ENDPOINT - CLIENTS RATE`` (RATE per client, 0: unpaced).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import httpx

from bench.benchmarks._neighbours import as_normal_process
from service.core.python_module import python_module_command
from service.core.readable import readable_within
from service.zmq_api.client import PredictionClient, QueryError

KINDS = ("http", "query")
_HTTP_PATHS = ("/status", "/metrics")
_QUERIES = ("status", "latest")
_RUNNING = "running"
"""What a load process says once its clients have started."""
_START_S = 60.0
"""Longest a load process may take to import and start its clients."""


class ControlLoad:
    """HTTP and ZeroMQ query clients against a daemon for as long as the context lasts.

    Parameters
    ----------
    api_url, token
        The daemon's HTTP API and its control token (sent as a real client would).
    query_endpoint
        The daemon's ``query_endpoint``.
    clients
        Concurrent clients of each kind (0: no load; the context does nothing).
    rate_hz
        Requests per second per client at most; 0 sends the next as soon as one is answered.

    After the block, ``counts`` holds per kind the requests answered (by what) and failed, and
    ``seconds`` per kind how long its clients ran (from their start, after the process's
    imports, to the end of the block), and ``cpu_seconds`` per kind the CPU its process used
    (user + system, imports included): the load's own share of the host.
    """

    def __init__(
        self, api_url: str, token: str, query_endpoint: str, clients: int, rate_hz: float = 0.0
    ) -> None:
        if clients < 0:
            raise ValueError(f"'clients' must be >= 0, got {clients!r}")
        if rate_hz < 0:
            raise ValueError(f"'rate_hz' must be >= 0, got {rate_hz!r}")
        self._targets = {"http": (api_url, token), "query": (query_endpoint, "-")}
        self.clients, self.rate_hz = clients, rate_hz
        self.counts: dict[str, dict[str, int]] = {}
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self._processes: dict[str, subprocess.Popen[str]] = {}

    def __enter__(self) -> Self:
        """Start the load; returns once every client is running (its process's imports take
        seconds on a loaded host: a block that began before would run without it)."""
        if not self.clients:
            return self
        for kind, (target, token) in self._targets.items():
            command = python_module_command(__name__, kind, target, token)
            self._processes[kind] = subprocess.Popen(
                [*command, str(self.clients), str(self.rate_hz)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                preexec_fn=as_normal_process,
            )  # fmt: skip
        try:
            for kind, process in self._processes.items():
                _wait_running(kind, process)
        except BaseException:
            _end(self._processes)
            self._processes = {}
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for process in self._processes.values():
            process.stdin.close()  # the signal to stop
        processes, self._processes = self._processes, {}
        try:
            for kind, process in processes.items():
                out = process.stdout.read()
                if process.wait(30) != 0:
                    raise RuntimeError(f"the {kind} load process exited {process.returncode}")
                ran = json.loads(out)
                self.counts[kind], self.seconds[kind] = ran["counts"], ran["seconds"]
                self.cpu_seconds[kind] = ran["cpu_seconds"]
        finally:
            _end(processes)


def _wait_running(kind: str, process: subprocess.Popen[str]) -> None:
    """Wait until ``process`` says its clients are running; RuntimeError if it ends or says
    nothing within :data:`_START_S`."""
    ready = readable_within([process.stdout], _START_S)
    said = process.stdout.readline().strip() if ready else ""
    if said != _RUNNING:
        raise RuntimeError(
            f"the {kind} load process did not start its clients within {_START_S:g} s "
            f"(exit status {process.poll()}, said {said!r})"
        )


def _end(processes: dict[str, subprocess.Popen[str]]) -> None:
    """Kill what has not ended; close the pipes."""
    for process in processes.values():
        process.stdin.close()
        if process.poll() is None:
            process.kill()
            process.wait(10)
        process.stdout.close()


def _run(kind: str, target: str, token: str, clients: int, rate_hz: float) -> dict[str, Any]:
    """``clients`` threads of ``kind`` against ``target`` until stdin closes: their counts and
    how long they ran."""
    stop, counts, lock = threading.Event(), Counter[str](), threading.Lock()
    client = _http_client if kind == "http" else _query_client
    threads = [
        threading.Thread(target=client, args=(target, token, rate_hz, stop, counts, lock))
        for _ in range(clients)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    print(_RUNNING, flush=True)
    sys.stdin.read()
    stop.set()
    seconds = time.monotonic() - started
    for thread in threads:
        thread.join(30)
    return {"counts": dict(counts), "seconds": seconds, "cpu_seconds": time.process_time()}


def _paced(rate_hz: float, stop: threading.Event, ask: Callable[[int], str]) -> Counter[str]:
    """Call ``ask(k)`` (returns the outcome's name) until ``stop``, at most ``rate_hz`` a second."""
    outcomes: Counter[str] = Counter()
    period, due, k = (1.0 / rate_hz if rate_hz else 0.0), time.monotonic(), 0
    while not stop.is_set():
        outcomes[ask(k)] += 1
        k += 1
        due += period
        if period and stop.wait(max(0.0, due - time.monotonic())):
            break
    return outcomes


def _http_client(
    url: str,
    token: str,
    rate_hz: float,
    stop: threading.Event,
    counts: Counter[str],
    lock: threading.Lock,
) -> None:
    """One keep-alive client: GET /status, /metrics, /status, ... with the bearer token."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as http:

        def ask(k: int) -> str:
            path = _HTTP_PATHS[k % len(_HTTP_PATHS)]
            try:
                answer = http.get(path)
            except httpx.HTTPError as err:
                return f"failed {type(err).__name__}"
            return f"{path} {answer.status_code}"

        outcomes = _paced(rate_hz, stop, ask)
    with lock:
        counts.update(outcomes)


def _query_client(
    endpoint: str,
    _: str,
    rate_hz: float,
    stop: threading.Event,
    counts: Counter[str],
    lock: threading.Lock,
) -> None:
    """One REQ client: status, latest, status, ... (an error reply is an answer too)."""
    with PredictionClient(None, endpoint, query_timeout_s=10) as client:

        def ask(k: int) -> str:
            query = _QUERIES[k % len(_QUERIES)]
            try:
                client.status() if query == "status" else client.latest()
            except QueryError:
                return f"{query} refused"
            except TimeoutError:
                return f"failed {query} timeout"
            return f"{query} answered"

        outcomes = _paced(rate_hz, stop, ask)
    with lock:
        counts.update(outcomes)


def served(counts: dict[str, int]) -> int:
    """Requests answered (whatever the answer), from one kind's counts."""
    return sum(n for outcome, n in counts.items() if not outcome.startswith("failed"))


def main() -> None:
    kind, target, token, clients, rate_hz = sys.argv[1:6]
    if kind not in KINDS:
        raise SystemExit(f"the kind must be one of {KINDS}, got {kind!r}")
    print(json.dumps(_run(kind, target, token, int(clients), float(rate_hz))), flush=True)


if __name__ == "__main__":
    main()
