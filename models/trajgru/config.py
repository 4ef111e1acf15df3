"""Sizes and switches of the TrajGRU family; one class per registered name differs only in
its defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from models.trajgru.ode import SOLVERS

LEVELS = 3


@dataclass(frozen=True)
class TrajGRUConfig:
    """The plain TrajGRU encoder-forecaster (the thesis' baseline); the switches turn it into
    the proposed models.

    The defaults are CPU-sized. The thesis' Moving MNIST size (Tables A.1 and 5.1) is
    ``hidden=(64, 96, 128), links=9, head_channels=32`` (see ``THESIS_SIZE``).

    Attributes
    ----------
    hidden
        Channels of recurrent levels 1, 2, 3 (full, half, quarter resolution).
    links
        L, flow fields per TrajGRU cell.
    head_channels
        Width of the conv3x3 before the output 1x1 convolution.
    attention
        Motion-based decoding attention (MDA) at ``decoder_attention_layers``.
    ode
        TrajGRU-ODE blocks in every forecaster layer.
    encoder_attention_layers, decoder_attention_layers
        Where MEA / MDA sit (Table B.1's best, "en_a23_de_a21"). MEA is on whenever
        ``attention`` or ``ode`` is: all three proposed models of the thesis have it, the
        baseline has none.
    attention_window
        Hidden states an MDA attends over (a sliding window; the thesis gives no size).
    ode_solver, ode_steps
        Fixed-step solver (``"euler"`` in the thesis, or ``"rk4"``) and its sub-steps per
        interval between consecutive times.
    past_frames, future_frames, grid_shape
        The window: observed frames, predicted frames, (rows, cols).
    residual
        The forecaster's (linear) output is the departure from the last frame received
        (``models.residual``), not the frame itself.
    """

    hidden: tuple[int, int, int] = (8, 12, 16)
    links: int = 5
    head_channels: int = 8
    attention: bool = False
    ode: bool = False
    encoder_attention_layers: tuple[int, ...] = (2, 3)
    decoder_attention_layers: tuple[int, ...] = (2, 1)
    attention_window: int = 4
    ode_solver: str = "euler"
    ode_steps: int = 1
    past_frames: int = 16
    future_frames: int = 16
    grid_shape: tuple[int, int] = (18, 20)
    residual: bool = False

    def __post_init__(self) -> None:
        for name in ("hidden", "encoder_attention_layers", "decoder_attention_layers"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "grid_shape", tuple(self.grid_shape))
        if len(self.hidden) != LEVELS or not all(_is_int(c) and c >= 1 for c in self.hidden):
            raise ValueError(f"'hidden' must be {LEVELS} positive widths, got {self.hidden!r}")
        for name in ("links", "head_channels", "attention_window", "ode_steps"):
            _check_count(name, getattr(self, name))
        for name in ("past_frames", "future_frames"):
            _check_count(name, getattr(self, name))
        for name in ("attention", "ode", "residual"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"'{name}' must be a bool, got {getattr(self, name)!r}")
        for name in ("encoder_attention_layers", "decoder_attention_layers"):
            layers = getattr(self, name)
            if len(set(layers)) != len(layers) or not set(layers) <= set(range(1, LEVELS + 1)):
                raise ValueError(
                    f"'{name}' must be distinct layers among 1..{LEVELS}, got {layers!r}"
                )
        if self.ode_solver not in SOLVERS:
            raise ValueError(f"'ode_solver' must be one of {SOLVERS}, got {self.ode_solver!r}")
        if len(self.grid_shape) != 2 or not all(_is_int(n) and n >= 1 for n in self.grid_shape):
            raise ValueError(f"'grid_shape' must be (rows, cols), got {self.grid_shape!r}")

    @property
    def takes_times(self) -> bool:
        """Whether the past and target times enter the model (all but the baseline)."""
        return self.attention or self.ode

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrajGRUAttentionConfig(TrajGRUConfig):
    """TrajGRU-Attention: MEA in the encoder, MDA in the forecaster (section 4.2.4)."""

    attention: bool = True


@dataclass(frozen=True)
class TrajGRUODEConfig(TrajGRUConfig):
    """TrajGRU-ODE: MEA in the encoder, TrajGRU-ODE blocks in the forecaster (4.2.5)."""

    ode: bool = True


@dataclass(frozen=True)
class TrajGRUAttentionODEConfig(TrajGRUConfig):
    """TrajGRU-Attention-ODE: both (section 4.2.6)."""

    attention: bool = True
    ode: bool = True


THESIS_SIZE = {"hidden": (64, 96, 128), "links": 9, "head_channels": 32}
"""Overrides giving the thesis' Moving MNIST widths (Tables A.1 and 5.1)."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_count(name: str, value: object) -> None:
    if not _is_int(value) or value < 1:
        raise ValueError(f"'{name}' must be an integer >= 1, got {value!r}")
