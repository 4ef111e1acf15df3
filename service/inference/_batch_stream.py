"""Stream mode run batched: :class:`StreamingPredictor`'s states, advanced many at a time.

A stream-mode prediction depends on the frames fed before it, but only through the encoder
state of the one chain of frames it continues: a state started from zeros (a re-prime, or a
scheduled rebuild every ``reprime_every_frames``) and fed every frame after. Different states
never mix. So :class:`StreamPlan` replays the predictor's control flow exactly (when it
re-primes, which states it starts, when one hands over to the next, which frames each state sees
with which ``upper_due``, which step rolls out) without running the model, and records each
state's steps as a :class:`Chain`. :meth:`StreamPlan.execute` then runs the steps in rounds: each
round advances every chain with steps pending by one step, the chains grouped by their flags
into batched calls of the step graph. A chain's steps still run in order on its own state; only
independent states share a call, so each prediction is the one the predictor would have made
(bitwise, as ``models.batch_graph`` proves the batched graph against batch 1).

The step graph takes ``upper_due`` and ``rollout`` as one flag per call (they select If
branches), so a round's chains are grouped by their step's two flags: at most four calls per
round, each with every chain whose step has those flags.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Step:
    frame: np.ndarray
    """(rows, cols) float32, normalised with the statistics of the call that fed it."""
    upper_due: bool
    output: int | None
    """Index of the prediction this step's future is, None for a step that only advances."""


@dataclass(eq=False)
class Chain:
    """One encoder state: its anchor (see ``StreamingPredictor``), its tensors once it has run
    (None: still zeros) and the steps recorded but not yet run."""

    anchor: int
    tensors: list[np.ndarray] | None = None
    pending: deque[_Step] = field(default_factory=deque)

    def add(self, frame: np.ndarray, seq: int, output: int | None) -> None:
        self.pending.append(_Step(frame, (seq - self.anchor) % 2 == 0, output))


class StreamPlan:
    """``StreamingPredictor.predict``'s control flow, recorded as chains (module docstring).

    Parameters
    ----------
    window_frames
        Frames per window (the stream's ``past_frames``).
    reprime_every
        The predictor's ``reprime_every_frames`` (None: never rebuilt on a schedule).
    """

    def __init__(self, window_frames: int, reprime_every: int | None) -> None:
        self._window = window_frames
        self._every = reprime_every
        self._carried = Chain(anchor=0)
        self._building: list[Chain] = []
        self._last_seq: int | None = None
        self.reprimes = 0
        """Times a state was started over from the window given (as the predictor counts)."""
        self.handovers = 0
        """Times a state built on schedule replaced the carried one."""
        self._chains: dict[int, Chain] = {}
        """Chains with steps pending, by id, in the order they were given their first."""

    def add(self, normalised: np.ndarray, newest_seq: int, output: int) -> None:
        """Record one ``predict`` call: its window (already normalised) and newest sequence
        number; the future of its last step is prediction ``output``."""
        new = None if self._last_seq is None else newest_seq - self._last_seq
        if new is None or not 0 < new <= len(normalised):
            self._carried = Chain(anchor=newest_seq)
            self._building.clear()
            self.reprimes += 1
            new = len(normalised)
        for offset in range(len(normalised) - new, len(normalised)):
            seq = newest_seq - (len(normalised) - 1 - offset)
            self._advance(normalised[offset], seq, output if seq == newest_seq else None)
        self._last_seq = newest_seq

    def execute(self, run_step, outputs: list) -> None:
        """Run every pending step; ``outputs[i]`` gets prediction i's normalised future.

        ``run_step(frames, states, upper_due, rollout)`` runs the step graph on a batch:
        frames (G, rows, cols), states one (G, ...) array per state tensor (None: zeros),
        returns (futures (G, future, rows, cols), new states).
        """
        while self._chains:
            groups: dict[tuple[bool, bool], list[Chain]] = defaultdict(list)
            for chain in self._chains.values():
                step = chain.pending[0]
                groups[(step.upper_due, step.output is not None)].append(chain)
            for (due, rollout), chains in groups.items():
                self._run_group(run_step, chains, due, rollout, outputs)
            self._chains = {key: c for key, c in self._chains.items() if c.pending}

    def _run_group(self, run_step, chains: list[Chain], due: bool, rollout: bool, outputs) -> None:
        steps = [chain.pending.popleft() for chain in chains]
        frames = np.stack([step.frame for step in steps])
        if all(chain.tensors is None for chain in chains):
            states = None
        else:
            parts = [_tensors(chain, chains) for chain in chains]
            states = [np.stack(column) for column in zip(*parts, strict=True)]
        futures, new_states = run_step(frames, states, due, rollout)
        for j, (chain, step) in enumerate(zip(chains, steps, strict=True)):
            chain.tensors = [state[j] for state in new_states]
            if step.output is not None:
                outputs[step.output] = futures[j]

    def _advance(self, frame: np.ndarray, seq: int, output: int | None) -> None:
        anchor = seq + self._window - 1
        if self._every and seq % self._every == 0 and anchor > self._carried.anchor:
            self._building.append(Chain(anchor))
        if self._building and self._building[0].anchor == seq:
            self._carried = self._building.pop(0)
            self.handovers += 1
        for chain in (self._carried, *self._building):
            chain.add(frame, seq, output if chain is self._carried else None)
            self._chains.setdefault(id(chain), chain)


def _tensors(chain: Chain, group: list[Chain]) -> list[np.ndarray]:
    """A chain's state tensors, zeros (shaped like a group member's) before its first step."""
    if chain.tensors is not None:
        return chain.tensors
    like = next(c.tensors for c in group if c.tensors is not None)
    return [np.zeros_like(t) for t in like]
