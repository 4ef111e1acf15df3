"""Paper 000's training objective: generator loss (eq. 1 / 5), EBGAN discriminator loss, and
the optimisation settings of section IV.B.

Pixel terms are per-frame means summed over frames: ``sum_t mean_pixels (x_t - y_t)^2``,
averaged over the batch. The paper writes ``||.||_2^2`` (a sum over pixels too); averaging over
pixels instead only rescales the loss by the frame size (360) and keeps the numbers readable,
while summing over frames keeps the paper's weight per frame, so late horizons count as much
as early ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, MultiStepLR

from service.core.checks import check_above, check_int, check_range

LEARNING_RATE = 1e-3
"""Adam learning rate of both the generator and the discriminator (section IV.B)."""
LR_DECAY = 0.1
"""Factor applied to the learning rate halfway through training (section IV.B)."""
GRAD_CLIP_NORM = 1e-3
"""Maximum l2 norm of the generator's gradient: the paper's value, kept as printed ("sic").

0.001 is far below any usual gradient norm, so nearly every step is clipped: the generator's
Adam sees gradients rescaled to norm 0.001. Adam's update is almost invariant to that scale, so
this equalises gradient magnitudes across steps rather than shrinking them. The paper clips the
generator only.
"""


def generator_loss(
    reconstruction: Tensor,
    past: Tensor,
    prediction: Tensor,
    future: Tensor,
    fake_energy: Tensor,
    *,
    rec_weight: float = 1.0,
    pred_weight: float = 1.0,
    adv_weight: float = 0.1,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Eq. 1: ``rec_weight * L_rec + pred_weight * L_pred + adv_weight * L_adv``.

    Parameters
    ----------
    reconstruction, past
        The decoder's output and the observed frames, (B, T, 1, H, W), both in time order (the
        generators flip their reverse-order reconstruction back).
    prediction, future
        The predictor's output and the true future, (B, T', 1, H, W).
    fake_energy
        The discriminator's energy (B,) of the true past stacked with ``prediction``; it must
        keep its graph so the adversarial gradient reaches the generator.
    rec_weight, pred_weight, adv_weight
        The paper's lambdas: 1, 1 and 0.1 (0 for the "L2 only" models).

    Returns
    -------
    total
        Scalar to back-propagate.
    parts
        Unweighted, detached ``rec``, ``pred`` and ``adv`` terms, for logging.

    Notes
    -----
    ``L_adv`` is the energy, a mean over all frames and pixels of ``Z``, while ``L_rec`` and
    ``L_pred`` sum 16 per-frame means. Read with sums everywhere, the paper's ``L_adv`` would be
    32x larger relative to the pixel terms; ``adv_weight = 0.1`` is kept as printed.
    """
    for name, weight in (("rec", rec_weight), ("pred", pred_weight), ("adv", adv_weight)):
        check_range(f"{name}_weight", weight, 0.0)
    _check_same_shape("reconstruction", reconstruction, "past", past)
    _check_same_shape("prediction", prediction, "future", future)
    parts = {
        "rec": _frame_error(reconstruction, past),
        "pred": _frame_error(prediction, future),
        "adv": fake_energy.mean(),
    }
    total = rec_weight * parts["rec"] + pred_weight * parts["pred"] + adv_weight * parts["adv"]
    return total, {name: value.detach() for name, value in parts.items()}


def discriminator_loss(
    real_energy: Tensor, fake_energy: Tensor, *, margin: float
) -> tuple[Tensor, dict[str, Tensor]]:
    """EBGAN hinge form of eq. 2: ``E(real) + max(0, margin - E(fake))``, batch means.

    The paper's ``E(real) - E(fake)`` is unbounded below: the discriminator can win by making
    fake energies arbitrarily large, and training diverges. The hinge stops pushing once a fake
    sequence's energy exceeds ``margin`` (models.md, [decided]); record the margin with the run.
    ``fake_energy`` should come from a detached prediction so this loss trains only the
    discriminator.

    Returns
    -------
    total
        Scalar to back-propagate.
    parts
        Detached ``real`` (mean real energy), ``fake`` (mean fake energy) and ``hinge``
        (mean ``max(0, margin - E(fake))``), for logging.
    """
    check_above("margin", margin, 0.0)
    hinge = torch.relu(margin - fake_energy).mean()
    real = real_energy.mean()
    parts = {"real": real, "fake": fake_energy.mean(), "hinge": hinge}
    return real + hinge, {name: value.detach() for name, value in parts.items()}


@dataclass(frozen=True)
class AdversarialSchedule:
    """When the discriminator steps and how the learning rate decays (section IV.B).

    Parameters
    ----------
    total_steps
        Training iterations; the learning rate drops by ``LR_DECAY`` after half of them.
    discriminator_every
        The discriminator updates once every this many iterations (2 in the paper).
    """

    total_steps: int
    discriminator_every: int = 2

    def __post_init__(self) -> None:
        check_int("total_steps", self.total_steps, 2)
        check_int("discriminator_every", self.discriminator_every, 1)

    def updates_discriminator(self, step: int) -> bool:
        """Whether the discriminator updates at 0-based iteration ``step``.

        It updates at 0, 2, 4, ...: first at step 0, so the generator's first adversarial
        gradient comes from a discriminator that has seen data at least once.
        """
        check_int("step", step, 0)
        return step % self.discriminator_every == 0

    def lr_scheduler(self, optimizer: Optimizer) -> LRScheduler:
        """Step decay by ``LR_DECAY`` at ``total_steps // 2`` iterations.

        Call ``step()`` on it once per training iteration, for the discriminator's optimizer too
        (even on iterations where it did not update), so both decay at the same iteration.
        """
        return MultiStepLR(optimizer, milestones=[self.total_steps // 2], gamma=LR_DECAY)


def _frame_error(output: Tensor, target: Tensor) -> Tensor:
    """Squared error averaged over each frame's pixels, summed over frames, batch mean."""
    return (output - target).square().flatten(2).mean(dim=2).sum(dim=1).mean()


def _check_same_shape(name: str, tensor: Tensor, other_name: str, other: Tensor) -> None:
    """Raise ValueError unless two (B, T, C, H, W) tensors have the same shape."""
    if tensor.ndim != 5 or tensor.shape != other.shape:
        raise ValueError(
            f"'{name}' and '{other_name}' must have the same (B, T, C, H, W) shape, "
            f"got {tuple(tensor.shape)} and {tuple(other.shape)}"
        )
