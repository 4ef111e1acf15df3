"""The three generators of the paper's Fig. 3: benchmark ConvLSTM, multi-resolution LSTM and
LSTM with multi-resolution layers.

Every generator has an encoder, a decoder and a predictor (each a two-layer ConvLSTM stack).
The encoder reads the observed frames; its final state initialises the decoder, which
reconstructs the past in reverse order conditioned on its own previous output (training only),
and the predictor, which generates the future conditioned on its own previous output, starting
from the last observed frame. ``predict`` runs encoder + predictor only: the exported graph.

Frames are (B, T, 1, H, W), normalised (the heads end in tanh).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from models.convlstm.blocks import (
    ConvLSTMStack,
    OutputHead,
    State,
    downsample_time,
    upsample_time,
)
from models.residual import RESIDUAL_SPAN, add_to_last, start_at_persistence
from models.shapes import check_past


@dataclass(frozen=True)
class ConvLSTMConfig:
    """Sizes shared by the three generators.

    Attributes
    ----------
    hidden
        Channels of the lower and upper ConvLSTM layer (64-64 and 128-128 in the paper).
    kernel_size
        Convolution kernel (5 in the paper).
    past_frames, future_frames
        Observed and predicted frames (16 and 16).
    grid_shape
        Frame size (rows, cols).
    residual
        The predictor's heads give the departure from the last observed frame
        (``models.residual``: ``RESIDUAL_SPAN * tanh``), not the frame itself.
    """

    hidden: tuple[int, int] = (64, 64)
    kernel_size: int = 5
    past_frames: int = 16
    future_frames: int = 16
    grid_shape: tuple[int, int] = (18, 20)
    residual: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(self.hidden))
        object.__setattr__(self, "grid_shape", tuple(self.grid_shape))
        if len(self.hidden) != 2 or min(self.hidden) < 1:
            raise ValueError(f"'hidden' must be two positive widths, got {self.hidden!r}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"'kernel_size' must be odd and >= 1, got {self.kernel_size!r}")
        for name in ("past_frames", "future_frames"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"'{name}' must be >= 1, got {value!r}")
        if len(self.grid_shape) != 2 or min(self.grid_shape) < 1:
            raise ValueError(f"'grid_shape' must be (rows, cols), got {self.grid_shape!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GeneratorOutput:
    """What a generator produced for one batch.

    ``coarse`` holds the scale-1 output of the multi-resolution LSTM (None otherwise); its
    targets are ``downsample_time`` of the true past and future.
    """

    reconstruction: Tensor
    prediction: Tensor
    coarse: GeneratorOutput | None = None


class _EncoderDecoderPredictor(nn.Module):
    """Three stacks and the loops that drive them; subclasses choose inputs and heads."""

    def __init__(self, config: ConvLSTMConfig, in_channels: int, heads_per_stack: int) -> None:
        super().__init__()
        self.config = config
        args = (config.hidden, config.kernel_size, config.grid_shape)
        self.encoder = ConvLSTMStack(in_channels, *args)
        self.decoder = ConvLSTMStack(in_channels, *args)
        self.predictor = ConvLSTMStack(in_channels, *args)
        self.decoder_heads = nn.ModuleList(
            OutputHead(config.hidden) for _ in range(heads_per_stack)
        )
        span = RESIDUAL_SPAN if config.residual else 1.0
        self.predictor_heads = nn.ModuleList(
            OutputHead(config.hidden, span) for _ in range(heads_per_stack)
        )
        if config.residual:
            for head in self.predictor_heads:
                start_at_persistence(head.project)

    def _updates_upper(self, step: int) -> bool:
        """Whether the upper layer updates at 1-based time ``step`` (always, but MR-layer)."""
        return True

    def _head(self, heads: nn.ModuleList, step: int) -> OutputHead:
        return heads[0]

    streaming = True
    """Whether :meth:`stream_step` exists: the encoder can take one frame at a time."""

    temporal_skip = False
    """Whether the upper layer holds its state at some steps (``upper_due`` matters)."""

    def _gated_step(
        self, stack: ConvLSTMStack, x: Tensor, states: list[State], upper_due: bool
    ) -> list[State]:
        """A step told whether the upper layer is due (only a temporal skip heeds it)."""
        return stack.step(x, states)

    def _gated_head(self, heads: nn.ModuleList, states: list[State], upper_due: bool) -> Tensor:
        return heads[0](states)

    def stream_step(
        self, frame: Tensor, states: list[State], upper_due: bool
    ) -> tuple[Tensor, list[State]]:
        """Feed one new frame to the encoder, then roll the predictor out from its state.

        The streaming form of :meth:`predict`: the encoder state is carried between calls
        instead of re-encoding a window. ``upper_due`` says whether the upper layer updates at
        this frame; it matters only for models with a temporal skip, which alternate it frame
        by frame (the exported step graph takes it as a tensor and branches on it). Fed a
        window's frames one by one from :meth:`zero_stream_state` with ``upper_due`` True at
        the window's even (1-based) frames, the last call returns exactly ``predict(window)``.

        Returns the prediction (B, future_frames, 1, H, W) and the new encoder state.
        """
        states = self.stream_encode(frame, states, upper_due)
        return self.stream_rollout(frame, states, upper_due), states

    def stream_encode(self, frame: Tensor, states: list[State], upper_due: bool) -> list[State]:
        """The encoder half of :meth:`stream_step`: the state after ``frame``. Alone, it is
        what catching up on frames that need no prediction of their own costs."""
        return self._gated_step(self.encoder, frame, states, upper_due)

    def stream_rollout(self, frame: Tensor, states: list[State], upper_due: bool) -> Tensor:
        """The predictor half of :meth:`stream_step`: the future after ``frame``, rolled out
        from the encoder ``states`` that :meth:`stream_encode` left after it."""
        predictor_states, previous, outputs = states, frame, []
        for k in range(1, self.config.future_frames + 1):
            # The upper layer alternates: the first predicted frame holds it if this one
            # updated it, exactly as the window's frame 17 follows its frame 16.
            due = upper_due if k % 2 == 0 else not upper_due
            predictor_states = self._gated_step(self.predictor, previous, predictor_states, due)
            previous = self._gated_head(self.predictor_heads, predictor_states, due)
            if self.config.residual:
                previous = add_to_last(frame, previous)
            outputs.append(previous)
        return torch.stack(outputs, dim=1)

    def zero_stream_state(self, like: Tensor) -> list[State]:
        """The encoder state before any frame: zeros, on ``like``'s device and dtype."""
        return self.encoder.zero_state(like)

    def _encode(self, inputs: Tensor) -> list[State]:
        states = self.encoder.zero_state(inputs)
        for t in range(inputs.shape[1]):
            states = self.encoder.step(inputs[:, t], states, self._updates_upper(t + 1))
        return states

    def _generate(
        self,
        stack: ConvLSTMStack,
        heads: nn.ModuleList,
        states: list[State],
        first: Tensor,
        side: Tensor | None,
        steps: list[int],
        base: Tensor | None = None,
    ) -> Tensor:
        """Run ``stack`` over ``steps`` (1-based times, in generation order), feeding back its
        own output; ``side`` (B, len(steps), C, H, W) is stacked as extra input channels;
        ``base`` (residual) is the frame the heads' departures are added to."""
        previous = first
        outputs = []
        for k, step in enumerate(steps):
            x = previous if side is None else torch.cat([previous, side[:, k]], dim=1)
            states = stack.step(x, states, self._updates_upper(step))
            previous = self._head(heads, step)(states)
            if base is not None:
                previous = add_to_last(base, previous)
            outputs.append(previous)
        return torch.stack(outputs, dim=1)

    def _run(
        self,
        past: Tensor,
        past_side: Tensor | None,
        future_side: Tensor | None,
        reconstruct: bool,
    ) -> GeneratorOutput | Tensor:
        n_past, n_future = self.config.past_frames, self.config.future_frames
        encoder_in = past if past_side is None else torch.cat([past, past_side], dim=2)
        states = self._encode(encoder_in)
        prediction = self._generate(
            self.predictor,
            self.predictor_heads,
            states,
            past[:, -1],
            future_side,
            list(range(n_past + 1, n_past + n_future + 1)),
            past[:, -1] if self.config.residual else None,
        )
        if not reconstruct:
            return prediction
        reverse_side = None if past_side is None else past_side.flip(1)
        reconstruction = self._generate(
            self.decoder,
            self.decoder_heads,
            states,
            torch.zeros_like(past[:, -1]),
            reverse_side,
            list(range(n_past, 0, -1)),
        ).flip(1)
        return GeneratorOutput(reconstruction=reconstruction, prediction=prediction)


class BenchmarkConvLSTM(_EncoderDecoderPredictor):
    """Fig. 3(a): a two-layer ConvLSTM encoder, decoder and predictor with 1x1 heads."""

    heads_per_stack = 1

    def __init__(self, config: ConvLSTMConfig) -> None:
        super().__init__(config, in_channels=1, heads_per_stack=self.heads_per_stack)

    def forward(self, past: Tensor) -> GeneratorOutput:
        """Reconstruction of the past and prediction of the future (training)."""
        check_past(past, self.config.past_frames, self.config.grid_shape)
        return self._run(past, None, None, reconstruct=True)

    def predict(self, past: Tensor) -> Tensor:
        """(B, future_frames, 1, H, W) from (B, past_frames, 1, H, W): encoder + predictor."""
        check_past(past, self.config.past_frames, self.config.grid_shape)
        return self._run(past, None, None, reconstruct=False)


class MRLayerLSTM(BenchmarkConvLSTM):
    """Fig. 3(c): the upper layer of every stack updates only at even times (a temporal highway
    over two steps) while the lower layer runs every step; separate heads map the features to
    frames at steps where the upper layer updated and where it held its state."""

    heads_per_stack = 2
    temporal_skip = True

    def _updates_upper(self, step: int) -> bool:
        return step % 2 == 0

    def _head(self, heads: nn.ModuleList, step: int) -> OutputHead:
        return heads[0] if step % 2 == 0 else heads[1]

    def _gated_step(
        self, stack: ConvLSTMStack, x: Tensor, states: list[State], upper_due: bool
    ) -> list[State]:
        return stack.step(x, states, upper_due)

    def _gated_head(self, heads: nn.ModuleList, states: list[State], upper_due: bool) -> Tensor:
        return heads[0 if upper_due else 1](states)


class _FineScale(_EncoderDecoderPredictor):
    """Scale 0 of the multi-resolution LSTM: its input stacks its own frame with the
    interpolated scale-1 frame as a second channel."""

    def __init__(self, config: ConvLSTMConfig) -> None:
        super().__init__(config, in_channels=2, heads_per_stack=1)


class MultiResolutionLSTM(nn.Module):
    """Fig. 3(b): a coarse model (the benchmark on eq.-4 scale-1 frames) predicts the even
    future frames; their interpolation joins every scale-0 input as a second channel.

    The encoder and decoder of scale 0 see the interpolation of the true past at scale 1; the
    predictor sees the interpolation of the coarse prediction. The paper's first past step
    (time 1, odd) has no scale-1 frame before it; it takes the first one (time 2).
    """

    streaming = False
    """Scale 0 interpolates each odd past frame's coarse input from the frame after it, so
    the encoder cannot take one frame at a time: this model serves in window mode only."""

    def __init__(self, config: ConvLSTMConfig) -> None:
        super().__init__()
        for name in ("past_frames", "future_frames"):
            if getattr(config, name) % 2:
                raise ValueError(
                    f"'{name}' must be even for two temporal scales, got {getattr(config, name)}"
                )
        self.config = config
        self.coarse = BenchmarkConvLSTM(
            ConvLSTMConfig(
                hidden=config.hidden,
                kernel_size=config.kernel_size,
                past_frames=config.past_frames // 2,
                future_frames=config.future_frames // 2,
                grid_shape=config.grid_shape,
                residual=config.residual,
            )
        )
        self.fine = _FineScale(config)

    def forward(self, past: Tensor) -> GeneratorOutput:
        check_past(past, self.config.past_frames, self.config.grid_shape)
        coarse_past = downsample_time(past)
        coarse = self.coarse(coarse_past)
        output = self._fine(past, coarse_past, coarse.prediction, reconstruct=True)
        output.coarse = coarse
        return output

    def predict(self, past: Tensor) -> Tensor:
        check_past(past, self.config.past_frames, self.config.grid_shape)
        coarse_past = downsample_time(past)
        return self._fine(past, coarse_past, self.coarse.predict(coarse_past), reconstruct=False)

    def _fine(
        self, past: Tensor, coarse_past: Tensor, coarse_future: Tensor, reconstruct: bool
    ) -> GeneratorOutput | Tensor:
        past_side = upsample_time(coarse_past, before=coarse_past[:, 0])
        future_side = upsample_time(coarse_future, before=coarse_past[:, -1])
        return self.fine._run(past, past_side, future_side, reconstruct)
