"""Simulated dropped samples, for training and evaluating models on what a rig really delivers.

LSL over a loaded network loses single samples and, when a buffer overflows, runs of them. A
:class:`DropModel` draws which nominal frames of a window never arrived: independent losses at
``random_rate`` plus bursts that lose ``burst_rate`` of the frames on average.
:class:`DroppedWindows` turns a :class:`models.data.SessionWindows` into batches as the daemon
would feed them under a missing-frame policy:

- ``fill="irregular"``: the last 16 frames received, with their times (``past_times``), for
  models that take irregular input (the scheduler's ``irregular`` policy);
- ``fill="hold"``: the 16 nominal frames, each missing one holding the last frame received
  before it, at regular times (the scheduler's ``hold`` policy, what the ingestor writes).

The future is always the true next 16 nominal frames. Drops are drawn from a generator seeded
by (seed, window index), so a window always has the same drops: a resumed run and a repeated
evaluation see identical data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from models.data import FUTURE_FRAMES, PAST_FRAMES, Normalisation, SessionWindows
from models.objective import Batch, regular_times
from service.core.checks import check_choice, check_int, check_range

FILLS = ("irregular", "hold")


@dataclass(frozen=True)
class DropModel:
    """How frames go missing.

    Attributes
    ----------
    random_rate
        Probability that any one frame is lost, independently of the others.
    burst_rate
        Expected fraction of frames lost in bursts.
    burst_frames
        Shortest and longest burst (frames), drawn uniformly.
    """

    random_rate: float = 0.0
    burst_rate: float = 0.0
    burst_frames: tuple[int, int] = (3, 8)

    def __post_init__(self) -> None:
        check_range("random_rate", self.random_rate, 0.0, 0.9)
        check_range("burst_rate", self.burst_rate, 0.0, 0.9)
        low, high = self.burst_frames
        check_int("burst_frames[0]", low, 1)
        check_int("burst_frames[1]", high, low)

    def received(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """(n,) bool: True where the frame arrived."""
        arrived = rng.random(n) >= self.random_rate
        if self.burst_rate > 0:
            low, high = self.burst_frames
            bursts = rng.poisson(self.burst_rate * n / ((low + high) / 2))
            for _ in range(bursts):
                length = int(rng.integers(low, high + 1))
                start = int(rng.integers(-length + 1, n))
                arrived[max(start, 0) : start + length] = False
        return arrived


class DroppedWindows(torch.utils.data.Dataset):
    """Windows of ``windows`` with frames dropped by ``drops``, as :class:`Batch` items.

    ``windows`` must have ``extra_past`` frames before each past (``SessionWindows(...,
    extra_past=k)``): the received frames are looked for that far back. Where even that
    reach holds fewer than 16 received frames, the oldest dropped ones are restored (the
    daemon would refuse such a window; here it keeps every window usable).
    """

    def __init__(
        self, windows: SessionWindows, drops: DropModel, *, fill: str = "irregular", seed: int = 0
    ) -> None:
        check_choice("fill", fill, FILLS)
        if windows.extra_past < 1:
            raise ValueError(
                "'windows' must have extra_past >= 1 (SessionWindows(..., extra_past=k)) so "
                "dropped frames can be replaced by earlier received ones"
            )
        self.windows = windows
        self.drops = drops
        self.fill = fill
        self.seed = seed

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def normalisation(self) -> Normalisation:
        return self.windows.normalisation

    @property
    def provenance(self) -> dict[str, Any]:
        """The windows' provenance, plus the drops and the fill."""
        return {**self.windows.provenance, "drops": {**asdict(self.drops), "fill": self.fill}}

    def __getitem__(self, index: int) -> Batch:
        frames = self.windows.span(index)
        nominal = frames.shape[0] - FUTURE_FRAMES  # extra past + past
        future = frames[nominal:]
        arrived = self.received(index)
        if self.fill == "hold":
            # Each frame is the newest received frame at or before it (the first always is).
            latest = np.maximum.accumulate(np.where(arrived, np.arange(nominal), 0))
            past = frames[torch.from_numpy(latest[-PAST_FRAMES:])]
            return Batch(past, future, regular_times(1, PAST_FRAMES)[0])
        chosen = np.flatnonzero(arrived)[-PAST_FRAMES:]
        times = torch.from_numpy((chosen - (nominal - 1)).astype(np.float32))
        return Batch(frames[torch.from_numpy(chosen)], future, times)

    def received(self, index: int) -> np.ndarray:
        """(extra_past + 16,) bool: which nominal frames of window ``index`` arrived.

        The oldest frame always arrives (something to hold), and where fewer than 16 arrived
        the oldest lost ones are restored.
        """
        n = self.windows.extra_past + PAST_FRAMES
        rng = np.random.default_rng((self.seed, index % len(self)))
        arrived = self.drops.received(n, rng)
        arrived[0] = True
        lost = np.flatnonzero(~arrived)
        shortfall = PAST_FRAMES - int(arrived.sum())
        if shortfall > 0:
            arrived[lost[:shortfall]] = True
        return arrived
