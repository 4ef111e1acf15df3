"""The chaos soak's bridge link: a UDP relay between the daemon's bridge and the emulator that
delays, duplicates, reorders, corrupts and drops datagrams, in both directions.

It runs as its own process (``python -m bench.benchmarks.chaos._relay``) so that its forwarding does
not wait on the soak's own threads. The daemon's bridge sends to the relay's port; the relay
forwards to the emulator from the same socket, so the emulator answers the relay, which forwards the
answer to whichever host port spoke last (a restarted daemon has a new one).

Faults come in seeded episodes once the soak sends SIGUSR1 (it does once the loop has been
armed, so that no episode is spent on a daemon still loading its model): a clean stretch, then
one kind of fault on a share of the datagrams for a few seconds. The first episodes take every
kind once, in both directions, in a seeded order; later ones draw kind, direction and share.
No datagram is held back longer than :data:`MAX_HOLD_S`; the auditor's allowance for the link
builds on that bound. Counts go to a JSON file, rewritten twice a second and at exit
(SIGTERM/SIGINT).
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import select
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

FAULT_KINDS = ("delay", "duplicate", "reorder", "corrupt", "drop")
DIRECTIONS = ("to_device", "to_host")
MAX_HOLD_S = 0.08
"""Longest a datagram is held back (a delay, or waiting to be overtaken for a reorder)."""
COVER_LIMIT_S = 30.0
_STATS_EVERY_S = 0.5
_MAX_DATAGRAM = 65_535


@dataclass(frozen=True)
class Episode:
    """One stretch of faults: ``kind`` on a share ``probability`` of the datagrams going in
    ``directions``, for ``seconds``, after ``clean_s`` of clean forwarding. A ``covering``
    episode goes on (up to :data:`COVER_LIMIT_S` longer) until it has hit at least one
    datagram in each of its directions, so that every kind is seen even if the daemon was
    down (and the link silent) for part of it."""

    clean_s: float
    kind: str
    directions: tuple[str, ...]
    probability: float
    seconds: float
    covering: bool = False


def episodes(seed: int) -> Iterator[Episode]:
    """The relay's fault schedule: every kind once in both directions (seeded order), then
    random kinds, directions and shares, forever."""
    rng = random.Random(seed)
    first = list(FAULT_KINDS)
    rng.shuffle(first)
    for kind in first:
        yield Episode(rng.uniform(2.0, 4.0), kind, DIRECTIONS, rng.uniform(0.1, 0.3), 2.5, True)
    while True:
        directions = rng.choice((DIRECTIONS, DIRECTIONS[:1], DIRECTIONS[1:]))
        yield Episode(
            rng.uniform(4.0, 15.0),
            rng.choice(FAULT_KINDS),
            directions,
            rng.uniform(0.05, 0.3),
            rng.uniform(1.0, 5.0),
        )


class FaultyRelay:
    """Forwards datagrams between the host and the device, with the faults of the episodes.

    Parameters
    ----------
    listen_port
        Where the daemon's bridge sends (``[bridge] port`` of the daemon's config).
    device_port
        Where the emulator listens.
    seed
        Seeds the schedule and every per-datagram draw.
    stats_path
        JSON file of the counts.
    schedule
        The episodes to play instead of :func:`episodes` of ``seed``.
    max_hold_s
        The longest a datagram is held back (a test that must see a reorder happen whatever
        the machine's load holds longer).
    """

    def __init__(
        self,
        listen_port: int,
        device_port: int,
        seed: int,
        stats_path: Path,
        schedule: Iterator[Episode] | None = None,
        max_hold_s: float = MAX_HOLD_S,
    ) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", listen_port))
        self._device = ("127.0.0.1", device_port)
        self._host: tuple[str, int] | None = None
        self._rng = random.Random(seed ^ 0x5EED)
        self._schedule = schedule if schedule is not None else episodes(seed)
        self._max_hold_s = max_hold_s
        self._stats_path = stats_path
        self.started = threading.Event()
        self.stop_requested = threading.Event()
        self._episode: Episode | None = None
        self._episode_from = self._episode_until = 0.0
        self._counted_episode = False
        self._cover_base: dict[str, int] = {}
        self._held: list[tuple[float, int, bytes, str]] = []  # (release, order, data, direction)
        self._overtake: dict[str, tuple[float, bytes]] = {}  # direction -> held for a reorder
        self._order = 0
        self.forwarded: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.episode_kinds: Counter[str] = Counter()
        self.send_errors = 0

    def run(self) -> None:
        """Forward until :attr:`stop_requested` is set; write the stats at the end."""
        next_stats = 0.0
        try:
            while not self.stop_requested.is_set():
                now = time.monotonic()
                self._advance_schedule(now)
                self._release_due(now)
                if now >= next_stats:
                    self.write_stats()
                    next_stats = now + _STATS_EVERY_S
                readable, _, _ = select.select([self._sock], [], [], self._wait_s(now))
                if readable:
                    self._receive()
        finally:
            self.write_stats()
            self._sock.close()

    def write_stats(self) -> None:
        stats = {
            "started": self.started.is_set(),
            "forwarded": dict(self.forwarded),
            "faults": dict(self.faults),
            "episodes": dict(self.episode_kinds),
            "send_errors": self.send_errors,
        }
        partial = self._stats_path.with_suffix(".tmp")
        partial.write_text(json.dumps(stats), encoding="utf-8")
        os.replace(partial, self._stats_path)

    # ----------------------------------------------------------------- schedule
    def _advance_schedule(self, now: float) -> None:
        if not self.started.is_set():
            return
        if self._episode is None or (now >= self._episode_until and not self._must_cover(now)):
            self._episode = next(self._schedule)
            self._episode_from = now + self._episode.clean_s
            self._episode_until = self._episode_from + self._episode.seconds
            self._counted_episode = False
            self._cover_base = {d: self.faults[f"{self._episode.kind} {d}"] for d in DIRECTIONS}
        if now >= self._episode_from and not self._counted_episode:
            self.episode_kinds[self._episode.kind] += 1
            self._counted_episode = True

    def _must_cover(self, now: float) -> bool:
        episode = self._episode
        return (
            episode.covering
            and now < self._episode_until + COVER_LIMIT_S
            and any(
                self.faults[f"{episode.kind} {d}"] == self._cover_base[d]
                for d in episode.directions
            )
        )

    def _fault_for(self, direction: str, now: float) -> str | None:
        episode = self._episode
        if episode is None or not (
            self._episode_from <= now < self._episode_until
            or (now >= self._episode_until and self._must_cover(now))
        ):
            return None
        if direction not in episode.directions or self._rng.random() >= episode.probability:
            return None
        return episode.kind

    def _wait_s(self, now: float) -> float:
        due = [self._episode_from, self._episode_until] if self._episode is not None else []
        due += [release for release, *_ in self._held[:1]]
        due += [release for release, _ in self._overtake.values()]
        upcoming = [t - now for t in due if t > now]
        return max(0.0, min([0.05, *upcoming]))

    # ----------------------------------------------------------------- datagrams
    def _receive(self) -> None:
        try:
            data, source = self._sock.recvfrom(_MAX_DATAGRAM)
        except OSError:
            return
        if source[:2] == self._device:
            direction = "to_host"
        else:
            direction, self._host = "to_device", source[:2]
        now = time.monotonic()
        fault = self._fault_for(direction, now)
        if fault == "reorder" and direction in self._overtake:
            fault = None  # one is held already: this one overtakes it anyway
        if fault is not None:
            self.faults[f"{fault} {direction}"] += 1
        if fault == "drop":
            return
        if fault == "delay":
            self._hold(now + self._rng.uniform(0.01, self._max_hold_s), data, direction)
            return
        if fault == "reorder":
            self._overtake[direction] = (now + self._max_hold_s, data)
            return
        if fault == "corrupt":
            data = self._flip_bits(data)
        self._send(data, direction)
        if fault == "duplicate":
            self._hold(now + self._rng.uniform(0.0, 0.005), data, direction)
        if direction in self._overtake:  # overtaken: the held one goes right after
            self._send(self._overtake.pop(direction)[1], direction)

    def _flip_bits(self, data: bytes) -> bytes:
        flipped = bytearray(data)
        bits = self._rng.sample(
            range(len(flipped) * 8), min(len(flipped) * 8, self._rng.randint(1, 3))
        )
        for bit in bits:  # distinct bits: flipping one twice would undo it
            flipped[bit // 8] ^= 1 << (bit % 8)
        return bytes(flipped)

    def _hold(self, release: float, data: bytes, direction: str) -> None:
        self._order += 1
        heapq.heappush(self._held, (release, self._order, data, direction))

    def _release_due(self, now: float) -> None:
        while self._held and self._held[0][0] <= now:
            _, _, data, direction = heapq.heappop(self._held)
            self._send(data, direction)
        for direction, (release, data) in list(self._overtake.items()):
            if release <= now:  # nothing overtook it in time: it goes on its own
                del self._overtake[direction]
                self._send(data, direction)

    def _send(self, data: bytes, direction: str) -> None:
        target = self._device if direction == "to_device" else self._host
        if target is None:
            return
        try:
            self._sock.sendto(data, target)
            self.forwarded[direction] += 1
        except OSError:
            self.send_errors += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--device-port", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stats", type=Path, required=True)
    args = parser.parse_args(argv)
    relay = FaultyRelay(args.listen_port, args.device_port, args.seed, args.stats)
    signal.signal(signal.SIGUSR1, lambda *_: relay.started.set())
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: relay.stop_requested.set())
    relay.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
