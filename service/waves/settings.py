"""Configuration of the travelling-wave estimator: the ``[waves]`` section of the TOML file."""

from __future__ import annotations

import math
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.core.grid import HORIZON_FRAMES, NOMINAL_RATE_HZ
from service.core.live_channels import BLOCK_FRAMES

MIN_PAST_FRAMES = 16
"""Fewest measured frames a block must start with: the causal filter and the autoregressive
extension need that much history to mean anything."""

DEFAULT_EXTENSION_FRAMES = 32
"""The wave block's forecast extension where ``[waves] extension_frames`` is not set and the
band's least (:meth:`WaveSettings.min_extension_frames`) is shorter."""


def window_frames(window_s: float, sample_rate_hz: float) -> int:
    """Frames of stream a baseline window of ``window_s`` reads at each refresh (here, not
    beside the baseline, so that reading the configuration loads no signal processing)."""
    return round(window_s * sample_rate_hz)


_Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class WaveSettings(BaseModel):
    """How ``WaveEstimator`` filters, extends and classifies a block of frames.

    The configured band is the range of rhythms of interest: the envelope (and so the policy's
    amplitude) is taken in it, and with ``adaptive_band`` the phase is taken in a narrow band
    around the rhythm each block shows inside it (see ``bench/benchmarks/wave_accuracy.py``).

    Attributes
    ----------
    low_hz, high_hz
        Pass band of the Butterworth band-pass, in Hz; ``high_hz`` must stay below Nyquist.
    filter_order
        Butterworth order of each band edge (the band-pass has twice as many poles).
    predicted_frames
        How many frames at the end of each block are the model's prediction (16 on the rig).
    past_frames
        Measured frames the daemon passes before the prediction. More history lets the causal
        filter settle, which a narrow band needs (one octave around 10 Hz: 8 % median speed
        error at 0 dB with 48 frames, 24 % with 16, on the bench); the estimator accepts any
        number >= ``MIN_PAST_FRAMES`` (16). A rhythm with less than a period in the block
        reads fast: at the default 48 frames, that is one below 5.8 Hz, inside the default
        band (a 4 Hz wave's period is 69 frames); where slow rhythms matter, give their period.
    adaptive_band
        Take phase (speed, direction, frequency, PGD, pattern) from a narrow band centred on
        each block's dominant rhythm, found in its measured frames inside ``low_hz``–``high_hz``
        (see ``service.waves._band``); False takes it from the configured band, as the envelope
        always is. At 0 dB the adaptive band cut the median speed error of a 10 Hz plane wave
        from ~45 % to ~5 % (slow waves) on the bench, and it makes the configured band a search
        range rather than a compromise between rhythms.
    phase_band_octaves
        Width of the adaptive phase band. Half an octave keeps about a sixth of the background
        and still settles within the default 48 measured frames; narrower bands help only
        with longer blocks.
    gradient_span
        Longest distance between the electrodes whose phase difference gives the array's
        mean gradient, as a fraction of the array's extent along each axis (see
        ``service.waves._gradient``); 0 uses neighbours only. Long distances remove the
        shrinkage of the gradient by the spatially correlated background.
    ar_order
        Order of the autoregressive model, fitted to each filtered block, that extends the
        block before the Hilbert transform so the newest frames are not at its edge.
    extension_frames
        Frames the block is extended by (rounded up to a fast FFT length): the newest frames
        lie that far from the edge of the Hilbert transform, which treats the block as one
        period and so joins its end to its start. At least :meth:`min_extension_frames`, a
        quarter period of ``low_hz`` (18 at 4 Hz and 277.78 Hz). None, the default: 32, or
        that least where it is more (a band tuned down to 2 Hz needs 35 at 277.78 Hz), so a
        change of band or rate never needs it changed too (:meth:`extension_at`).
    min_live_fraction
        Fraction of channels that must be live; with fewer the gradient is not trusted and the
        estimator refuses the block.
    planar_pgd
        Phase-gradient directionality at or above which a frame is labelled planar.
    rotating_min_corr
        Phase-angle (circular-circular) correlation at or above which a non-planar frame is
        labelled rotating.
    radial_min_corr
        Phase-distance (circular-linear) correlation at or above which a non-planar,
        non-rotating frame is labelled radial.
    centre_step
        Spacing, in electrodes, of the candidate centres searched for radial and rotating
        waves (smaller is finer and slower).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    low_hz: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 4.0
    high_hz: Annotated[float, Field(gt=0.0, lt=NOMINAL_RATE_HZ / 2, allow_inf_nan=False)] = 30.0
    filter_order: Annotated[int, Field(ge=1, le=8)] = 2
    predicted_frames: Annotated[int, Field(ge=1, le=1024)] = HORIZON_FRAMES
    past_frames: Annotated[int, Field(ge=MIN_PAST_FRAMES, le=4096)] = BLOCK_FRAMES
    adaptive_band: bool = True
    phase_band_octaves: Annotated[float, Field(ge=0.1, le=2.0, allow_inf_nan=False)] = 0.5
    gradient_span: _Fraction = 0.85
    ar_order: Annotated[int, Field(ge=1, le=MIN_PAST_FRAMES // 2)] = 6
    extension_frames: Annotated[int, Field(ge=0, le=4096)] | None = None
    min_live_fraction: Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)] = 0.5
    planar_pgd: _Fraction = 0.5
    rotating_min_corr: _Fraction = 0.6
    radial_min_corr: _Fraction = 0.75
    centre_step: Annotated[int, Field(ge=1, le=8)] = 2

    @model_validator(mode="after")
    def _check_band(self) -> WaveSettings:
        if not self.low_hz < self.high_hz:
            raise ValueError(
                f"'low_hz' must be < 'high_hz', got low_hz={self.low_hz!r}, "
                f"high_hz={self.high_hz!r}"
            )
        return self

    def min_extension_frames(self, sample_rate_hz: float) -> int:
        """Fewest ``extension_frames`` at ``sample_rate_hz``: a quarter period of ``low_hz``,
        the slowest rhythm the band-pass lets through, rounded up.

        The Hilbert transform turns a rhythm into itself shifted by a quarter of its period,
        so a frame's analytic signal is only its own with the signal that far beyond it; the
        forecast supplies it for the newest frames. With no extension a steady 40 µV 6 Hz
        wave's newest frames read 29 µV (36.9 µV at 32 frames); on the bench the newest
        frames' envelope error stops falling at about this many frames, whatever the filter
        order (the slowest pole's decay time would ask 73 frames at order 8, which needs no
        more than order 2)."""
        return math.ceil(sample_rate_hz / (4 * self.low_hz))

    def extension_at(self, sample_rate_hz: float) -> int:
        """The extension used at ``sample_rate_hz``: ``extension_frames`` as configured, or
        by default :data:`DEFAULT_EXTENSION_FRAMES` raised to :meth:`min_extension_frames`."""
        if self.extension_frames is not None:
            return self.extension_frames
        return max(DEFAULT_EXTENSION_FRAMES, self.min_extension_frames(sample_rate_hz))

    @property
    def phase_band_top_hz(self) -> float:
        """The top of the narrow phase band around ``high_hz`` (``adaptive_band``): it, too,
        must stay below the stream's Nyquist frequency."""
        return self.high_hz * 2.0 ** (self.phase_band_octaves / 2)
