"""Sizes of an MSPN generator (paper 001)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class MSPNConfig:
    """Pyramid depth, widths and window of an MSPN generator.

    Attributes
    ----------
    levels
        Pyramid levels; level ``l`` works at the grid halved ``l`` times (ceiling), so 3 levels
        on 18x20 are 18x20, 9x10 and 5x5 (models.md [decided]; the paper uses 4 on 64x64).
    hidden
        LSTM state channels of every level (64 in the paper).
    widths
        Codec channels per encoder stage, one per level: level ``l`` encodes through
        ``widths[0], ..., widths[levels - 1 - l]``, so every level's bottleneck lands on the
        coarsest grid and higher levels have shallower, narrower codecs (the paper's Fig. 4).
    kernel_size
        Square kernel of every codec and output convolution, odd.
    past_frames, future_frames
        Observed frames, then frames rolled out from the model's own predictions (16 and 16).
    grid_shape
        Frame size (rows, cols).
    residual
        Every level's (linear) output is the departure from the frame it was given at that
        step (``models.residual``): the last observed frame at the first predicted step, the
        model's own previous prediction after it.

    Notes
    -----
    The defaults are sized for CPU training and a millisecond-scale rollout. A paper-sized
    generator is ``MSPNConfig(hidden=64, widths=(64, 128, 256))``: the paper's hidden width and
    the first three codec widths of its public code.
    """

    levels: int = 3
    hidden: int = 8
    widths: tuple[int, ...] = (8, 16, 16)
    kernel_size: int = 3
    past_frames: int = 16
    future_frames: int = 16
    grid_shape: tuple[int, int] = (18, 20)
    residual: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(self.widths))
        object.__setattr__(self, "grid_shape", tuple(self.grid_shape))
        for name in ("levels", "hidden", "past_frames", "future_frames"):
            minimum = 2 if name == "levels" else 1
            if getattr(self, name) < minimum:
                raise ValueError(f"'{name}' must be >= {minimum}, got {getattr(self, name)!r}")
        if len(self.widths) != self.levels or min(self.widths) < 1:
            raise ValueError(
                f"'widths' must be {self.levels} positive widths (one per level), "
                f"got {self.widths!r}"
            )
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"'kernel_size' must be odd and >= 1, got {self.kernel_size!r}")
        if len(self.grid_shape) != 2 or min(self.grid_shape) < 1:
            raise ValueError(f"'grid_shape' must be (rows, cols), got {self.grid_shape!r}")

    def level_sizes(self) -> list[tuple[int, int]]:
        """(rows, cols) of every level, finest first: each halves the one below, rounding up,
        which is exactly what a stride-2 convolution with padding ``kernel_size // 2`` gives."""
        sizes = [self.grid_shape]
        for _ in range(self.levels - 1):
            rows, cols = sizes[-1]
            sizes.append((-(-rows // 2), -(-cols // 2)))
        return sizes

    def to_dict(self) -> dict:
        return asdict(self)
