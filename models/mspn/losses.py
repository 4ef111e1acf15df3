"""Paper 001's losses: the weighted pixel loss (eq. 5), the least-squares adversarial losses
of Algorithm 2, and its tolerance rule (Table I).

Pixel terms are Euclidean distances, ``||Y - Yhat||_2`` per frame and level (not squared, not
divided by the pixel count: the paper's point against MSE), summed over steps and levels and
averaged over the batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from models.mspn.blocks import resize


def level_weights(levels: int) -> list[float]:
    """``lambda_l = (L - l) / L`` with L the number of levels (Table I): 1 at the finest.

    Table I defines L as the number of levels; Algorithm 1 and eq. 5 index the top level as L,
    which would give it weight 0 and leave its prediction unsupervised except through the
    levels below. Table I's reading keeps every level a predictor: 1, 2/3, 1/3 for 3 levels.
    """
    return [(levels - level) / levels for level in range(levels)]


def time_weights(steps: int) -> list[float]:
    """``lambda_t``: 0 at the first step (predicted from zero errors, no frame yet), else 1."""
    return [0.0] + [1.0] * (steps - 1)


def level_targets(frames: Tensor, sizes: list[tuple[int, int]]) -> list[Tensor]:
    """The true frames (B, T, 1, rows, cols) resized to every level, as the model sees them."""
    flat = frames.flatten(0, 1)
    return [
        (resize(flat, size) if level else flat).unflatten(0, frames.shape[:2])
        for level, size in enumerate(sizes)
    ]


def pixel_loss(predictions: list[Tensor], targets: list[Tensor]) -> Tensor:
    """Eq. 5: ``sum_t sum_l lambda_t lambda_l ||Y^l_t - Yhat^l_t||_2``, batch mean.

    ``predictions`` and ``targets`` hold one (B, T, 1, rows_l, cols_l) tensor per level, finest
    first. The step with ``lambda_t = 0`` is left out rather than multiplied by zero.
    """
    total = predictions[0].new_zeros(())
    for weight, prediction, target in zip(
        level_weights(len(predictions)), predictions, targets, strict=True
    ):
        distances = torch.linalg.vector_norm((prediction - target).flatten(2), dim=2)
        time = distances.new_tensor(time_weights(distances.shape[1]))
        total = total + weight * (distances * time).sum(dim=1).mean()
    return total


def discriminator_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """Algorithm 2, line 7: ``(Rs - 1)^2 + (Ps + 1)^2``, means over the scored frames."""
    return (real_scores - 1).square().mean() + (fake_scores + 1).square().mean()


def generator_adversarial_loss(fake_scores: Tensor) -> Tensor:
    """Algorithm 2, line 17: ``(Ps - 1)^2``, mean over the scored frames."""
    return (fake_scores - 1).square().mean()


def discriminator_ahead(real: float, fake: float) -> bool:
    """Line 9: the discriminator phase ends once ``Ps < Rs - c1``, ``c1 = |Rs| / 100``."""
    return fake < real - abs(real) / 100


def generator_close(real: float, fake: float) -> bool:
    """Line 20: the generator phase ends once ``Ps > Rs - c2``, ``c2 = |Rs| / 50``.

    As ``c1 < c2``, alternating the two phases keeps ``Rs - c2 < Ps < Rs - c1`` in the steady
    state: the discriminator stays slightly ahead of the generator.
    """
    return fake > real - abs(real) / 50
