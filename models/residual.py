"""Residual parameterisation: a network predicts the departure from the last measured frame.

One switch, ``residual`` in every family's config (default False, so configs, checkpoints and
ONNX files written before it load as absolute models). Where it is on, the family's output
goes through :func:`add_to_last`, inside ``predict`` and so inside every exported graph: the
daemon serves the sum and needs no change. A network whose output is near zero (untrained, or
unsure) then predicts persistence instead of the training mean.

Output bounds. The ConvLSTM heads end in tanh, sized for frames in (-1, 1) (normalised units).
A departure between two such frames spans (-2, 2), so a bounded head's departure is
``RESIDUAL_SPAN * tanh``: every frame in range stays reachable from every last frame, and no
clamp on the sum cuts the gradient. Families with a linear output (TrajGRU, MSPN) add the
departure unbounded. The layer that makes the departure starts at zero
(:func:`start_at_persistence`), so an untrained residual model is exactly persistence. ILE
and S-HR-VQVAE have no such layer: ILE holds the last embedding and predicts departures in
embedding space (``models.ile.model``), S-HR-VQVAE adds the decoded change of codes to the
last frame (``models.vqvae.model``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

RESIDUAL_SPAN = 2.0
"""Range of a tanh-bounded departure: the distance between two frames in (-1, 1)."""


def add_to_last(last: Tensor, departure: Tensor) -> Tensor:
    """Frames from their departure from ``last``.

    ``last`` is (B, C, H, W) (one frame) and ``departure`` either (B, C, H, W) or
    (B, T, C, H, W) (a future, every frame measured from the same last frame).
    """
    if departure.dim() == last.dim() + 1:
        return last.unsqueeze(1) + departure
    return last + departure


def start_at_persistence(layer: nn.Module) -> None:
    """Zero the parameters of the layer that outputs the departure: the untrained model
    predicts persistence, and the layer's weights still get a gradient (its input times the
    error) from the first step, as in zero-initialised residual branches."""
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.zero_()
