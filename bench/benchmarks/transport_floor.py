"""The floor under the loop's overhead: one sample over LSL, one prediction over ZeroMQ, alone.

The end-to-end benchmark's loop overhead (push -> received, less inference) crosses two
transports between processes: LSL from the rig to the daemon, ZeroMQ from the daemon to the
subscriber, each a few thread wake-ups. This measures each alone, between two processes of
this host and with nothing in between, at the loop's pace: the part of the overhead no change
to corticast's own code can remove, so that the loop's overhead can be judged as a multiple of
it on any machine. Phases alternate (LSL, ZeroMQ over TCP, ZeroMQ over ipc, ``--rounds``
times) so that another user's load falls on each alike.

- LSL: this process pushes one 360-channel float32 sample every frame period, stamped with the
  local clock at the push; a child process (the daemon's place) pulls as the ingestor does
  (``service.ingest.lsl.ChunkPuller``: wait for one sample, then drain) and stamps its arrival.
- ZeroMQ: a child process (the daemon's place) publishes a prediction-sized message (a 16 x 18
  x 20 float32 payload) every ``--stride`` frames, stamped at the send; this process subscribes,
  at ``tcp://127.0.0.1`` or at an ``ipc://`` unix socket, and stamps its arrival.

This process (the rig's and the subscriber's place) runs under SCHED_FIFO where permitted, the
children at the normal policy, as in ``bench.benchmarks.end_to_end_latency``.

Usage: ``python -m bench.benchmarks.transport_floor --seconds 10 --rounds 3``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import threading
import time
import uuid

import numpy as np
import pylsl
import zmq

from bench.benchmarks._neighbours import as_normal_process, raise_instrument
from service.core.grid import DEFAULT_GRID, NOMINAL_RATE_HZ
from service.core.python_module import python_module_command
from service.ingest.lsl import ChunkPuller, quiet_liblsl

_PAYLOAD = np.zeros((16, *DEFAULT_GRID.shape), dtype=np.float32).tobytes()
"""A prediction's payload: 16 frames of the grid, float32."""
_CONNECT_S = 1.0
"""Time a new subscription or inlet is given to connect before anything counts."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--rounds", type=int, default=3, help="each transport this many times")
    parser.add_argument(
        "--stride", type=int, default=2, help="frames between ZeroMQ messages (the loop's)"
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    if args.seconds <= 0 or args.rounds < 1 or args.stride < 1:
        parser.error(
            f"--seconds must be > 0, --rounds and --stride >= 1, got {args.seconds}, "
            f"{args.rounds}, {args.stride}"
        )
    quiet_liblsl()
    instrument = raise_instrument()
    latencies: dict[str, list[np.ndarray]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            latencies.setdefault("LSL push -> pulled (ingest's pull)", []).append(
                _lsl(args.seconds)
            )
            for name, endpoint in (("tcp", "tcp://127.0.0.1:*"), ("ipc", f"ipc://{tmp}/p.sock")):
                latencies.setdefault(f"ZeroMQ send -> received ({name})", []).append(
                    _zmq(endpoint, args.seconds, args.stride)
                )
    _report({name: np.concatenate(runs) for name, runs in latencies.items()}, args, instrument)


def _lsl(seconds: float) -> np.ndarray:
    """Seconds from each push to the child's pull of it."""
    source_id = f"corticast-floor-{uuid.uuid4().hex[:8]}"
    info = pylsl.StreamInfo(
        "floor", "ECoG", DEFAULT_GRID.n_channels, NOMINAL_RATE_HZ, pylsl.cf_float32, source_id
    )
    outlet = pylsl.StreamOutlet(info)
    child = _start_child("lsl", source_id, seconds)
    if not outlet.wait_for_consumers(30):
        raise RuntimeError("the LSL child never connected")
    sample = np.zeros((1, DEFAULT_GRID.n_channels), dtype=np.float32)
    _paced(seconds + _CONNECT_S + 1.0, 1, lambda: outlet.push_chunk(sample, pylsl.local_clock()))
    arrivals = np.array(json.loads(_finish(child)))
    return arrivals[:, 1] - arrivals[:, 0]


def _zmq(endpoint: str, seconds: float, stride: int) -> np.ndarray:
    """Seconds from each of the child's sends to its receipt here."""
    context = zmq.Context()
    socket = context.socket(zmq.SUB)
    socket.linger = 0
    socket.subscribe(b"")
    child = _start_child("zmq", endpoint, seconds, stride)
    try:
        bound = child.stdout.readline().decode().strip()  # the child says where it bound
        socket.connect(bound)
        latencies: list[float] = []
        counting_from = time.monotonic() + _CONNECT_S
        while socket.poll(2000):
            frames = socket.recv_multipart()
            arrived = pylsl.local_clock()
            if frames[0] == b"end":
                break
            if time.monotonic() >= counting_from:
                latencies.append(arrived - float(frames[1]))
        _finish(child)
    finally:
        socket.close(linger=0)
        context.term()
    return np.array(latencies)


def _child(kind: str, where: str, seconds: str) -> None:
    """The daemon's place: pull LSL samples, or publish ZeroMQ messages (``where`` is then
    ``ENDPOINT,STRIDE``); report on stdout."""
    if kind == "lsl":
        quiet_liblsl()
        found = pylsl.resolve_bypred(f"source_id='{where}'", 1, 30)
        if not found:
            raise RuntimeError(f"no LSL stream with source_id {where!r}")
        inlet = pylsl.StreamInlet(found[0], max_buflen=1, recover=False)
        inlet.open_stream(30)
        samples = np.zeros((1024, DEFAULT_GRID.n_channels), dtype=np.float32)
        stamps = np.zeros(1024)
        puller = ChunkPuller(inlet, samples, stamps)
        pairs: list[tuple[float, float]] = []
        stop_at = time.monotonic() + float(seconds) + _CONNECT_S
        counting_from = time.monotonic() + _CONNECT_S
        while time.monotonic() < stop_at:
            if puller.pull(0, 1, 0.02) == 0:
                continue
            n = 1 + puller.pull(1, 1023, 0.0)
            # After both pulls: a sample pushed between them is in hand only now (read before
            # the second pull, it had arrived before it was pushed).
            arrived = pylsl.local_clock()
            if time.monotonic() >= counting_from:
                pairs += [(float(stamps[k]), arrived) for k in range(n)]
        print(json.dumps(pairs))
        return
    endpoint, stride = where.rsplit(",", 1)
    context = zmq.Context()
    socket = context.socket(zmq.PUB)
    socket.linger = 0
    socket.bind(endpoint)
    print(socket.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)

    def send() -> None:
        socket.send_multipart(
            [b"prediction", repr(pylsl.local_clock()).encode(), _PAYLOAD], flags=zmq.NOBLOCK
        )

    _paced(float(seconds) + _CONNECT_S, int(stride), send)
    socket.send_multipart([b"end", b"", b""])
    time.sleep(0.2)
    socket.close(linger=0)
    context.term()


def _paced(seconds: float, every: int, act: object) -> None:
    """Call ``act`` once every ``every`` frame periods for ``seconds``, on the local clock."""
    period = every / NOMINAL_RATE_HZ
    wake = threading.Event()
    start = pylsl.local_clock()
    for k in range(int(seconds / period)):
        delay = start + k * period - pylsl.local_clock()
        if delay > 0:
            wake.wait(delay)
        act()


def _start_child(
    kind: str, where: str, seconds: float, stride: int | None = None
) -> subprocess.Popen:
    argument = where if stride is None else f"{where},{stride}"
    return subprocess.Popen(
        python_module_command(
            "bench.benchmarks.transport_floor", "--child", kind, argument, str(seconds)
        ),
        stdout=subprocess.PIPE,
        preexec_fn=as_normal_process,
    )  # fmt: skip


def _finish(child: subprocess.Popen) -> str:
    output, _ = child.communicate(timeout=60)
    if child.returncode != 0:
        raise RuntimeError(f"the child process failed (exit status {child.returncode})")
    return output.decode()


def _report(latencies: dict[str, np.ndarray], args: argparse.Namespace, instrument: str) -> None:
    print(
        f"{platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}, liblsl "
        f"{pylsl.library_version()}, libzmq {zmq.zmq_version()}; {args.seconds:g} s per phase, "
        f"{args.rounds} rounds in turn; LSL one sample per frame at {NOMINAL_RATE_HZ:g} Hz, "
        f"ZeroMQ one prediction-sized message every {args.stride} frames; {instrument}; "
        f"load average {os.getloadavg()[0]:.2f}\n"
    )
    print("| transport, alone between two processes | messages | p50 (ms) | p90 (ms) | p99 (ms) |")
    print("|---|---:|---:|---:|---:|")
    p50 = {}
    for name, seconds in latencies.items():
        ms = seconds * 1e3
        p50[name] = float(np.percentile(ms, 50))
        cells = [f"{np.percentile(ms, q):.3f}" for q in (50, 90, 99)]
        print(f"| {name} | {ms.size:,} | " + " | ".join(cells) + " |")
    lsl, tcp, ipc = p50.values()
    print(f"| floor of the loop's two transports, p50s summed: LSL + tcp | | {lsl + tcp:.3f} | | |")
    print(f"| the same, LSL + ipc | | {lsl + ipc:.3f} | | |")


if __name__ == "__main__":
    main()
