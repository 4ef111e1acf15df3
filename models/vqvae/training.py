"""What training is specific to S-HR-VQVAE (paper 002): joint or disjoint (section 4.4).

Joint (eq. 9, the paper's better variant, the default): every step minimises eq. 4-5 on all
frames (reconstruction, codebook, commitment), eq. 7 for both PixelCNN heads on every next
frame, and ``JOINT_WEIGHT`` times the error of the future decoded from predicted indices.
Disjoint: the first half of the steps train the HR-VQVAE alone (eq. 4-5), the second half the
ST-PixelCNN alone (eq. 7) on the codes of the now frozen codec. Dead words are re-seeded after
each update that moves the codebooks (``HierarchicalQuantiser.restart_dead``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from models.objective import Batch, ObjectiveSettings
from models.vqvae.losses import JOINT_WEIGHT, codebook_loss, prediction_loss
from models.vqvae.model import SHRVQVAE

LEARNING_RATE = 3e-4
"""Adam learning rate of every part (paper 002, section 5)."""


class VQVAETraining:
    """The optimiser and one joint update of an S-HR-VQVAE (possibly DDP-wrapped)."""

    def __init__(
        self,
        generator: nn.Module,
        *,
        learning_rate: float,
        total_steps: int,
        distributed: bool = False,
    ) -> None:
        self.generator = generator
        self.model: SHRVQVAE = (
            generator.module if isinstance(generator, DistributedDataParallel) else generator
        )
        self.distributed = distributed
        self.total_steps = total_steps
        self.optimizer = torch.optim.Adam(generator.parameters(), lr=learning_rate)

    def phase(self, iteration: int) -> str:
        """``"joint"``, or for the disjoint schedule ``"codec"`` then ``"pixelcnn"``."""
        if self.model.config.schedule == "joint":
            return "joint"
        return "codec" if iteration < self.total_steps // 2 else "pixelcnn"

    def step(self, batch: Batch, iteration: int) -> dict[str, float]:
        """One Adam step on this phase's loss, then the dead-word restart if codes moved.

        Every term is logged in every phase; only the phase's own terms are optimised. The
        PixelCNN's cross-entropies reach no codec weight (its inputs and targets are indices),
        so the pixelcnn phase leaves the codec exactly as the codec phase left it.
        """
        phase = self.phase(iteration)
        self.generator.train()
        frames = torch.cat([batch.past, batch.future], dim=1)
        out = self.generator(frames)
        terms = {
            "reconstruction": (out.reconstruction - frames).square().mean(),
            "codebook": codebook_loss(out.latents, out.quantised, self.model.config.beta),
            "raster_ce": prediction_loss(out.raster_logits, out.targets),
            "parallel_ce": prediction_loss(out.parallel_logits, out.targets),
            "joint": (out.prediction - batch.future).square().mean(),
        }
        codec = terms["reconstruction"] + terms["codebook"]
        pixelcnn = terms["raster_ce"] + terms["parallel_ce"]
        loss = {
            "joint": codec + pixelcnn + JOINT_WEIGHT * terms["joint"],
            "codec": codec,
            "pixelcnn": pixelcnn,
        }[phase]
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        restarted = 0
        if phase != "pixelcnn":
            restarted = self.model.quantiser.restart_dead(out.quantised)
            if self.distributed:  # restarts draw from each rank's own batch: keep rank 0's
                for table in self.model.quantiser.tables:
                    dist.broadcast(table.data, 0)
        logs = {name: float(value.detach()) for name, value in terms.items()}
        return {**logs, "restarted": float(restarted), "loss": float(loss.detach())}

    def state_dict(self) -> dict[str, Any]:
        """The optimiser (usage counters are generator buffers, saved with its weights)."""
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


def vqvae_objective(
    generator: nn.Module,
    settings: ObjectiveSettings,
    *,
    distributed: bool,
    device: torch.device,
) -> VQVAETraining:
    """The paper-002 objective; no adversarial term, no auxiliary network. ``total_steps``
    places the disjoint schedule's switch from codec to PixelCNN."""
    rate = LEARNING_RATE if settings.learning_rate is None else settings.learning_rate
    return VQVAETraining(
        generator, learning_rate=rate, total_steps=settings.total_steps, distributed=distributed
    )
