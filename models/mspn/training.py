"""What training is specific to MSPN (paper 001): the long-term rollout loss and the
tolerance-controlled least-squares adversarial game of Algorithm 2.

The generator always rolls out its own predictions after the observed frames (Fig. 5), so
training sees exactly what inference does; the loss compares every level's prediction at every
step with the true frame. The shared loop (``models.training``) builds this with
:func:`mspn_objective` and calls :meth:`MSPNTraining.step` once per batch.

The adversarial weight is the paper's 100 (Table I) unless
``ObjectiveSettings.adversarial_weight`` says otherwise.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from models.mspn.discriminator import FrameDiscriminator
from models.mspn.losses import (
    discriminator_ahead,
    discriminator_loss,
    generator_adversarial_loss,
    generator_close,
    level_targets,
    pixel_loss,
)
from models.mspn.model import MSPN
from models.objective import Batch, ObjectiveSettings

GENERATOR_LR = 1e-3
"""Adam learning rate of the generator (Table I)."""
DISCRIMINATOR_LR = 1e-7
"""Adam learning rate of the discriminator: the top of Table I's 1e-7 to 1e-9 range."""
MAX_PHASE_UPDATES = 5
"""Cap on the updates of one phase of Algorithm 2 on one batch.

The paper loops until the tolerance rule holds; with a discriminator learning at 1e-7 that can
take arbitrarily long, so each phase stops after this many updates and the next batch goes on.
"""


PAPER_ADVERSARIAL_WEIGHT = 100.0
"""λ of the adversarial term in Table I of paper 001."""


class MSPNTraining:
    """Optimisers, the optional discriminator and one training iteration of an MSPN generator.

    Parameters
    ----------
    generator
        The generator, possibly wrapped in ``DistributedDataParallel``.
    adversarial_weight
        lambda of eq. 8, or None to train on the pixel loss alone.
    device
        Where the discriminator lives.
    distributed
        Wrap the discriminator in ``DistributedDataParallel`` and agree on the tolerance rule
        across ranks.
    """

    def __init__(
        self,
        generator: nn.Module,
        adversarial_weight: float | None,
        *,
        device: torch.device,
        distributed: bool = False,
        learning_rate: float = GENERATOR_LR,
    ) -> None:
        self.generator = generator
        self.model: MSPN = (
            generator.module if isinstance(generator, DistributedDataParallel) else generator
        )
        self.adversarial_weight = adversarial_weight
        self.distributed = distributed
        self.g_optimizer = torch.optim.Adam(generator.parameters(), lr=learning_rate)
        self.discriminator = (
            FrameDiscriminator().to(device) if adversarial_weight is not None else None
        )
        self._d_parallel = (
            DistributedDataParallel(self.discriminator)
            if distributed and self.discriminator is not None
            else self.discriminator
        )
        self.d_optimizer = (
            torch.optim.Adam(self.discriminator.parameters(), lr=DISCRIMINATOR_LR)
            if self.discriminator is not None
            else None
        )

    def step(self, batch: Batch, iteration: int) -> dict[str, float]:
        """Pixel loss only: one generator update. Adversarial: one round of Algorithm 2 on
        this batch, a discriminator phase then a generator phase."""
        self.generator.train()
        truth = torch.cat([batch.past, batch.future], dim=1)
        targets = level_targets(truth, self.model.sizes)
        if self.discriminator is None:
            logs, _ = self._generator_update(batch.past, targets)
            return logs
        logs = self._discriminator_phase(batch)
        logs.update(self._generator_phase(batch, targets))
        return logs

    def _generator_update(
        self, past: Tensor, targets: list[Tensor]
    ) -> tuple[dict[str, float], Tensor | None]:
        """One Adam step on eq. 8; returns the logs and the mean score of the predicted frames
        (None without a discriminator)."""
        output = self.generator(past)
        pixel = pixel_loss(output.levels, targets)
        future = output.levels[0][:, self.model.config.past_frames :]
        true_future = targets[0][:, self.model.config.past_frames :]
        logs = {
            "pixel": float(pixel.detach()),
            "future_mse": float((future.detach() - true_future).square().mean()),
        }
        total, fake = pixel, None
        if self.discriminator is not None:
            # The unwrapped discriminator: this pass only carries gradient to the generator.
            fake_scores = self.discriminator(future)
            adversarial = generator_adversarial_loss(fake_scores)
            total = pixel + self.adversarial_weight * adversarial
            logs["adversarial"] = float(adversarial.detach())
            fake = fake_scores.detach().mean()
        self.g_optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.g_optimizer.step()
        logs["loss"] = float(total.detach())
        return logs, fake

    def _discriminator_phase(self, batch: Batch) -> dict[str, float]:
        """Algorithm 2, lines 4-12: update until the scores before an update already had
        the discriminator ahead (``discriminator_ahead``), at most ``MAX_PHASE_UPDATES``."""
        with torch.no_grad():  # the generator is fixed during this phase
            fake = self.model(batch.past).levels[0][:, self.model.config.past_frames :]
        both = torch.cat([batch.future, fake])
        updates = 0
        while updates < MAX_PHASE_UPDATES:
            updates += 1
            # One forward over real and fake together: DDP expects one forward per backward.
            real_scores, fake_scores = self._d_parallel(both).chunk(2)
            loss = discriminator_loss(real_scores, fake_scores)
            self.d_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.d_optimizer.step()
            real, fake_mean = self._agreed(real_scores.mean(), fake_scores.mean())
            if discriminator_ahead(real, fake_mean):
                break
        return {"d_loss": float(loss.detach()), "d_updates": float(updates)}

    def _generator_phase(self, batch: Batch, targets: list[Tensor]) -> dict[str, float]:
        """Algorithm 2, lines 14-23: update until the predicted frames score close to the
        true ones (``generator_close``), at most ``MAX_PHASE_UPDATES``."""
        with torch.no_grad():  # the discriminator is fixed during this phase
            real = self.discriminator(batch.future).mean()
        updates = 0
        while updates < MAX_PHASE_UPDATES:
            updates += 1
            logs, fake = self._generator_update(batch.past, targets)
            real_mean, fake_mean = self._agreed(real, fake)
            if generator_close(real_mean, fake_mean):
                break
        return {
            **logs,
            "real_score": real_mean,
            "fake_score": fake_mean,
            "g_updates": float(updates),
        }

    def _agreed(self, real: Tensor, fake: Tensor) -> tuple[float, float]:
        """Mean scores averaged over ranks, so every rank leaves a phase after the same update
        (DDP needs the same number of backward passes on every rank)."""
        scores = torch.stack([real, fake]).detach()
        if self.distributed:
            dist.all_reduce(scores)
            scores = scores / dist.get_world_size()
        return float(scores[0]), float(scores[1])

    def state_dict(self) -> dict[str, Any]:
        """Everything but the generator's weights (the loop saves those)."""
        state: dict[str, Any] = {"g_optimizer": self.g_optimizer.state_dict()}
        if self.discriminator is not None:
            state["discriminator"] = self.discriminator.state_dict()
            state["d_optimizer"] = self.d_optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.g_optimizer.load_state_dict(state["g_optimizer"])
        if self.discriminator is not None:
            self.discriminator.load_state_dict(state["discriminator"])
            self.d_optimizer.load_state_dict(state["d_optimizer"])


def mspn_objective(
    generator: nn.Module,
    settings: ObjectiveSettings,
    *,
    distributed: bool,
    device: torch.device,
) -> MSPNTraining:
    """The paper-001 objective for ``generator``; the discriminator (if any) on ``device``.

    ``settings.margin`` and ``total_steps`` are not used: the discriminator is least-squares,
    not energy-based, and the paper gives no learning-rate schedule.
    """
    weight = settings.adversarial_weight
    if weight is None:
        weight = PAPER_ADVERSARIAL_WEIGHT
    weight = weight if settings.adversarial else None
    rate = GENERATOR_LR if settings.learning_rate is None else settings.learning_rate
    return MSPNTraining(
        generator, weight, device=device, distributed=distributed, learning_rate=rate
    )
