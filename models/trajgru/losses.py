"""The thesis' training loss (eq. 5.1): MSE + MAE + 0.05 (1 - SSIM), with a differentiable
SSIM (the scores' SSIM, ``service.core.scores.ssim``, is numpy and has no gradient),
with the scores' R (``DATA_RANGE``)."""

from __future__ import annotations

from torch import Tensor
from torch.nn import functional

from service.core.scores import DATA_RANGE, SSIM_WIN_SIZE

SSIM_WEIGHT = 0.05
"""c of eq. 5.1 (a = b = 1)."""
_C1, _C2 = (0.01 * DATA_RANGE) ** 2, (0.03 * DATA_RANGE) ** 2


def ssim(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean SSIM over frames of (..., H, W) tensors: the same uniform ``SSIM_WIN_SIZE`` window
    and valid interior as the evaluation, with population (not sample) variances."""
    x = prediction.reshape(-1, 1, *prediction.shape[-2:])
    y = target.reshape(-1, 1, *target.shape[-2:])

    def local_mean(z: Tensor) -> Tensor:
        return functional.avg_pool2d(z, SSIM_WIN_SIZE, stride=1)

    mu_x, mu_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mu_x.square()
    var_y = local_mean(y * y) - mu_y.square()
    cov = local_mean(x * y) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + _C1) * (2 * cov + _C2)
    denominator = (mu_x.square() + mu_y.square() + _C1) * (var_x + var_y + _C2)
    return (numerator / denominator).mean()


def trajgru_loss(prediction: Tensor, target: Tensor) -> tuple[Tensor, dict[str, float]]:
    """Eq. 5.1 and its parts (for the log)."""
    mse = functional.mse_loss(prediction, target)
    mae = functional.l1_loss(prediction, target)
    similarity = ssim(prediction, target)
    total = mse + mae + SSIM_WEIGHT * (1.0 - similarity)
    parts = {"mse": float(mse.detach()), "mae": float(mae.detach())}
    parts["ssim"] = float(similarity.detach())
    return total, parts
