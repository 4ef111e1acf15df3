"""Sizes of an S-HR-VQVAE (paper 002)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

SCHEDULES = ("joint", "disjoint")
TEMPORAL = ("conv", "attention")
MAX_LEAVES = 4096
"""Cap on ``codebook_size ** levels``: the PixelCNN has one logit per leaf."""


@dataclass(frozen=True)
class VQVAEConfig:
    """Codec, hierarchy and PixelCNN sizes of an S-HR-VQVAE.

    Attributes
    ----------
    levels, codebook_size
        n hierarchy levels of codebooks with M words each; level i has M^(i-1) codebooks, so
        the leaves (what the PixelCNN predicts) number M^n (3 x 8 = 512, models.md [decided]).
    latent_channels
        D, the width of the latent vectors and codewords.
    hidden
        Channels of the encoder and decoder convolutions.
    pixelcnn_channels, pixelcnn_layers
        Width and depth of the ST-PixelCNN (its temporal and its masked spatial stack).
    temporal
        How the PixelCNN summarises the past (``models.vqvae.pixelcnn``): ``"conv"``, a causal
        stack of 3D convolutions (the shipped models), or ``"attention"``, causal attention over
        the last ``past_frames`` frames, the paper's spatiotemporal attention
        (``models.vqvae.attention``).
    temporal_kernel
        Frames each causal temporal convolution spans; the conv stack sees the last
        ``pixelcnn_layers * (temporal_kernel - 1) + 1`` frames. Unused by attention.
    attention_heads
        Heads of each attention layer; must divide ``pixelcnn_channels``. Unused by conv.
    beta
        Commitment weight of eq. 4-5 at every level; the paper leaves it unstated, 0.25 is the
        original VQ-VAE's.
    past_frames, future_frames
        Observed frames, then frames rolled out (16 and 16).
    schedule
        How the two parts are trained (paper 002, section 4.4): ``"joint"`` (eq. 9, from the
        first step) or ``"disjoint"`` (the HR-VQVAE alone for the first half of the steps, then
        the ST-PixelCNN alone on the frozen codes).
    grid_shape
        Frame size (rows, cols); frames are zero-padded to an even square (18x20 -> 20x20) and
        downsampled 2x to the latent grid (10x10).
    residual
        Serve the last measured frame plus the decoded change (``models.vqvae.model``):
        ``x_last + D(predicted codes) - D(codes of x_last)``. Codes that stay put then give
        persistence exactly instead of the codec's reconstruction of the last frame.
        Training is the same either way (the codes, not the pixels, are what is learnt).
    """

    levels: int = 3
    codebook_size: int = 8
    latent_channels: int = 8
    hidden: int = 32
    pixelcnn_channels: int = 32
    pixelcnn_layers: int = 3
    temporal: str = "conv"
    temporal_kernel: int = 3
    attention_heads: int = 4
    beta: float = 0.25
    past_frames: int = 16
    future_frames: int = 16
    schedule: str = "joint"
    grid_shape: tuple[int, int] = (18, 20)
    residual: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid_shape", tuple(self.grid_shape))
        minimum = {"codebook_size": 2}
        for name in (
            "levels", "codebook_size", "latent_channels", "hidden", "pixelcnn_channels",
            "pixelcnn_layers", "temporal_kernel", "attention_heads", "past_frames",
            "future_frames",
        ):  # fmt: skip
            least = minimum.get(name, 1)
            if getattr(self, name) < least:
                raise ValueError(f"'{name}' must be >= {least}, got {getattr(self, name)!r}")
        if self.leaves > MAX_LEAVES:
            raise ValueError(
                f"'codebook_size' ** 'levels' must be <= {MAX_LEAVES}, got {self.leaves}"
            )
        if self.schedule not in SCHEDULES:
            raise ValueError(f"'schedule' must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.temporal not in TEMPORAL:
            raise ValueError(f"'temporal' must be one of {TEMPORAL}, got {self.temporal!r}")
        if self.temporal == "attention" and self.pixelcnn_channels % self.attention_heads:
            raise ValueError(
                f"'attention_heads' ({self.attention_heads}) must divide 'pixelcnn_channels' "
                f"({self.pixelcnn_channels})"
            )
        if self.beta < 0:
            raise ValueError(f"'beta' must be >= 0, got {self.beta!r}")
        if len(self.grid_shape) != 2 or min(self.grid_shape) < 1:
            raise ValueError(f"'grid_shape' must be (rows, cols), got {self.grid_shape!r}")

    @property
    def leaves(self) -> int:
        """Words of the finest level: every path through the hierarchy."""
        return self.codebook_size**self.levels

    @property
    def padded_side(self) -> int:
        """Side of the even square a frame is padded to before the 2x downsampling."""
        side = max(self.grid_shape)
        return side + side % 2

    @property
    def context_frames(self) -> int:
        """Past frames the PixelCNN's causal temporal stack can see."""
        if self.temporal == "attention":
            return self.past_frames
        return self.pixelcnn_layers * (self.temporal_kernel - 1) + 1

    def to_dict(self) -> dict:
        return asdict(self)
