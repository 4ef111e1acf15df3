"""Configuration of the stimulation policy: the ``[policy]`` section of the TOML file.

Defaults are conservative: with no target region configured the policy never requests, and the
default pulse train is far below the clinical charge-density limit. The firmware bridge applies
its own interlocks to whatever the policy asks for; the checks here only make a bad request
impossible to configure in the first place.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from firmware_bridge import MAX_ELECTRODE_AREA_CM2, StimulationRequest

CHARGE_DENSITY_LIMIT_UC_PER_CM2 = 25.0
"""Clinical limit on charge density per phase (the RNS limit), µC/cm²."""

# Strict: a JSON ``true`` or ``"5"`` is not a number here (lax pydantic reads ``[0, false]`` as
# electrode (0, 0)); ints are taken where a float is due. Environment overrides still parse, as
# ``service.config.Settings`` is strict (pydantic-settings then parses them by the field's type).
_Float = Annotated[float, Field(strict=True, allow_inf_nan=False)]
_Positive = Annotated[_Float, Field(gt=0.0)]
_AreaCm2 = Annotated[_Float, Field(gt=0.0, le=MAX_ELECTRODE_AREA_CM2)]  # the bridge's bound
_Int = Annotated[int, Field(strict=True)]
_Electrode = tuple[Annotated[_Int, Field(ge=0)], Annotated[_Int, Field(ge=0)]]


class StimulationParameters(BaseModel):
    """The pulse train a request asks for (biphasic, charge-balanced; the bridge builds it).

    Fields have the names, units and integer steps of the bridge's ``StimulationRequest``:
    ``to_request`` passes every one through by name, channels as electrode indices. Only the
    limits differ: these are what may be configured, the request's what can be encoded.

    Attributes
    ----------
    channels
        Electrodes to stimulate as ``(row, col)``; empty means the policy's target region.
    amplitude_ua
        Current per electrode and phase, µA.
    phase_width_us
        Duration of each phase, µs.
    frequency_hz
        Pulses per second within the train.
    train_duration_ms
        Length of the train, ms.
    electrode_area_cm2
        Geometric area of one stimulating contact, cm² (3.0e-4: a 200 µm disc, 3.14e-4, rounded
        down as the bridge's interlock default is; it must not exceed that one), which
        turns charge per phase into charge density.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels: tuple[_Electrode, ...] = ()
    amplitude_ua: Annotated[_Int, Field(ge=1, le=1000)] = 10
    phase_width_us: Annotated[_Int, Field(ge=1, le=1000)] = 100
    frequency_hz: Annotated[_Int, Field(ge=1, le=500)] = 100
    train_duration_ms: Annotated[_Int, Field(ge=1, le=1000)] = 50
    electrode_area_cm2: _AreaCm2 = 3.0e-4

    @property
    def charge_density_uc_per_cm2(self) -> float:
        """Charge per phase over contact area (µA x µs = pC = 1e-6 µC)."""
        return self.amplitude_ua * self.phase_width_us * 1e-6 / self.electrode_area_cm2

    def channel_indices(self, cols: int) -> tuple[int, ...]:
        """Channels as row-major electrode indices on an array ``cols`` electrodes wide."""
        return tuple(row * cols + col for row, col in self.channels)

    def to_request(self, cols: int) -> StimulationRequest:
        """The bridge's request for this train on an array ``cols`` electrodes wide.

        No field is listed here: a field of one type the other lacks fails construction."""
        train = self.model_dump(exclude={"channels"})
        return StimulationRequest(channels=self.channel_indices(cols), **train)

    @model_validator(mode="after")
    def _check_train(self) -> StimulationParameters:
        density = self.charge_density_uc_per_cm2
        if density > CHARGE_DENSITY_LIMIT_UC_PER_CM2:
            raise ValueError(
                f"'amplitude_ua' x 'phase_width_us' / 'electrode_area_cm2' must give a charge "
                f"density <= {CHARGE_DENSITY_LIMIT_UC_PER_CM2:g} µC/cm² per phase, got "
                f"{density:.3g} µC/cm² ({self.amplitude_ua} µA, {self.phase_width_us} µs, "
                f"{self.electrode_area_cm2:g} cm²)"
            )
        if len(set(self.channels)) != len(self.channels):
            raise ValueError(f"'channels' must not repeat an electrode, got {self.channels}")
        return self


class PolicySettings(BaseModel):
    """Thresholds that must all hold, on enough consecutive predicted frames, to request.

    Attributes
    ----------
    target_electrodes
        The region to protect, as ``(row, col)`` electrodes; empty (the default) means no
        target, and the policy never requests.
    min_pgd
        Phase-gradient directionality each frame needs: below it the wave has no reliable
        direction.
    min_speed_mps, max_speed_mps
        Range of phase speeds treated as a travelling wave (outside it: synchrony, noise or a
        wave too slow to matter within the prediction).
    min_amplitude_sd
        Mean envelope each frame needs, in units of the background's robust s.d.
        (``WaveEstimator.robust_sd``); band-limited noise alone sits near 1.25.
    max_direction_error_deg
        Largest angle between the direction of propagation and the direction from the wave to
        the target region's centre.
    min_lead_ms, max_lead_ms
        Window for the predicted arrival of the wavefront at the target region, counted from
        the moment of the decision (the lead from the newest measured frame, less that frame's
        age then): less leaves no time to deliver, more is extrapolated too far beyond the
        prediction to trust (the next decisions will see the wave again).
    persistence_frames
        Consecutive predicted frames on which every threshold must hold together; at most
        the predicted frames each decision sees (``service.policy.limits.PREDICTED_FRAMES``,
        checked where a policy is set).
    stimulation
        The pulse train a request asks for.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_electrodes: tuple[_Electrode, ...] = ()
    min_pgd: Annotated[_Float, Field(ge=0.0, le=1.0)] = 0.6
    min_speed_mps: _Positive = 0.05
    max_speed_mps: _Positive = 1.0
    min_amplitude_sd: _Positive = 3.0
    max_direction_error_deg: Annotated[_Float, Field(ge=0.0, le=180.0)] = 45.0
    min_lead_ms: Annotated[_Float, Field(ge=0.0)] = 5.0
    max_lead_ms: _Positive = 100.0
    persistence_frames: Annotated[_Int, Field(ge=1, le=1024)] = 8
    stimulation: StimulationParameters = StimulationParameters()

    @model_validator(mode="after")
    def _check_ranges(self) -> PolicySettings:
        if not self.min_speed_mps < self.max_speed_mps:
            raise ValueError(
                f"'min_speed_mps' must be < 'max_speed_mps', got {self.min_speed_mps!r} and "
                f"{self.max_speed_mps!r}"
            )
        if not self.min_lead_ms < self.max_lead_ms:
            raise ValueError(
                f"'min_lead_ms' must be < 'max_lead_ms', got {self.min_lead_ms!r} and "
                f"{self.max_lead_ms!r}"
            )
        if len(set(self.target_electrodes)) != len(self.target_electrodes):
            raise ValueError(
                f"'target_electrodes' must not repeat an electrode, got {self.target_electrodes}"
            )
        return self
