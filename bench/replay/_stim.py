"""Stimulation decisions of a replay against the seizures annotated in its ground truth.

A *trigger* is a request the bridge admitted: it passed every interlock (refractory period and
budgets included) and a live bridge would have sent it; in a replay's dry run its outcome is
``dry_run``. Requests blocked by an interlock are shown but are not triggers. Each decision is
placed at the time of the newest measured frame it was computed from.

Against the ground truth: a seizure is a run of frames the generator flagged as seizure; a
trigger within ``[onset - ONSET_TOLERANCE_S, offset)`` belongs to it (a prediction looks
57.6 ms ahead and the policy accepts arrival up to ``max_lead_ms`` later, so a trigger slightly
before the annotated onset is that seizure's; ``offset`` ends its last frame's period: it is
the next frame's time, and that frame is not in it). *Sensitivity* is the fraction of
seizures with at least one trigger; *false triggers per hour* counts triggers outside every
seizure per hour of time outside seizures; *lead before onset* is onset minus the first
trigger's time (negative: the first trigger came that long after onset).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from bench.replay.timeline import Timeline

ONSET_TOLERANCE_S = 0.2
"""How long before an annotated onset a trigger still counts for that seizure (see above)."""
NOT_TRIGGERS = ("blocked",)
"""Bridge outcomes that deliver nothing; every other admitted outcome is a trigger."""


def seizure_episodes(timeline: Timeline) -> list[tuple[float, float]] | None:
    """(onset_s, offset_s) of each seizure in the ground truth; None without ground truth.

    Placeholder slots (dropped samples) neither start nor end a seizure. Frames of the
    session the loop leaves out (blanked as a train's artefact, non-finite) do: the ground
    truth knows them, and a seizure began where it began, not at the next clean frame.
    """
    flags = timeline.truth_at("seizure")
    if flags is None:
        return None
    real = np.flatnonzero(timeline.source_index >= 0)
    on = flags[real]
    edges = np.flatnonzero(np.diff(np.concatenate([[False], on, [False]]).astype(np.int8)))
    period = 1.0 / timeline.sample_rate_hz
    times = timeline.times_s[real]
    return [
        (float(times[start]), float(times[stop - 1]) + period)
        for start, stop in zip(edges[::2], edges[1::2], strict=True)
    ]


def decisions(stims: list[dict[str, Any]], timeline: Timeline) -> list[dict[str, Any]]:
    """One row per stimulation request, in time order, with the policy's and bridge's verdicts."""
    rows = []
    for stim in stims:
        seq = int(stim["input_seq"])
        policy, bridge = stim["policy"], stim.get("bridge")
        outcome = "no bridge" if bridge is None else str(bridge["outcome"])
        rows.append(
            {
                "time_s": float(timeline.times_s[min(seq, len(timeline) - 1)]),
                "input_seq": seq,
                "outcome": outcome,
                "trigger": bridge is not None and outcome not in NOT_TRIGGERS,
                "interlocks": list(bridge["interlocks"]) if bridge else [],
                "bridge_reason": bridge["reason"] if bridge else "no bridge",
                "policy_reason": policy["reason"],
                "lead_time_to_target_s": policy["lead_time_s"],
            }
        )
    return sorted(rows, key=lambda row: row["time_s"])


def score(
    rows: list[dict[str, Any]], episodes: list[tuple[float, float]] | None, duration_s: float
) -> dict[str, Any]:
    """Counts, and against the ground truth (when there is one) sensitivity, false triggers
    per hour and lead before onset; adds each row's ``seizure`` (episode index or None)."""
    triggers = [row for row in rows if row["trigger"]]
    blocked = Counter(row["interlocks"][0] for row in rows if row["interlocks"])
    out: dict[str, Any] = {
        "requests": len(rows),
        "triggers": len(triggers),
        "outcomes": dict(Counter(row["outcome"] for row in rows)),
        "blocked_by_first_interlock": dict(blocked),
        "triggers_per_hour": len(triggers) / (duration_s / 3600.0),
        "seizures": None,
        "sensitivity": None,
        "false_triggers": None,
        "false_triggers_per_hour": None,
        "median_lead_before_onset_s": None,
    }
    if episodes is None:
        return out
    for row in rows:
        row["seizure"] = _episode_of(row["time_s"], episodes)
    table = []
    for index, (onset, offset) in enumerate(episodes):
        mine = [row["time_s"] for row in triggers if row["seizure"] == index]
        table.append(
            {
                "onset_s": onset,
                "offset_s": offset,
                "triggers": len(mine),
                "detected": bool(mine),
                "first_trigger_s": min(mine) if mine else None,
                "lead_before_onset_s": onset - min(mine) if mine else None,
            }
        )
    false = sum(1 for row in triggers if row["seizure"] is None)
    outside_h = (duration_s - sum(offset - onset for onset, offset in episodes)) / 3600.0
    leads = [entry["lead_before_onset_s"] for entry in table if entry["detected"]]
    out.update(
        seizures=table,
        sensitivity=sum(entry["detected"] for entry in table) / len(table) if table else None,
        false_triggers=false,
        false_triggers_per_hour=false / outside_h if outside_h > 0 else None,
        median_lead_before_onset_s=float(np.median(leads)) if leads else None,
    )
    return out


def _episode_of(time_s: float, episodes: list[tuple[float, float]]) -> int | None:
    for index, (onset, offset) in enumerate(episodes):
        if onset - ONSET_TOLERANCE_S <= time_s < offset:
            return index
    return None
