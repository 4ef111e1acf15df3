"""What training is specific to the paper-000 generators: per-scale losses (eq. 1 and 5),
energy-based discriminators, and the optimisers and schedules of section IV.B.

The shared loop (``models.training``) builds it with :func:`convlstm_objective` and calls
:meth:`ConvLSTMTraining.step` once per batch (``models.objective.Objective``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from models.convlstm.blocks import downsample_time
from models.convlstm.discriminator import EnergyDiscriminator, reconstruction_energy
from models.convlstm.losses import (
    GRAD_CLIP_NORM,
    LEARNING_RATE,
    AdversarialSchedule,
    discriminator_loss,
    generator_loss,
)
from models.convlstm.model import GeneratorOutput
from models.objective import Batch, ObjectiveSettings

PAPER_ADVERSARIAL_WEIGHT = 0.1
"""λ_adv of paper 000."""


@dataclass(frozen=True)
class AdversarialSettings:
    """Adversarial part of the objective.

    Attributes
    ----------
    enabled
        False trains with L_rec + L_pred only (the paper's "L2 only" rows).
    weight
        λ_adv (0.1 in the paper).
    margin
        EBGAN hinge margin m of the discriminator loss (the paper gives none; models.md
        [decided]). Energies are mean squared reconstruction errors of normalised sequences,
        whose variance is about 1/16 (4-sigma scaling), so 0.1 sits above a blank reconstruction.
    """

    enabled: bool = True
    weight: float = PAPER_ADVERSARIAL_WEIGHT
    margin: float = 0.1


def _scales(output: GeneratorOutput, past: Tensor, future: Tensor) -> list[tuple]:
    """(output, past, future) per temporal scale: scale 0, then scale 1 of the MR-LSTM."""
    scales = [(output, past, future)]
    if output.coarse is not None:
        scales.append((output.coarse, downsample_time(past), downsample_time(future)))
    return scales


class ConvLSTMTraining:
    """Optimisers, discriminators and one training iteration for a paper-000 generator.

    Parameters
    ----------
    generator
        The generator, possibly wrapped in ``DistributedDataParallel``.
    total_steps
        Iterations of the whole run: the learning rate drops tenfold at half.
    adversarial
        See :class:`AdversarialSettings`.
    distributed
        Wrap the discriminators in ``DistributedDataParallel`` too.
    """

    def __init__(
        self,
        generator: nn.Module,
        total_steps: int,
        adversarial: AdversarialSettings,
        *,
        distributed: bool = False,
        learning_rate: float = LEARNING_RATE,
    ) -> None:
        self.generator = generator
        self.adversarial = adversarial
        self.schedule = AdversarialSchedule(total_steps)
        self.g_optimizer = torch.optim.Adam(generator.parameters(), lr=learning_rate)
        self.g_scheduler = self.schedule.lr_scheduler(self.g_optimizer)
        self.discriminators = nn.ModuleList()
        if adversarial.enabled:
            depths = [3, 2] if _has_coarse_scale(generator) else [3]
            self.discriminators.extend(EnergyDiscriminator(depth=d) for d in depths)
        self._d_parallel = [
            DistributedDataParallel(d) if distributed else d for d in self.discriminators
        ]
        self.d_optimizer = (
            torch.optim.Adam(self.discriminators.parameters(), lr=learning_rate)
            if adversarial.enabled
            else None
        )
        self.d_scheduler = (
            self.schedule.lr_scheduler(self.d_optimizer) if self.d_optimizer else None
        )

    def step(self, batch: Batch, iteration: int) -> dict[str, float]:
        """One generator update (and a discriminator update every second iteration)."""
        past, future = batch.past, batch.future
        self.generator.train()
        output = self.generator(past)
        scales = _scales(output, past, future)
        g_total = past.new_zeros(())
        logs: dict[str, float] = {}
        for k, (out, true_past, true_future) in enumerate(scales):
            fake_energy = (
                # The unwrapped module: this pass only carries gradient back to the generator.
                self.discriminators[k].energy(torch.cat([true_past, out.prediction], dim=1))
                if self.adversarial.enabled
                else past.new_zeros(past.shape[0])
            )
            total, parts = generator_loss(
                out.reconstruction,
                true_past,
                out.prediction,
                true_future,
                fake_energy,
                adv_weight=self.adversarial.weight if self.adversarial.enabled else 0.0,
            )
            g_total = g_total + total
            logs.update({f"s{k}_{name}": float(value) for name, value in parts.items()})
        self.g_optimizer.zero_grad(set_to_none=True)
        g_total.backward()
        torch.nn.utils.clip_grad_norm_(self.generator.parameters(), GRAD_CLIP_NORM)
        self.g_optimizer.step()
        logs["g_total"] = logs["loss"] = float(g_total.detach())

        if self.adversarial.enabled and self.schedule.updates_discriminator(iteration):
            logs.update(self._discriminator_step(scales))
        self.g_scheduler.step()
        if self.d_scheduler is not None:
            self.d_scheduler.step()
        return logs

    def _discriminator_step(self, scales: list[tuple]) -> dict[str, float]:
        self.d_optimizer.zero_grad(set_to_none=True)
        logs = {}
        d_total = None
        for k, (out, true_past, true_future) in enumerate(scales):
            real = torch.cat([true_past, true_future], dim=1)
            fake = torch.cat([true_past, out.prediction.detach()], dim=1)
            # One forward over real and fake together: DDP expects one forward per backward,
            # and both halves share BatchNorm statistics, so neither is told apart by them.
            both = torch.cat([real, fake])
            real_energy, fake_energy = reconstruction_energy(self._d_parallel[k](both), both).chunk(
                2
            )
            total, parts = discriminator_loss(
                real_energy, fake_energy, margin=self.adversarial.margin
            )
            d_total = total if d_total is None else d_total + total
            logs.update({f"d{k}_{name}": float(value) for name, value in parts.items()})
        d_total.backward()
        self.d_optimizer.step()
        return logs

    def state_dict(self) -> dict[str, Any]:
        """Everything but the generator's weights (the loop saves those)."""
        state = {
            "g_optimizer": self.g_optimizer.state_dict(),
            "g_scheduler": self.g_scheduler.state_dict(),
            "discriminators": self.discriminators.state_dict(),
        }
        if self.d_optimizer is not None:
            state["d_optimizer"] = self.d_optimizer.state_dict()
            state["d_scheduler"] = self.d_scheduler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.g_optimizer.load_state_dict(state["g_optimizer"])
        self.g_scheduler.load_state_dict(state["g_scheduler"])
        self.discriminators.load_state_dict(state["discriminators"])
        if self.d_optimizer is not None:
            self.d_optimizer.load_state_dict(state["d_optimizer"])
            self.d_scheduler.load_state_dict(state["d_scheduler"])


def _has_coarse_scale(generator: nn.Module) -> bool:
    module = generator.module if isinstance(generator, DistributedDataParallel) else generator
    return hasattr(module, "coarse")


def convlstm_objective(
    generator: nn.Module,
    settings: ObjectiveSettings,
    *,
    distributed: bool,
    device: torch.device,
) -> ConvLSTMTraining:
    """The paper-000 objective for ``generator``, discriminators on ``device``."""
    training = ConvLSTMTraining(
        generator,
        settings.total_steps,
        AdversarialSettings(
            settings.adversarial,
            PAPER_ADVERSARIAL_WEIGHT
            if settings.adversarial_weight is None
            else settings.adversarial_weight,
            settings.margin,
        ),
        distributed=distributed,
        learning_rate=LEARNING_RATE if settings.learning_rate is None else settings.learning_rate,
    )
    training.discriminators.to(device)
    return training
