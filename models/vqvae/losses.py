"""The losses of paper 002: eq. 4-5 (hierarchical codebook and commitment terms), eq. 7 (the
PixelCNN's cross entropy) and eq. 9's weight. Squared norms are means over elements."""

from __future__ import annotations

import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from models.vqvae.quantizer import Quantised

JOINT_WEIGHT = 0.11
"""lambda of eq. 9: weight of the decoder's error on frames decoded from predicted indices."""


def codebook_loss(z: Tensor, quantised: Quantised, beta: float) -> Tensor:
    """Eq. 4's terms on e_C plus eq. 5 at every level: words move to the (stopped) residual
    they code, the encoder commits to the (stopped) words with weight ``beta``."""
    combined = sum(quantised.words)
    loss = _vq_terms(z, combined, beta)
    for word, residual in zip(quantised.words, quantised.residuals, strict=True):
        loss = loss + _vq_terms(residual, word, beta)
    return loss


def _vq_terms(target: Tensor, word: Tensor, beta: float) -> Tensor:
    return (target.detach() - word).square().mean() + beta * (
        word.detach() - target
    ).square().mean()


def prediction_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Eq. 7: cross entropy of (N, leaves, h, w) logits against (N, h, w) true leaves."""
    return F.cross_entropy(logits, targets)
