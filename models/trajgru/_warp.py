"""Bilinear warping of a state along flow fields: the ``warp`` of TrajGRU (eq. 3.3).

The two ``grid_sample`` settings the thesis leaves open are pinned here, because ONNX
``GridSample`` (opset >= 16) must reproduce them exactly:

- ``align_corners=True``: normalised coordinates -1 and +1 are the centres of the corner
  pixels, so an integer flow lands exactly on pixel centres (a one-pixel flow is an exact
  one-pixel shift, no blur).
- ``padding_mode="zeros"``: whatever flows in from outside the grid is 0, the mean of
  normalised data and the value of the padded rows; ``"border"`` would smear edge electrodes.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional

ALIGN_CORNERS = True
PADDING_MODE = "zeros"


def warp(state: Tensor, flow: Tensor) -> Tensor:
    """``state`` (B, C, H, W) sampled along each of L flows (B, L, 2, H, W), in pixels.

    Flow channel 0 moves along columns (x), channel 1 along rows (y): output pixel (i, j) of
    link l reads ``state`` at (i + flow[l, 1, i, j], j + flow[l, 0, i, j]). Returns
    (B, L * C, H, W), link-major, ready for the 1x1 convolution that combines the links.
    """
    _, channels, height, width = state.shape
    links = flow.shape[1]
    rows = torch.linspace(-1.0, 1.0, height, dtype=state.dtype, device=state.device)
    cols = torch.linspace(-1.0, 1.0, width, dtype=state.dtype, device=state.device)
    base = torch.stack(torch.meshgrid(cols, rows, indexing="xy"), dim=-1)  # (H, W, 2): x, y
    pixel = torch.tensor(
        [2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)], dtype=state.dtype, device=state.device
    )
    grid = base + flow.permute(0, 1, 3, 4, 2) * pixel  # (B, L, H, W, 2)
    # The batch is left to -1 in every reshape, and the expanded copy made contiguous (the
    # exporter writes a non-contiguous reshape's traced sizes): a batch-1 export then runs
    # batched (models.batch_graph).
    repeated = state.unsqueeze(1).expand(-1, links, -1, -1, -1).contiguous()
    warped = functional.grid_sample(
        repeated.reshape(-1, channels, height, width),
        grid.reshape(-1, height, width, 2),
        mode="bilinear",
        padding_mode=PADDING_MODE,
        align_corners=ALIGN_CORNERS,
    )
    return warped.reshape(-1, links * channels, height, width)
