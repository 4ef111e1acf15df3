"""What a model family's training objective looks like to the one training loop.

Each family brings its own losses and optimisers (paper 000: reconstruction + prediction +
energy-based adversarial; others their own) behind this protocol, so ``models.training`` keeps
one loop for data, distribution, checkpoints and progress.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor

from models import windows


class Batch(NamedTuple):
    """One training batch, in model units.

    Attributes
    ----------
    past
        (B, P, 1, rows, cols) the last P frames actually received, oldest first.
    future
        (B, F, 1, rows, cols) the F nominal frames after the newest nominal frame.
    past_times
        (B, P) float32: each past frame's time in frame periods relative to the newest nominal
        frame, so <= 0 and increasing; ``-(P-1), ..., 0`` when nothing was dropped. Families
        that take irregular input read it; the others ignore it.
    """

    past: Tensor
    future: Tensor
    past_times: Tensor

    def to(self, device: torch.device) -> Batch:
        return Batch(*(t.to(device, non_blocking=True) for t in self))


def regular_times(batch_size: int, past_frames: int) -> Tensor:
    """(B, P) past times of a window with nothing dropped: ``-(P-1), ..., 0``
    (:func:`models.windows.regular_times` as a tensor)."""
    return torch.from_numpy(windows.regular_times(batch_size, past_frames))


def as_batch(items: Any) -> Batch:
    """A DataLoader batch as :class:`Batch`: ``(past, future)`` pairs get regular times."""
    if isinstance(items, Batch):
        return items
    if len(items) == 3:
        return Batch(*items)
    past, future = items
    return Batch(past, future, regular_times(past.shape[0], past.shape[1]))


@dataclass(frozen=True)
class ObjectiveSettings:
    """The run-level choices every objective receives (``models.training.RunConfig``).

    Attributes
    ----------
    total_steps
        Iterations of the whole run (learning-rate schedules depend on it).
    adversarial
        Whether the family's adversarial term (if it has one) is on.
    adversarial_weight, margin
        Its weight (None: the value of the family's paper) and the margin of an energy-based
        discriminator; families without them ignore them.
    learning_rate
        The generator's Adam learning rate; None is the family's paper's. Short CPU runs of
        families whose papers train for days at a small rate need a larger one.
    """

    total_steps: int
    adversarial: bool = True
    adversarial_weight: float | None = None
    margin: float = 0.1
    learning_rate: float | None = None


class Objective(Protocol):
    """Optimisers, auxiliary networks and one update of a family's generator."""

    def step(self, batch: Batch, iteration: int) -> dict[str, float]:
        """One update; returns the losses to log, including ``"loss"`` (the generator's
        total, shown on the progress bar)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything but the generator's weights (optimisers, discriminators, schedules)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class ObjectiveFactory(Protocol):
    def __call__(
        self,
        generator: torch.nn.Module,
        settings: ObjectiveSettings,
        *,
        distributed: bool,
        device: torch.device,
    ) -> Objective:
        """The objective for ``generator`` (possibly DDP-wrapped); auxiliary networks it
        creates live on ``device`` (and are DDP-wrapped when ``distributed``)."""
        ...
