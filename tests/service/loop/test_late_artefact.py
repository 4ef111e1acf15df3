"""``LateArtefactCheck`` on a real ring: which delivered trains it says answered another tool's
train (frames blanked only after the decision), and what it says of them."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service.core.grid import DEFAULT_GRID, NOMINAL_RATE_HZ
from service.ingest.ring_buffer import RingBuffer
from service.loop.late_artefact import LateArtefactCheck

_CAPACITY = 64
_SETTLE = 8


def _write(ring: RingBuffer, n: int) -> None:
    """``n`` measured frames, stamped on from the ring's newest at the nominal rate."""
    first = ring.next_seq
    stamps = (first + np.arange(n, dtype=np.float64)) / NOMINAL_RATE_HZ
    frames = np.zeros((n, *DEFAULT_GRID.shape), dtype=np.float32)
    ring.write(frames, stamps, np.ones(n, dtype=bool), arrival=float(stamps[-1]))


def _check(ring: RingBuffer) -> tuple[LateArtefactCheck, CollectorRegistry]:
    registry = CollectorRegistry()
    return LateArtefactCheck(ring, _SETTLE, registry), registry


def test_a_train_whose_frames_the_ring_overwrote_before_its_check_is_not_said_to_answer_one(
    caplog,
):
    """The wave stage made no decision (so no check) while the ring overwrote a delivered
    train's frames: none of them was ever blanked, so the train is not counted as decided on
    late artefact; that it could not be checked is said instead."""
    ring = RingBuffer(_CAPACITY)
    _write(ring, 40)
    check, registry = _check(ring)
    check.delivered(7, 20, 39)
    _write(ring, 3 * _CAPACITY)  # a stall of the wave stage longer than the ring
    caplog.set_level(logging.WARNING, logger="corticast.loop")
    assert check.check() == 0
    assert check.trains == 0
    name = "corticast_loop_trains_decided_on_late_artefact_total"
    assert (registry.get_sample_value(name) or 0.0) == 0.0
    said = [r.getMessage() for r in caplog.records]
    assert any("train #7" in m and "overwrote" in m for m in said), said
    assert not any("only after the decision" in m for m in said), said


def test_a_train_blanked_afterwards_of_which_part_was_overwritten_is_counted_by_what_is_held(
    caplog,
):
    """Of a train's frames, the older ones overwritten and a held one blanked after the
    decision: counted, and the error gives the frames found blanked, not the overwritten."""
    ring = RingBuffer(_CAPACITY)
    _write(ring, 40)
    check, _ = _check(ring)
    check.delivered(7, 10, 39)
    _write(ring, 30)  # frames 0..5 overwritten: 10..39 held
    stamp = 39 / NOMINAL_RATE_HZ
    ring.blank(stamp, stamp)
    _write(ring, 10)  # 10..15 overwritten too
    caplog.set_level(logging.ERROR, logger="corticast.loop")
    assert check.check() == 1
    (said,) = [r.getMessage() for r in caplog.records]
    assert "of which 1 were blanked" in said, said


@pytest.mark.parametrize("sequence", [None, 12])
def test_the_error_names_the_train_as_the_session_record_does(caplog, sequence):
    """A train sent without a verdict (``failed``: the device may have delivered it, none
    numbered it) is named as such, not as train ``#None``."""
    ring = RingBuffer(_CAPACITY)
    _write(ring, 40)
    check, _ = _check(ring)
    check.delivered(sequence, 20, 39)
    stamp = 30 / NOMINAL_RATE_HZ
    ring.blank(stamp, stamp)
    _write(ring, _SETTLE + 1)
    caplog.set_level(logging.ERROR, logger="corticast.loop")
    assert check.check() == 1
    (said,) = [r.getMessage() for r in caplog.records]
    assert "None" not in said, said
    if sequence is None:
        assert "sent without a verdict" in said, said
    else:
        assert "train #12 " in said, said


def test_every_train_the_minute_budget_lets_through_within_the_latency_is_checked() -> None:
    """[interlocks] max_trains_per_minute allows up to 600 trains in a minute, all within the
    longest latency a marker may have (10 s) where trains are short: each is checked, the
    oldest as well as the newest (none dropped unchecked from a shorter queue)."""
    ring = RingBuffer(4096)
    _write(ring, 700)
    check, _ = _check(ring)
    for k in range(600):
        check.delivered(k, k, k + 16)
    stamp = 5 / NOMINAL_RATE_HZ  # a frame of the oldest trains only (0..5)
    ring.blank(stamp, stamp)
    _write(ring, _SETTLE + 1)
    assert check.check() == 6


def test_with_no_latency_allowed_a_marker_s_train_is_checked_at_the_next_decision() -> None:
    """[ingest] stimulation_marker_latency_ms = 0 while other tools' marker streams are read:
    every marker comes after its train's frames (each one late), so the trains decided on
    them are checked at once, at the next decision; only with no such stream (None) is
    nothing checked."""
    for settle, found in ((0, 1), (None, 0)):
        ring = RingBuffer(_CAPACITY)
        _write(ring, 40)
        check = LateArtefactCheck(ring, settle, CollectorRegistry())
        check.delivered(3, 20, 39)
        stamp = 30 / NOMINAL_RATE_HZ
        ring.blank(stamp, stamp)
        _write(ring, 1)
        assert check.check() == found, f"settle_frames {settle}"
