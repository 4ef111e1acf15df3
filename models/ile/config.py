"""Sizes of an ILE model (paper 004)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

SQUEEZES: tuple[tuple[int, int], ...] = ((2, 2), (3, 2))
"""(rows, cols) factor of each squeeze: 18x20x1 -> 9x10x4 -> 3x5x24 (models.md [decided])."""


@dataclass(frozen=True)
class ILEConfig:
    """Flow depth and widths, latent size and window of an ILE model.

    Attributes
    ----------
    coupling_layers
        Affine-coupling layers after each squeeze (one block per squeeze; the paper's 4 blocks
        of 10 are for 64x64 frames).
    hidden
        Channels inside every coupling network (512 in the paper, reduced for 360 pixels).
    latent
        Dimension of the linear system's state x; even, as A is made of 2x2 blocks.
    past_frames, future_frames
        Frames x0 is fitted on, then frames predicted from it (16 and 16).
    grid_shape
        Frame size (rows, cols); the squeezes need rows divisible by 6 and cols by 4.
    residual
        Hold the last past frame's embedding (``models.ile.model``): the linear system predicts
        each future embedding's departure from it, in embedding space, before the inverse
        flow, so the likelihood still fits the prediction. Absolute (False), the prediction is
        the system's rank-``latent`` fit, which cannot follow the last frame.
    """

    coupling_layers: int = 4
    hidden: int = 32
    latent: int = 64
    past_frames: int = 16
    future_frames: int = 16
    grid_shape: tuple[int, int] = (18, 20)
    residual: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid_shape", tuple(self.grid_shape))
        for name in ("coupling_layers", "hidden", "past_frames", "future_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"'{name}' must be >= 1, got {getattr(self, name)!r}")
        rows_factor = cols_factor = 1
        for rows, cols in SQUEEZES:
            rows_factor, cols_factor = rows_factor * rows, cols_factor * cols
        if (
            len(self.grid_shape) != 2
            or min(self.grid_shape) < 1
            or self.grid_shape[0] % rows_factor
            or self.grid_shape[1] % cols_factor
        ):
            raise ValueError(
                f"'grid_shape' must be (rows, cols) with rows divisible by {rows_factor} and "
                f"cols by {cols_factor}, got {self.grid_shape!r}"
            )
        observed = self.past_frames * self.pixels
        if self.latent < 2 or self.latent % 2 or self.latent > observed:
            raise ValueError(
                f"'latent' must be even, >= 2 and <= past_frames * pixels ({observed}) so x0 "
                f"is determined by the past, got {self.latent!r}"
            )

    @property
    def pixels(self) -> int:
        """Dimension of one frame, and of its embedding (the flow keeps it)."""
        return self.grid_shape[0] * self.grid_shape[1]

    def to_dict(self) -> dict:
        return asdict(self)
