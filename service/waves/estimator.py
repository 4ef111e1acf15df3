"""Travelling-wave estimator: speed, direction, organisation and pattern of every frame.

A block of frames (measured frames from the ring buffer followed by the model's predicted
frames) is band-passed causally and turned into analytic signals twice:

- in the configured band (Butterworth, then a Hilbert transform of the block extended by an
  autoregressive forecast; ``service.waves._filter``): the envelope and amplitude, which the
  policy compares with the background's robust s.d. taken in the same band;
- in the phase band (``service.waves._band``): a causal complex band-pass half an octave wide,
  centred on the dominant rhythm of the measured frames, from which all phase quantities come.
  A wide band lets the spatially correlated 1/f background shrink the phase gradient and bias
  the frequency, so that at 0 dB speeds came out ~40 % too high; ``adaptive_band = false``
  takes the phase from the configured band instead.

Phase is differentiated in space and time by complex multiplication of electrodes, never
unwrapped (``service.waves._gradient``): neighbours give each electrode's gradient (PGD), and
electrodes far apart the array's mean gradient. Speed is the phase speed ``|ω| / |∇φ|`` (rad/s
over rad/m gives m/s: the 2π factors cancel), direction is the direction of propagation,
``-sign(ω) ∇φ``, as an angle in the convention of ``service.core.grid``.

What the array can resolve: the phase a plane wave accumulates across the array is
``2π f L / v`` (L ≈ 9.5 mm on the rig), 0.6 rad for 10 Hz at 1 m/s. At 0 dB the background's
phase noise is comparable to that, so waves whose wavelength is several times the array (slow
rhythms at high speeds) keep errors above 10 % whatever the estimator; see the bench's table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from service.core.checks import check_array, check_int, check_positive, check_type
from service.core.grid import DEFAULT_GRID, NOMINAL_RATE_HZ, ElectrodeGrid
from service.waves._band import PhaseBand
from service.waves._filter import CausalBandpass, analytic, design_bandpass, group_delay
from service.waves._gradient import baseline_chain, gradient_valid, phase_gradients
from service.waves._patterns import PATTERNS, CentreGeometry, centre_geometry, phase_correlations
from service.waves.settings import MIN_PAST_FRAMES, WaveSettings

MAX_ABS_UV = 1e12
"""Largest magnitude (µV) a live channel's frame may have: a megavolt, far beyond any
electrode's signal or stimulation artefact. The phase path multiplies analytic signals in
single precision, and from ~1e19 µV their sums overflow: a block of such values (a stream
read in the wrong units or byte order) failed as "'direction_deg' must not contain NaN",
which names no input."""
_MAD_TO_SD = 1.482602218505602
"""``1 / Φ⁻¹(3/4)``: scales a median absolute deviation to a Gaussian standard deviation."""


@dataclass(frozen=True, eq=False)
class WaveEstimate:
    """Per-frame wave estimates of one block; arrays are read-only.

    Attributes
    ----------
    speed_mps
        (T,) phase speed in m/s of the array's mean phase gradient; ``inf`` where the phase is
        the same on every electrode (no gradient: a flat or perfectly synchronous signal).
    direction_deg
        (T,) direction of propagation in degrees in [-180, 180), from +x (columns) toward +y
        (rows), as in ``service.core.grid``.
    pgd
        (T,) phase-gradient directionality in [0, 1]: ``|mean ∇φ| / mean |∇φ|`` over the
        electrodes, the fraction of the gradients that are aligned; 1 for a plane wave. 0
        where electrodes far apart contradict the gradient of nearer ones, which no plane
        wave does (a phase reversal, a standing wave: ``service.waves._gradient``).
    amplitude_uv
        (T,) mean analytic amplitude (envelope) of the band-passed signal over live channels,
        in the configured band.
    frequency_hz
        (T,) instantaneous frequency, amplitude-weighted over the array (negative only when
        the phase runs backward, e.g. in noise), in the phase band.
    pattern
        (T,) int8 index into ``PATTERNS``: planar, radial, rotating or disorganised
        (also every frame where no live electrode has live neighbours along both axes: with
        no gradient, no pattern is measured).
    phase_distance_corr
        (T,) best circular-linear correlation of phase with distance from a centre, in [0, 1]
        (high for radial waves).
    phase_angle_corr
        (T,) best circular-circular correlation of phase with polar angle around a centre,
        in [-1, 1]; positive for rotation from +x toward +y (high magnitude for rotating waves).
    envelope_uv
        (T, rows, cols) analytic amplitude per electrode in the configured band; 0 on dead
        channels. The policy locates the wave from it.
    delay_s
        (T,) group delay of the configured band-pass at the frame's frequency: the envelope,
        and so the wave's apparent position, lags the cortex by this much.
    channel_valid
        (rows, cols) the live channels the estimate used.
    n_predicted
        How many of the T frames, at the end, are predicted rather than measured.
    sample_rate_hz, grid
        Frame rate and geometry the estimate refers to.
    """

    speed_mps: np.ndarray
    direction_deg: np.ndarray
    pgd: np.ndarray
    amplitude_uv: np.ndarray
    frequency_hz: np.ndarray
    pattern: np.ndarray
    phase_distance_corr: np.ndarray
    phase_angle_corr: np.ndarray
    envelope_uv: np.ndarray
    delay_s: np.ndarray
    channel_valid: np.ndarray
    n_predicted: int
    sample_rate_hz: float
    grid: ElectrodeGrid = field(default=DEFAULT_GRID)

    def __post_init__(self) -> None:
        n = check_array("speed_mps", self.speed_mps, ndim=1).shape[0]
        for name in (
            "direction_deg",
            "pgd",
            "amplitude_uv",
            "frequency_hz",
            "pattern",
            "phase_distance_corr",
            "phase_angle_corr",
            "delay_s",
        ):
            check_array(name, getattr(self, name), shape=(n,))
        check_array("envelope_uv", self.envelope_uv, shape=(n, *self.grid.shape))
        check_array("channel_valid", self.channel_valid, shape=self.grid.shape, dtype=np.bool_)
        check_int("n_predicted", self.n_predicted, 0, n)
        for name, value in vars(self).items():
            if isinstance(value, np.ndarray) and value.dtype.kind == "f" and np.isnan(value).any():
                # inf has meanings here (no gradient: infinite speed); NaN never does.
                raise ValueError(f"'{name}' must not contain NaN")
            if isinstance(value, np.ndarray):
                view = value.view()  # read-only view: the caller's own array stays writable
                view.setflags(write=False)
                object.__setattr__(self, name, view)

    @property
    def n_frames(self) -> int:
        return int(self.speed_mps.shape[0])

    @property
    def predicted(self) -> slice:
        """Index of the predicted frames, e.g. ``estimate.pgd[estimate.predicted]``."""
        return slice(self.n_frames - self.n_predicted, self.n_frames)

    @property
    def pattern_names(self) -> tuple[str, ...]:
        """Pattern of each frame by name."""
        return tuple(PATTERNS[i] for i in self.pattern)


class WaveEstimator:
    """Estimates travelling-wave speed, direction, PGD, amplitude and pattern per frame.

    Stateless between calls: every block is estimated from its own frames, so the result
    depends only on the input and the settings (the scheduler hands over overlapping windows,
    and state carried between them would be stale or double-counted).

    Parameters
    ----------
    settings
        Filter band, block layout and classification thresholds.
    grid
        Electrode geometry (pitch sets the m/s scale); at least 2 rows and 2 columns.
    sample_rate_hz
        Frame rate of the blocks (sets the Hz and m/s scales).
    """

    def __init__(
        self,
        settings: WaveSettings | None = None,
        *,
        grid: ElectrodeGrid = DEFAULT_GRID,
        sample_rate_hz: float = NOMINAL_RATE_HZ,
    ) -> None:
        settings = WaveSettings() if settings is None else settings
        check_type("settings", settings, WaveSettings)
        check_type("grid", grid, ElectrodeGrid)
        check_positive("sample_rate_hz", sample_rate_hz)
        if grid.rows < 2 or grid.cols < 2:
            # A line of electrodes has no gradient across it and no electrode with both
            # components (no PGD), and the centre search has no candidates along it.
            raise ValueError(
                f"'grid' must have at least 2 rows and 2 columns (a phase gradient along both "
                f"axes), got {grid.rows}x{grid.cols}"
            )
        if not settings.high_hz < sample_rate_hz / 2:
            raise ValueError(
                f"'high_hz' must be below Nyquist ({sample_rate_hz / 2:g} Hz), "
                f"got {settings.high_hz!r}"
            )
        top = settings.phase_band_top_hz
        if settings.adaptive_band and not top < sample_rate_hz / 2:
            raise ValueError(
                f"'phase_band_octaves' must keep the phase band around 'high_hz' below Nyquist "
                f"({sample_rate_hz / 2:g} Hz), got {settings.phase_band_octaves!r} "
                f"(band up to {top:g} Hz)"
            )
        least = settings.min_extension_frames(sample_rate_hz)
        if settings.extension_frames is not None and settings.extension_frames < least:
            raise ValueError(
                f"'extension_frames' must be at least {least} (a quarter period of 'low_hz' "
                f"{settings.low_hz:g} Hz at {sample_rate_hz:g} Hz): with fewer the newest "
                f"frames' envelope droops, got {settings.extension_frames!r}"
            )
        self._settings = settings
        self._extension = settings.extension_at(sample_rate_hz)
        self._grid = grid
        self._fs = float(sample_rate_hz)
        self._bandpass = CausalBandpass(
            design_bandpass(settings.low_hz, settings.high_hz, settings.filter_order, self._fs)
        )
        self._delay_freqs, self._delays = group_delay(self._bandpass.sos, self._fs)
        self._phase_band = (
            PhaseBand(settings.low_hz, settings.high_hz, settings.phase_band_octaves, self._fs)
            if settings.adaptive_band
            else None
        )
        self._chains = (
            baseline_chain(grid.cols, settings.gradient_span),
            baseline_chain(grid.rows, settings.gradient_span),
        )
        self._all_live = np.ones(grid.shape, dtype=np.bool_)
        self._geometry: tuple[bytes, CentreGeometry, np.ndarray] | None = None

    @property
    def settings(self) -> WaveSettings:
        return self._settings

    @property
    def grid(self) -> ElectrodeGrid:
        return self._grid

    @property
    def sample_rate_hz(self) -> float:
        return self._fs

    @property
    def min_frames(self) -> int:
        """Shortest block ``estimate`` accepts: ``MIN_PAST_FRAMES`` + the predicted frames."""
        return MIN_PAST_FRAMES + self._settings.predicted_frames

    def estimate(self, frames: np.ndarray, channel_valid: np.ndarray | None = None) -> WaveEstimate:
        """Wave estimates for every frame of ``frames``.

        Parameters
        ----------
        frames
            (T, rows, cols) float32 µV: measured frames, oldest first, then the
            ``settings.predicted_frames`` predicted ones; T >= ``min_frames``. Values on dead
            channels are ignored (they may be NaN); live ones must be finite and at most
            ``MAX_ABS_UV``.
        channel_valid
            (rows, cols) bool, True for live channels; None means all are live. At least
            ``settings.min_live_fraction`` of the channels must be live.

        Raises
        ------
        TypeError, ValueError
            On a wrong type, dtype, shape or length, non-finite live values or ones beyond
            ``MAX_ABS_UV``, or too few live channels; the message names the argument and
            echoes what was received.
        """
        live = self._check_live(channel_valid)
        x = self._check_frames(frames, live, self.min_frames)
        y = self._bandpass(x)
        wide = analytic(y, self._settings.ar_order, self._extension)
        if self._phase_band is None:
            z = wide
        else:
            past = x.shape[0] - self._settings.predicted_frames
            z = self._phase_band.signal(x, y, wide, past)
        # Both are fresh arrays: zero the dead channels in place rather than multiplying every
        # channel by the mask.
        dead = ~live.ravel()
        if dead.any():
            wide[:, dead] = 0.0
            z[:, dead] = 0.0
        wide = wide.reshape(frames.shape)
        z = z.reshape(frames.shape)
        geometry, valid = self._geometry_for(live)

        grads = phase_gradients(z, self._grid.pitch_m, self._fs, valid, self._chains)
        gnorm = np.hypot(grads.gradient[:, 0], grads.gradient[:, 1])
        omega = grads.omega
        speed = np.divide(np.abs(omega), gnorm, out=np.full_like(gnorm, math.inf), where=gnorm > 0)
        # Phase fronts move down the gradient when the phase advances (ω > 0), up it otherwise.
        sign = np.where(omega < 0, 1.0, -1.0)
        direction = np.degrees(np.arctan2(sign * grads.gradient[:, 1], sign * grads.gradient[:, 0]))
        direction = (direction + 180.0) % 360.0 - 180.0

        envelope = np.abs(wide)
        amplitude = envelope.sum(axis=(1, 2), dtype=np.float64) / np.count_nonzero(live)
        radial, rotating = phase_correlations(z, geometry)
        frequency = omega / (2 * math.pi)
        return WaveEstimate(
            speed_mps=speed,
            direction_deg=direction,
            pgd=grads.pgd,
            amplitude_uv=amplitude,
            frequency_hz=frequency,
            pattern=self._classify(grads.pgd, radial, rotating, bool(valid.any())),
            phase_distance_corr=radial,
            phase_angle_corr=rotating,
            envelope_uv=envelope,
            delay_s=np.interp(np.abs(frequency), self._delay_freqs, self._delays),
            channel_valid=live.copy(),
            n_predicted=self._settings.predicted_frames,
            sample_rate_hz=self._fs,
            grid=self._grid,
        )

    def robust_sd(self, frames: np.ndarray, channel_valid: np.ndarray | None = None) -> float:
        """Robust standard deviation (µV) of the band-passed background, for the policy.

        The policy compares ``WaveEstimate.amplitude_uv`` with this, so it is computed in the
        same band. The median absolute deviation, pooled over live channels and scaled to a
        Gaussian s.d., ignores the minority of samples a passing wave or artefact makes large;
        pass a long stretch of measured frames (seconds), not the block being judged, or a
        sustained wave becomes its own baseline. The oldest frames, where the causal filter
        is still settling, are left out (one period of ``low_hz``, at most half the frames).

        Parameters
        ----------
        frames
            (T, rows, cols) float32 µV measured frames, T >= ``MIN_PAST_FRAMES``.
        channel_valid
            (rows, cols) bool live channels, as for ``estimate``.
        """
        live = self._check_live(channel_valid)
        x = self._check_frames(frames, live, MIN_PAST_FRAMES)
        y = self._bandpass(x)[:, live.ravel()]
        settle = min(y.shape[0] // 2, math.ceil(self._fs / self._settings.low_hz))
        y = y[settle:]
        deviation = np.abs(y - np.median(y, axis=0))
        return float(_MAD_TO_SD * np.median(deviation))

    @property
    def live_needed(self) -> int:
        """Live channels an estimate needs (``min_live_fraction`` of the grid): with fewer,
        :meth:`estimate` and :meth:`robust_sd` refuse the block."""
        return math.ceil(self._settings.min_live_fraction * self._all_live.size)

    def _check_live(self, channel_valid: np.ndarray | None) -> np.ndarray:
        if channel_valid is None:
            return self._all_live
        live = check_array("channel_valid", channel_valid, shape=self._grid.shape, dtype=np.bool_)
        n_live = int(np.count_nonzero(live))
        need = self.live_needed
        if n_live < need:
            raise ValueError(
                f"'channel_valid' must leave at least {need} of {live.size} channels live "
                f"(min_live_fraction={self._settings.min_live_fraction:g}), got {n_live}"
            )
        return live

    def _check_frames(self, frames: np.ndarray, live: np.ndarray, min_frames: int) -> np.ndarray:
        """Validate ``frames`` and return them as (T, channels) float64, dead channels zeroed."""
        check_array("frames", frames, shape=(None, *self._grid.shape), dtype=np.float32)
        n = frames.shape[0]
        if n < min_frames:
            raise ValueError(
                f"'frames' must hold at least {min_frames} frames "
                f"({MIN_PAST_FRAMES} measured + {min_frames - MIN_PAST_FRAMES} predicted), "
                f"got {n}"
            )
        x = frames.reshape(n, -1).astype(np.float64)
        x[:, ~live.ravel()] = 0.0
        peak = float(np.max(np.abs(x)))
        if not peak <= MAX_ABS_UV:  # NaN too
            finite = np.isfinite(x)
            if not finite.all():
                bad = x.size - int(np.count_nonzero(finite))
                raise ValueError(
                    f"'frames' must be finite on live channels, got {bad} NaN/inf value(s) "
                    f"(mark broken channels dead in 'channel_valid')"
                )
            raise ValueError(
                f"'frames' must be at most {MAX_ABS_UV:g} µV in magnitude on live channels, got "
                f"{peak:.3g} µV (a stream in other units, or corrupt values: mark such "
                f"channels dead in 'channel_valid')"
            )
        return x

    def _geometry_for(self, live: np.ndarray) -> tuple[CentreGeometry, np.ndarray]:
        """Centre geometry and gradient-valid mask for ``live``, cached for the last mask."""
        key = live.tobytes()
        cached = self._geometry
        if cached is None or cached[0] != key:
            cached = (
                key,
                centre_geometry(self._grid, live, self._settings.centre_step),
                gradient_valid(live),
            )
            self._geometry = cached
        return cached[1], cached[2]

    def _classify(
        self, pgd: np.ndarray, radial: np.ndarray, rotating: np.ndarray, has_gradient: bool
    ) -> np.ndarray:
        """Planar if aligned enough, else rotating, else radial, else disorganised.

        Rotation is tested before radial spread because a spiral's phase also grows with the
        distance from its centre (it has both correlations), while a radial wave's phase does
        not turn with the polar angle.

        Every frame is disorganised where no electrode has a gradient (``has_gradient``
        False: none is live with a live neighbour along both axes, as when alternate columns
        are dead, a lost multiplexer line, yet enough channels live). The PGD is then 0 on
        every frame, and the correlations alone, over electrodes in lines, read a plane wave
        as radial or rotating: a pattern named on ``/status`` that nothing measured.
        """
        s = self._settings
        label = np.full(pgd.shape, PATTERNS.index("disorganised"), dtype=np.int8)
        if not has_gradient:
            return label
        turn = np.abs(rotating)
        label[radial >= s.radial_min_corr] = PATTERNS.index("radial")
        label[turn >= s.rotating_min_corr] = PATTERNS.index("rotating")
        label[pgd >= s.planar_pgd] = PATTERNS.index("planar")
        return label
