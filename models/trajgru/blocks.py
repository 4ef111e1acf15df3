"""The connection blocks of the encoder-forecaster: resampling, zigzag shortcut, output head.

Levels 1..3 run at full, half and quarter resolution of the padded grid (20x20, 10x10, 5x5 for
18x20 padded to 20x20). The encoder's first down-sampling block has stride 1 ([decided]: the
grid is already small), the other two stride 2; the forecaster's up-sampling blocks are 4x4
stride-2 deconvolutions, each followed by a LeakyReLU (section 4.2.3.3).
"""

from __future__ import annotations

from torch import Tensor, nn, sigmoid

from models.trajgru.cell import LEAK

LEVEL_STRIDES = (1, 2, 2)
"""Stride of the down-sampling block in front of encoder level 1, 2, 3."""
ZIGZAG_SCALE = 4
"""Resolution ratio between level 1 and level 3: the zigzag's (de)convolution stride."""


class Downsample(nn.Sequential):
    """conv3x3 (stride 1 or 2) + LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
            nn.LeakyReLU(LEAK),
        )


class Upsample(nn.Sequential):
    """deconv4x4 stride 2 (doubles height and width) + LeakyReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1),
            nn.LeakyReLU(LEAK),
        )


class Zigzag(nn.Module):
    """The shortcut between the top and bottom layers (eqs. 4.1 and 4.2).

    H_zz = LeakyReLU(W_resample * H_source); Z = sigmoid(W_h * H_target + W_zz * H_zz);
    H_target_new = H_target + Z * H_zz. ``upward=False`` (encoder, eq. 4.1): the top state
    (level 3) is up-sampled into the bottom (level 1); ``upward=True`` (forecaster, eq. 4.2):
    the bottom state is down-sampled into the top. The layer that is computed first in a time
    step is the target, so the shortcut carries state into the NEXT step (as PredRNN's zigzag
    memory flow does) and stays causal.
    """

    def __init__(self, source_channels: int, target_channels: int, upward: bool) -> None:
        super().__init__()
        resample = nn.Conv2d if upward else nn.ConvTranspose2d
        self.resample = resample(source_channels, target_channels, ZIGZAG_SCALE, ZIGZAG_SCALE)
        self.w_h = nn.Conv2d(target_channels, target_channels, 3, padding=1)
        self.w_zz = nn.Conv2d(target_channels, target_channels, 3, padding=1, bias=False)

    def forward(self, source: Tensor, target: Tensor) -> Tensor:
        shortcut = nn.functional.leaky_relu(self.resample(source), LEAK)
        gate = sigmoid(self.w_h(target) + self.w_zz(shortcut))
        return target + gate * shortcut


class OutputHead(nn.Sequential):
    """conv3x3 + LeakyReLU, then a linear 1x1 convolution to one channel.

    Linear, not tanh: normalised frames are not bounded by 1 and the thesis' last block is a
    plain 1x1 convolution (Table 5.1: 32 x 1 x 1 x 1).
    """

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, channels, 3, padding=1),
            nn.LeakyReLU(LEAK),
            nn.Conv2d(channels, 1, 1),
        )
