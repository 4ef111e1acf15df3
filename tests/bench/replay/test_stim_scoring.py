"""How a replay's stimulation decisions are placed against the ground truth's seizures."""

from __future__ import annotations

import dataclasses

import numpy as np

from bench.data.synth import SynthConfig, generate_session
from bench.data.synth.seizure import Seizure
from bench.replay._stim import score, seizure_episodes
from bench.replay.timeline import lay_out

SEIZURE = Seizure(
    start_s=1.0, duration_s=1.0, amplitude_uv=200.0, start_freq_hz=6.0, end_freq_hz=3.0,
    speed_mps=0.2, direction_deg=0.0, onset_fraction=0.3,
)  # fmt: skip


def test_frames_left_out_of_the_measurement_do_not_move_a_seizures_edges() -> None:
    """Frames blanked as a train's artefact (or non-finite) are measured frames the loop
    leaves out, yet the ground truth knows them: the seizure began where it began. Only
    placeholders (no sample at all) have no truth to read."""
    session = generate_session(SynthConfig(duration_s=3.0, seed=3, episodes=(SEIZURE,)))
    timeline = lay_out(session, session.sample_rate_hz, 1000)
    flags = timeline.truth_at("seizure")
    assert flags is not None
    seizure = np.flatnonzero(flags)
    expected = seizure_episodes(timeline)
    assert expected is not None and len(expected) == 1
    valid, blanked = timeline.valid.copy(), timeline.blanked.copy()
    for first in (seizure[0], seizure[-1] - 29):  # 30 frames (108 ms) at onset and at offset
        valid[first : first + 30] = False
        blanked[first : first + 30] = True
    left_out = dataclasses.replace(timeline, valid=valid, blanked=blanked)
    assert seizure_episodes(left_out) == expected


def _trigger_at(time_s: float) -> dict:
    return {"time_s": time_s, "trigger": True, "outcome": "dry_run", "interlocks": []}


def test_a_trigger_on_the_first_frame_after_a_seizure_is_a_false_one() -> None:
    """A seizure covers its frames' periods, ``[onset, offset)``: the frame after its last one
    is stamped at ``offset`` and is not in it, so a trigger there came after it ended."""
    session = generate_session(SynthConfig(duration_s=3.0, seed=3, episodes=(SEIZURE,)))
    timeline = lay_out(session, session.sample_rate_hz, 1000)
    flags = timeline.truth_at("seizure")
    assert flags is not None
    last = int(np.flatnonzero(flags)[-1])
    episodes = seizure_episodes(timeline)
    assert episodes is not None
    after = score([_trigger_at(float(timeline.times_s[last + 1]))], episodes, 3.0)
    assert (after["false_triggers"], after["sensitivity"]) == (1, 0.0)
    inside = score([_trigger_at(float(timeline.times_s[last]))], episodes, 3.0)
    assert (inside["false_triggers"], inside["sensitivity"]) == (0, 1.0)
