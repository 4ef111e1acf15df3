"""What training is specific to the paper-003 family: the eq.-5.1 loss and Adam at 1e-4.

The thesis clips no gradients and schedules no learning rate (it stops early), so neither
happens here. The shared loop (``models.training``) builds the objective with
:func:`trajgru_objective` and calls :meth:`TrajGRUTraining.step` once per batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from models.objective import Batch, ObjectiveSettings
from models.trajgru.losses import trajgru_loss

LEARNING_RATE = 1e-4
"""Adam's learning rate (Tables 5.1 and A.1; beta1 = 0.9, PyTorch's default)."""


class TrajGRUTraining:
    """Adam on eq. 5.1, fed the past frames with their true times.

    Parameters
    ----------
    generator
        A ``TrajGRU``, possibly wrapped in ``DistributedDataParallel`` (called, not
        ``predict``-ed, so DDP synchronises its gradients).
    """

    def __init__(self, generator: nn.Module, learning_rate: float = LEARNING_RATE) -> None:
        self.generator = generator
        self.optimizer = torch.optim.Adam(generator.parameters(), lr=learning_rate)

    def step(self, batch: Batch, iteration: int) -> dict[str, float]:
        """One update on ``batch``; ``iteration`` is unused (no schedule)."""
        self.generator.train()
        prediction = self.generator(batch.past, batch.past_times)
        loss, logs = trajgru_loss(prediction, batch.future)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        logs["loss"] = float(loss.detach())
        return logs

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


def trajgru_objective(
    generator: nn.Module,
    settings: ObjectiveSettings,
    *,
    distributed: bool,
    device: torch.device,
) -> TrajGRUTraining:
    """The paper-003 objective; it has no adversary, so the adversarial settings, the
    distribution flag and the device (no auxiliary networks) do not apply."""
    rate = LEARNING_RATE if settings.learning_rate is None else settings.learning_rate
    return TrajGRUTraining(generator, rate)
