"""Trains decided on frames that were blanked only afterwards: answers to another tool's train.

The ``artefact`` interlock refuses a request whose frames are blanked as stimulation artefact,
but only those blanked by the time it judges. Another tool's marker reaches the daemon a link's
latency after its train starts (``[ingest] stimulation_marker_latency_ms``), and the blank
around a marker stream's opening reaches back before it: a decision in between rested on that
train's artefact, read as cortex, and what it delivered answered the other tool's train.
Nothing can call the train back. Each delivered train is checked again once the latency has
passed; one whose frames a blank has reached since is counted and said, so the session's
record (the journal, ``/status``, the metric) says which trains the loop did not decide on
cortex.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

from service.ingest.ring_buffer import RingBuffer

_log = logging.getLogger("corticast.loop")

_KEPT = 600
"""Delivered trains awaiting their check: ``[interlocks] max_trains_per_minute`` lets at most
600 through in any minute, and so in any latency a marker may have (at most 10 s), all of them
there where trains are short; a train dropped unchecked would go unsaid."""


@dataclass(frozen=True)
class _Delivered:
    sequence: int | None
    """The device's number for the train (None: no verdict gave one)."""
    first_seq: int
    input_seq: int
    """The measured frames the decision rested on, by ring sequence number."""
    own_blanked: int
    """How many of them the train's own blank covered as it was sent (stamped after it)."""

    def named(self) -> str:
        """The train as the session's record names it."""
        if self.sequence is None:
            return "a train sent without a verdict (failed: it may have been delivered)"
        return f"train #{self.sequence}"


class LateArtefactCheck:
    """Checks each delivered train again ``settle_frames`` after the newest frame its
    decision rested on (0: at the next decision, every marker being late). None checks
    nothing: no other tool's marker is read, and the daemon's own trains are blanked before
    they are sent."""

    def __init__(
        self, ring: RingBuffer, settle_frames: int | None, registry: CollectorRegistry
    ) -> None:
        self._ring = ring
        self._settle = settle_frames
        self._awaiting: deque[_Delivered] = deque(maxlen=_KEPT)
        self.trains = 0
        """Trains found decided on frames blanked afterwards, for ``/status``."""
        self._trains = Counter(
            "corticast_loop_trains_decided_on_late_artefact",
            "Trains the stimulator may have delivered whose decision rested on frames blanked "
            "as stimulation artefact only afterwards (another tool's marker that came late, or "
            "the blank around a marker stream's opening): answers to that train, not cortex",
            registry=registry,
        )

    def delivered(
        self, sequence: int | None, first_seq: int, input_seq: int, *, own_blanked: int = 0
    ) -> None:
        """Remember a train the stimulator may have delivered, decided on the measured frames
        ``first_seq`` to ``input_seq``, of which its own blank covered ``own_blanked`` as it
        was sent (the artefact interlock had found none blanked)."""
        if self._settle is not None:
            self._awaiting.append(_Delivered(sequence, first_seq, input_seq, own_blanked))

    def check(self, *, unsettled_too: bool = False) -> int:
        """Check the trains whose frames have settled (``unsettled_too``: every train still
        waiting, as the wave stage stops: no later decision would check them, and what has
        been blanked by now is known); returns how many were decided on artefact blanked
        since."""
        if self._settle is None:
            return 0
        settled = self._ring.next_seq + 1 if unsettled_too else self._ring.next_seq - self._settle
        found = 0
        while self._awaiting and self._awaiting[0].input_seq < settled:
            train = self._awaiting.popleft()
            # Overwritten frames are not known to be blanked: a wave stage that made no
            # decision for a ring's length (no prediction came) must not count every train.
            held, overwritten = self._ring.blanked_held_among(train.first_seq, train.input_seq)
            blanked = max(0, held - train.own_blanked)
            if blanked:
                found += 1
                _log.error(
                    "%s was decided on frames %d-%d, of which %d were blanked as stimulation "
                    "artefact only after the decision (another tool's marker that came late, "
                    "or the blank around a marker stream's opening): it may have answered "
                    "another tool's train, not cortex",
                    train.named(), train.first_seq, train.input_seq, blanked,
                )  # fmt: skip
            elif overwritten:
                _log.warning(
                    "%s, decided on frames %d-%d, was not checked for artefact blanked after "
                    "the decision: the ring overwrote %d of its frames before the wave stage's "
                    "next decision",
                    train.named(), train.first_seq, train.input_seq, overwritten,
                )  # fmt: skip
        if found:
            self.trains += found
            self._trains.inc(found)
        return found
