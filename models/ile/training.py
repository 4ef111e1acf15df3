"""What training is specific to ILE (paper 004): the exact negative log-likelihood of the
future frames given the past, one Adam step per batch.

The loss is eq. 2 with the gamma layer of section 2.6, divided by the number of scored values
(future frames x pixels) so its size does not depend on the window or the grid, and averaged
over the batch. There is no pixel loss; ``future_mse`` (the decoded prediction against the
true future, in model units) is logged to watch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from models.ile.model import ILE
from models.objective import Batch, ObjectiveSettings

LEARNING_RATE = 1e-3
"""Adam learning rate; the paper gives none."""


class ILETraining:
    """The optimiser and one training iteration of an ILE model (possibly DDP-wrapped)."""

    def __init__(self, generator: nn.Module, learning_rate: float = LEARNING_RATE) -> None:
        self.generator = generator
        self.model: ILE = (
            generator.module if isinstance(generator, DistributedDataParallel) else generator
        )
        self.optimizer = torch.optim.Adam(generator.parameters(), lr=learning_rate)

    def step(self, batch: Batch, iteration: int) -> dict[str, float]:
        self.generator.train()
        output = self.generator(batch.past, batch.future)
        scored = batch.future[0].numel()
        prediction = output.prediction.mean() / scored
        log_det = output.log_det.mean() / scored
        loss = prediction - log_det
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            future = self.model.decode(output.predicted.detach())
            future_mse = float((future - batch.future).square().mean())
        return {
            "loss": float(loss.detach()),
            "prediction": float(prediction.detach()),
            "log_det": float(log_det.detach()),
            "future_mse": future_mse,
        }

    def state_dict(self) -> dict[str, Any]:
        """The optimiser (the loop saves the model's weights)."""
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


def ile_objective(
    generator: nn.Module,
    settings: ObjectiveSettings,
    *,
    distributed: bool,
    device: torch.device,
) -> ILETraining:
    """The paper-004 objective; no auxiliary network, so ``distributed`` and ``device`` are
    not needed, nor the adversarial settings or ``total_steps`` (no schedule)."""
    rate = LEARNING_RATE if settings.learning_rate is None else settings.learning_rate
    return ILETraining(generator, rate)
