"""The trains of earlier bridge lifetimes, read back from the audit log at start.

A restarted daemon (systemd restarts it on failure; the operator restarts it after a bridge
failure) must not forget refractory and budgets. What counts as a train is what counts within
a lifetime: every ``transmit`` record (fsync'd before its STIMULATE may leave, so no train the
device may have received is missing), every ``dry_run`` decision, and the trains listed by a
``checkpoint`` record (each file that rotation starts begins with one, so deleted old files
lose nothing), less the trains withdrawn: a ``blocked`` decision that carries a sequence number
is a train whose transmit record was written and whose STIMULATE never left (its data went
stale during that fsync, or a disarm came first), and takes back the train of its ``boot`` and
``clock``. A log cut between the two keeps the train: a crash there counts it, as it must.
A train is counted once: the record that makes the log rotate may be that train's own, written
after the checkpoint that already lists it, so a train record whose ``boot`` and ``clock`` a
checkpoint read before it listed is that same train (two trains are never admitted at one
clock reading: refractory is positive), unless that train was withdrawn in between: a withdrawn
train frees its reading, and a train admitted at it afterwards is another one.

Clocks. The interlocks run on the injected monotonic clock; each record carries its ``clock``
reading, the wall ``time`` and the ``boot`` id (see :mod:`firmware_bridge.audit_log`).

- Same boot: CLOCK_MONOTONIC is system-wide, so a restarted process reads the same clock and
  the record's ``clock`` is used as it is. A reading later than now (impossible on that clock)
  is taken as now.
- Another boot, or a boot id unknown on either side: the monotonic readings do not compare,
  so the train's age is derived from wall time (now minus the record's ``time``). A negative
  age (the wall clock was stepped back, or ran ahead when the record was written) is taken
  as zero: the train counts as happening now, which can only block longer, never shorter.
  Within one boot (a known id) the wall clock may have been stepped while the monotonic
  clock ran on: a machine that boots with its clock behind (no RTC battery, the daemon
  started before NTP) stamps its first trains in the past, and read by their own stamps
  they would be forgotten too soon. So each train of a boot is placed at its ``clock`` plus
  the largest ``time - clock`` that its own record or any later record of that boot shows
  (decisions, checkpoints, and each bridge's ``start`` and ``close``, often the last record of
  a boot): the latest its wall clock read after the train, which again can only make a train
  count as more recent. (Records before it say nothing of it: a clock that read ahead and was
  set right before the train does not make it count as now.)

So in production the injected clock must be the system-wide monotonic clock (the default,
``time.monotonic``); tests that inject a fake clock share one across the lifetimes they build.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterable
from typing import Any

from firmware_bridge.audit_log import AuditLog, read_audit_history
from firmware_bridge.errors import AuditLogError

DAY_S = 86_400.0

_log = logging.getLogger("corticast.bridge")


def trains_in_log(audit: AuditLog, now_clock: float) -> list[float]:
    """The trains of the day before ``now_clock`` in every file of ``audit``, as the bridge
    reads them at start (see :func:`past_trains`).

    Raises
    ------
    AuditLogError
        If the log cannot be read (the message names the file), or ``now_clock`` is not
        finite (no age could be judged against it).
    """
    if not math.isfinite(now_clock):
        raise AuditLogError(f"the interlock clock read {now_clock!r}")
    lines = read_audit_history(audit.path)
    if not lines:
        # Right the first time; otherwise the trains of the last day are in another file.
        _log.warning(
            "audit log %r holds no records: refractory and budgets start with no trains. If "
            "trains were given in the last day, their log is elsewhere (a relative [bridge] "
            "audit_log is read from the working directory, %r)",
            str(audit.path.absolute()),
            os.getcwd(),
        )
    return past_trains(
        lines,
        now_clock=now_clock,
        now_wall=time.time(),
        boot=audit.boot_id,
    )


def past_trains(
    lines: Iterable[tuple[str, dict[str, Any]]],
    *,
    now_clock: float,
    now_wall: float,
    boot: str | None,
) -> list[float]:
    """Clock readings, on the current clock, of every train in the day before now, oldest first.

    Parameters
    ----------
    lines
        (location, record) pairs from :func:`~firmware_bridge.audit_log.read_audit_history`.
    now_clock, now_wall
        Now, on the injected clock and on the wall clock.
    boot
        This machine's boot id (None when unknown: every record is then from "another boot").

    Raises
    ------
    AuditLogError
        If a train record lacks a finite ``clock`` or ``time`` (names the file and line), or a
        checkpoint says the history was already unreadable when it was written.
    """
    lines = list(lines)
    offsets = _wall_offsets_from_here_on([record for _, record in lines])
    trains: list[tuple[tuple[str | None, float], float]] = []  # ((boot, clock), at)
    listed: set[tuple[str | None, float]] = set()  # (boot, clock) of checkpoints' trains
    for index, (location, record) in enumerate(lines):
        if (withdrawn := _withdrawn(record)) is not None:
            _take_back(trains, withdrawn)
            listed.discard(withdrawn)  # a train at its reading after it is another one
            continue
        stamps = _stamps(location, record)
        if record.get("event") == "checkpoint":
            listed.update((record_boot, clock) for clock, _, record_boot in stamps)
        elif stamps and (stamps[0][2], stamps[0][0]) in listed:
            continue  # the train the checkpoint before it already lists
        for clock, wall, record_boot in stamps:
            if boot is not None and record_boot == boot:
                at = min(clock, now_clock)
            else:
                wall = max(wall, clock + offsets[index])
                at = now_clock - max(0.0, now_wall - wall)
            if at > now_clock - DAY_S:
                trains.append(((record_boot, clock), at))
    return sorted(at for _, at in trains)


def _wall_offsets_from_here_on(records: list[dict[str, Any]]) -> list[float]:
    """For each record, the largest ``time - clock`` among the records of its boot from it on
    (both finite; -inf if none, or if its boot is unknown, since such records share no clock):
    where that boot's wall clock stood, at the latest, against its monotonic clock at or after
    the record was written, which its trains can only precede."""
    latest: dict[str, float] = {}
    offsets = [-math.inf] * len(records)
    for index in range(len(records) - 1, -1, -1):
        record = records[index]
        boot, clock, wall = (
            record.get("boot"),
            _number(record.get("clock")),
            _number(record.get("time")),
        )
        if not isinstance(boot, str):
            continue
        if clock is not None and wall is not None:
            latest[boot] = max(latest.get(boot, -math.inf), wall - clock)
        offsets[index] = latest.get(boot, -math.inf)
    return offsets


def _withdrawn(record: dict[str, Any]) -> tuple[str | None, float] | None:
    """(boot, clock) of the train a withdrawal record takes back, or None if it is none.

    A withdrawal whose stamps cannot be read takes nothing back: its train keeps counting.
    """
    if record.get("event") != "decision" or record.get("outcome") != "blocked":
        return None
    if record.get("sequence") is None:
        return None  # blocked at admission: never counted
    clock, boot = _number(record.get("clock")), record.get("boot")
    if clock is None:
        return None
    return (boot if isinstance(boot, str) else None, clock)


def _take_back(
    trains: list[tuple[tuple[str | None, float], float]], key: tuple[str | None, float]
) -> None:
    """Remove the newest train of ``key`` (boot, clock), if any is counted."""
    for index in range(len(trains) - 1, -1, -1):
        if trains[index][0] == key:
            del trains[index]
            return


def checkpoint_fields(trains: Iterable[float], now_clock: float) -> dict[str, Any]:
    """What a ``checkpoint`` record holds: now, and the trains (on the same clock).

    The audit log adds ``time`` and ``boot``; a reader of another boot derives each train's
    wall time as ``time - (clock - train)``.
    """
    return {"clock": now_clock, "trains": list(trains)}


def _stamps(location: str, record: dict[str, Any]) -> list[tuple[float, float, str | None]]:
    """(clock, wall time, boot) of each train the record stands for; [] if it is none."""
    event = record.get("event")
    is_train = event == "transmit" or (event == "decision" and record.get("outcome") == "dry_run")
    if event != "checkpoint" and not is_train:
        return []
    if event == "checkpoint" and record.get("history_error") is not None:
        raise AuditLogError(
            f"{location}: this file was started while the history was unreadable: "
            f"{record['history_error']}"
        )
    clock = _finite(location, record, "clock")
    wall = _finite(location, record, "time")
    boot = record.get("boot")
    if boot is not None and not isinstance(boot, str):
        raise AuditLogError(f"{location}: 'boot' must be a string or null, got {boot!r}")
    if is_train:
        return [(clock, wall, boot)]
    trains = record.get("trains")
    if not isinstance(trains, list):
        raise AuditLogError(f"{location}: checkpoint 'trains' must be a list, got {trains!r}")
    stamps = []
    for i, train in enumerate(trains):
        at = _finite(location, {f"trains[{i}]": train}, f"trains[{i}]")
        stamps.append((at, wall - (clock - at), boot))
    return stamps


def _finite(location: str, record: dict[str, Any], key: str) -> float:
    value = _number(record.get(key))
    if value is None:
        raise AuditLogError(
            f"{location}: {record.get('event', 'record')} '{key}' must be a finite number, "
            f"got {record.get(key)!r}"
        )
    return value


def _number(value: Any) -> float | None:
    """``value`` as a float if it is a finite JSON number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)
