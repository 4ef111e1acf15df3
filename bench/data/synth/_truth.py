"""Per-frame ground truth from an episode schedule."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bench.data.ground_truth import PATTERN_LABELS, GroundTruth
from bench.data.synth._episode import Episode


def schedule_truth(t: np.ndarray, episodes: Sequence[Episode], on: np.ndarray) -> GroundTruth:
    """Label each frame with the strongest episode covering it (background where none does).

    An episode covers the frames of its span that ``on`` ((episodes, T) bool) says its pattern
    is on: a bursting wave is absent between bursts, and a frame without it is not its.
    Strength is the episode's tapered nominal amplitude, so an overlap is labelled by whichever
    pattern dominates the signal there. The seizure flag is set wherever any seizure episode
    covers the frame, dominant or not.
    """
    n = t.size
    velocity = np.full((n, 2), np.nan)
    speed = np.full(n, np.nan)
    label = np.zeros(n, dtype=np.int8)
    seizure = np.zeros(n, dtype=bool)
    if episodes:
        covered = np.stack([ep.covers(t) for ep in episodes]) & on
        strength = np.where(covered, np.stack([ep.strength(t) for ep in episodes]), -1.0)
        best = np.where(covered.any(axis=0), np.argmax(strength, axis=0), -1)
        for index, ep in enumerate(episodes):
            mine = best == index
            label[mine] = PATTERN_LABELS.index(ep.kind)
            velocity[mine] = ep.truth_velocity_mps
            speed[mine] = ep.truth_speed_mps
            if ep.is_seizure:
                seizure |= covered[index]
    return GroundTruth(velocity_mps=velocity, speed_mps=speed, label=label, seizure=seizure)
