"""Stream mode run batched: :class:`StreamingPredictor`'s states, advanced many at a time.

A stream-mode prediction depends on the frames fed before it, but only through the encoder
state of the one chain of frames it continues: a state started from zeros (a re-prime, or a
scheduled rebuild every ``reprime_every_frames``) and fed every frame after. Different states
never mix. Which states there are and which steps each takes (when to re-prime, which states
start, when one hands over to the next, which frames each state sees with which ``upper_due``,
which step rolls out) is decided without running the model, by the
:class:`~service.inference._stream_schedule.StreamSchedule` the predictor follows too:
:class:`StreamPlan` asks it for each call's steps and records each state's as a
:class:`Chain`. :meth:`StreamPlan.execute` then runs the steps in rounds: each round advances
every chain with steps pending by one step, the chains grouped by their flags into batched calls
of the step graph. A chain's steps still run in order on its own state; only
independent states share a call, so each prediction is the one the predictor would have made
(bitwise, as ``models.batch_graph`` proves the batched graph against batch 1).

The step graph takes ``upper_due`` and ``rollout`` as one flag per call (they select If
branches), so a round's chains are grouped by their step's two flags: at most four groups per
round, each with every chain whose step has those flags, run in calls of at most the session's
largest batch. Chains that ran together in one call and do so again take that call's states as
they came out, without copying their rows into a new batch.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field

import numpy as np

from service.inference._stream_schedule import StreamSchedule


@dataclass
class _Step:
    frame: np.ndarray
    """(rows, cols) float32, normalised with the statistics of the call that fed it."""
    upper_due: bool
    output: int | None
    """Index of the prediction this step's future is, None for a step that only advances."""


@dataclass(eq=False)
class Chain:
    """One encoder state: its tensors once it has run (None: still zeros) and the steps
    recorded but not yet run."""

    tensors: list[np.ndarray] | None = None
    pending: deque[_Step] = field(default_factory=deque)
    tensors_from: list[np.ndarray] | None = None
    """The batched states ``tensors`` are row ``row`` of (the call that last ran the chain)."""
    row: int = 0


class StreamPlan:
    """``StreamingPredictor.predict``'s calls, their steps recorded as chains (module docstring).

    Parameters
    ----------
    window_frames
        Frames per window (the stream's ``past_frames``).
    reprime_every
        The predictor's ``reprime_every_frames`` (None: never rebuilt on a schedule).
    """

    def __init__(self, window_frames: int, reprime_every: int | None) -> None:
        self._schedule: StreamSchedule[Chain] = StreamSchedule(window_frames, reprime_every, Chain)
        self._chains: dict[int, Chain] = {}
        """Chains with steps pending, by id, in the order they were given their first."""

    def reset(self) -> None:
        """Forget the states, as ``StreamingPredictor.reset``: the next call re-primes."""
        self._schedule.reset()

    def add(self, normalised: np.ndarray, newest_seq: int, output: int) -> None:
        """Record one ``predict`` call: its window (already normalised) and newest sequence
        number; the future of its last step is prediction ``output``."""
        if len(normalised) != self._schedule.window_frames:
            raise ValueError(
                f"a stream-mode window must have {self._schedule.window_frames} frames, got "
                f"{len(normalised)}"
            )
        for frame in self._schedule.feed(newest_seq):
            for step in frame.steps:
                chain = step.state
                index = output if step.rollout else None
                chain.pending.append(_Step(normalised[frame.offset], step.upper_due, index))
                self._chains.setdefault(id(chain), chain)

    @property
    def reprimes(self) -> int:
        """Times a state was started over from the window given (as the predictor counts)."""
        return self._schedule.reprimes

    @property
    def handovers(self) -> int:
        """Times a state built on schedule replaced the carried one."""
        return self._schedule.handovers

    def execute(self, run_step, outputs: list, *, max_batch: int | None = None) -> None:
        """Run every pending step; ``outputs[i]`` gets prediction i's normalised future.

        ``run_step(frames, states, upper_due, rollout)`` runs the step graph on a batch:
        frames (G, rows, cols), states one (G, ...) array per state tensor (None: zeros),
        returns (futures (G, future, rows, cols), new states). A group of more than
        ``max_batch`` chains (None: no limit) is run in calls of at most that many.

        Steps that no prediction depends on are dropped first: those after the last rollout
        of a state no later call can feed (:meth:`StreamSchedule.live`). At a stride above
        the window every call re-primes, so a state started on schedule inside a window never
        takes over: the daemon's predictor runs its steps (it cannot know the next call's
        frame), a replay that knows every call need not.
        """
        self._drop_unused_steps()
        while self._chains:
            groups: dict[tuple[bool, bool], list[Chain]] = defaultdict(list)
            for chain in self._chains.values():
                step = chain.pending[0]
                groups[(step.upper_due, step.output is not None)].append(chain)
            for (due, rollout), chains in groups.items():
                size = len(chains) if max_batch is None else max_batch
                for start in range(0, len(chains), size):
                    part = chains[start : start + size]
                    self._run_group(run_step, part, due, rollout, outputs)
            self._chains = {key: c for key, c in self._chains.items() if c.pending}

    def _drop_unused_steps(self) -> None:
        live = {id(state) for state in self._schedule.live()}
        for key, chain in list(self._chains.items()):
            if key in live:
                continue
            while chain.pending and chain.pending[-1].output is None:
                chain.pending.pop()
            if not chain.pending:
                del self._chains[key]

    def _run_group(self, run_step, chains: list[Chain], due: bool, rollout: bool, outputs) -> None:
        steps = [chain.pending.popleft() for chain in chains]
        frames = np.stack([step.frame for step in steps])
        if all(chain.tensors is None for chain in chains):
            states = None
        elif _one_call(chains):
            states = chains[0].tensors_from  # their rows, in this order, as one call left them
        else:
            parts = [_tensors(chain, chains) for chain in chains]
            states = [np.stack(column) for column in zip(*parts, strict=True)]
        futures, new_states = run_step(frames, states, due, rollout)
        for j, (chain, step) in enumerate(zip(chains, steps, strict=True)):
            chain.tensors = [state[j] for state in new_states]
            chain.tensors_from, chain.row = new_states, j
            if step.output is not None:
                outputs[step.output] = futures[j]


def _one_call(chains: list[Chain]) -> bool:
    """Whether the chains' states are, in order, all the rows of one call's states."""
    source = chains[0].tensors_from
    return (
        source is not None
        and len(source[0]) == len(chains)
        and all(c.tensors_from is source and c.row == j for j, c in enumerate(chains))
    )


def _tensors(chain: Chain, group: list[Chain]) -> list[np.ndarray]:
    """A chain's state tensors, zeros (shaped like a group member's) before its first step."""
    if chain.tensors is not None:
        return chain.tensors
    like = next(c.tensors for c in group if c.tensors is not None)
    return [np.zeros_like(t) for t in like]
