"""The paper's energy-based discriminator: a 3D-CNN autoencoder over a whole sequence.

The discriminator reads ``Z``, the true past stacked in time order with either the true or the
predicted future, and reconstructs it. Its energy, the reconstruction error, is low for
sequences like the ones it learned to reconstruct (true data) and pushed up for generated ones
(EBGAN). Mapping back to pixel space also shows *where* a prediction is inconsistent (the
paper's Fig. 2).
"""

from __future__ import annotations

from torch import Tensor, nn

from service.core.checks import check_int, check_range

_KERNEL = 7
"""7x7x7 kernels on (T, H, W) in every layer, as in the paper."""
_STRIDE = 2
_PADDING = 3
"""With kernel 7 and stride 2, padding 3 maps a length n to ceil(n / 2) for every n >= 1, so
any sequence length and grid size encode; the decoder then asks for the exact input size."""
_DEFAULT_CHANNELS = {3: (32, 32, 4, 32, 32), 2: (32, 4, 32)}
"""Feature maps per layer from Table I: full discriminator, and the coarse-scale one of the
multi-resolution LSTM (its sequences are half as long)."""


class EnergyDiscriminator(nn.Module):
    """3D-conv encoder + 3D transposed-conv decoder; energy = mean squared reconstruction error.

    Parameters
    ----------
    depth
        Strided layers on each side: 3 for the full-rate discriminator, 2 for the coarse scale.
    channels
        Feature maps of the ``2 * depth - 1`` hidden layers (encoder outputs, the bottleneck
        last, then decoder outputs); the final layer always outputs one channel. Defaults to the
        paper's 32,32,4,32,32 (depth 3) or 32,4,32 (depth 2).
    negative_slope
        Leaky ReLU slope. The paper does not give one; 0.2 is the usual GAN choice.

    Notes
    -----
    BatchNorm and leaky ReLU follow every layer but the last, which is linear so the
    reconstruction can take any value. Input and output are (B, T, 1, H, W), the generators'
    layout; the convolutions run on (B, 1, T, H, W).
    """

    def __init__(
        self,
        depth: int = 3,
        channels: tuple[int, ...] | None = None,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        check_int("depth", depth, 2, 3)
        channels = _DEFAULT_CHANNELS[depth] if channels is None else tuple(channels)
        if len(channels) != 2 * depth - 1:
            raise ValueError(
                f"'channels' must hold {2 * depth - 1} widths for depth {depth}, got {channels!r}"
            )
        for index, width in enumerate(channels):
            check_int(f"channels[{index}]", width, 1)
        check_range("negative_slope", negative_slope, 0.0)
        self.depth = depth
        self.channels = channels
        widths = (1, *channels, 1)
        self.encoder = nn.ModuleList(
            nn.Conv3d(widths[i], widths[i + 1], _KERNEL, _STRIDE, _PADDING) for i in range(depth)
        )
        self.decoder = nn.ModuleList(
            nn.ConvTranspose3d(widths[i], widths[i + 1], _KERNEL, _STRIDE, _PADDING)
            for i in range(depth, 2 * depth)
        )
        self.norms = nn.ModuleList(nn.BatchNorm3d(width) for width in channels)
        self.activation = nn.LeakyReLU(negative_slope)

    def forward(self, z: Tensor) -> Tensor:
        """Reconstruct ``z`` (B, T, 1, H, W); the output has exactly the input's shape."""
        _check_sequence(z)
        x = z.transpose(1, 2)
        sizes = []
        for conv, norm in zip(self.encoder, self.norms[: self.depth], strict=True):
            sizes.append(x.shape[2:])
            x = self.activation(norm(conv(x)))
        for index, deconv in enumerate(self.decoder):
            # A strided transposed conv can land on 2n - 1 or 2n: ask for the encoder's size.
            x = deconv(x, output_size=sizes.pop())
            if index < self.depth - 1:
                x = self.activation(self.norms[self.depth + index](x))
        return x.transpose(1, 2)

    def energy(self, z: Tensor) -> Tensor:
        """Mean squared reconstruction error of each sequence, shape (B,)."""
        return reconstruction_energy(self(z), z)


def reconstruction_energy(reconstruction: Tensor, z: Tensor) -> Tensor:
    """Energy of each sequence from its reconstruction, shape (B,).

    Averaged over frames and pixels, so sequences of 32 (full rate) and 16 (coarse scale)
    frames give energies on the same scale. A function of its own so a caller holding the
    reconstruction (e.g. from a DistributedDataParallel wrapper) computes the same energy.
    """
    return (reconstruction - z).square().flatten(1).mean(dim=1)


def _check_sequence(z: Tensor) -> None:
    """Raise ValueError unless ``z`` is (B, T, 1, H, W)."""
    if z.ndim != 5 or z.shape[2] != 1:
        raise ValueError(f"'z' must have shape (B, T, 1, H, W), got {tuple(z.shape)}")
