"""Stimulation policy: from the predicted wave, whether to request a pulse train, and when.

The policy is a pure function of its settings, the wave estimate and the background's robust
s.d.: no state, no clock, no randomness, so a decision can be replayed exactly from a recorded
session. It only *requests*; the firmware bridge's interlocks decide what is sent.

A request needs every threshold (PGD, speed range, amplitude, direction toward the target
region, lead time to arrival) to hold together on ``persistence_frames`` consecutive predicted
frames. Otherwise the decision names the first threshold, in that order, that falls short.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from service.core.checks import check_number, check_positive, check_range, check_type
from service.core.grid import DEFAULT_GRID, NOMINAL_RATE_HZ, ElectrodeGrid
from service.policy._arrival import arrival
from service.policy.limits import PolicyLimitError, off_grid
from service.policy.settings import PolicySettings, StimulationParameters
from service.waves.estimator import WaveEstimate

CHECKS: tuple[str, ...] = ("pgd", "speed", "amplitude", "direction", "lead_time")
"""Per-frame thresholds in the order they are reported when blocking."""


@dataclass(frozen=True)
class StimulationDecision:
    """One decision, fired or blocked, with why.

    Attributes
    ----------
    request
        True to ask the firmware bridge for a pulse train.
    check
        What decided: ``"ok"`` for a request, else ``"target"`` (no target region), one of
        ``CHECKS``, or ``"persistence"`` (each threshold holds somewhere, never long enough
        together).
    reason
        Human-readable sentence naming the deciding threshold, its value and its limit.
    lead_time_s
        Predicted arrival of the wavefront at the target region, in seconds after the newest
        measured frame (the lead window was judged on what is left of it once the data's age
        is counted, ``decide``'s ``data_age_s``); the median over the frames of the qualifying
        run. None when not requested.
    parameters
        The pulse train that is (or would have been) requested, channels resolved.
    run_start
        Index, among the predicted frames, of the first frame of the qualifying run (the first
        of the longest); None when not requested.
    run_length
        Longest run of consecutive predicted frames on which every threshold held together.
    """

    request: bool
    check: str
    reason: str
    lead_time_s: float | None
    parameters: StimulationParameters
    run_start: int | None
    run_length: int


class StimulationPolicy:
    """Decides from a ``WaveEstimate`` whether to request stimulation, and the lead time.

    Parameters
    ----------
    settings
        Thresholds, target region and pulse train.
    grid
        Electrode geometry; target and stimulation electrodes must lie on it.
    sample_rate_hz
        Frame rate; estimates at another rate are refused.
    """

    def __init__(
        self,
        settings: PolicySettings | None = None,
        *,
        grid: ElectrodeGrid = DEFAULT_GRID,
        sample_rate_hz: float = NOMINAL_RATE_HZ,
    ) -> None:
        settings = PolicySettings() if settings is None else settings
        check_type("settings", settings, PolicySettings)
        check_type("grid", grid, ElectrodeGrid)
        check_positive("sample_rate_hz", sample_rate_hz)
        if problems := off_grid(settings, grid):
            raise PolicyLimitError(problems)
        self._settings = settings
        self._grid = grid
        self._fs = float(sample_rate_hz)
        channels = settings.stimulation.channels or settings.target_electrodes
        self._parameters = settings.stimulation.model_copy(update={"channels": channels})
        x, y = grid.positions_m()
        self._x, self._y = x, y
        if settings.target_electrodes:
            rows, cols = np.array(settings.target_electrodes).T
            self._target_x, self._target_y = x[rows, cols], y[rows, cols]
        else:
            self._target_x = self._target_y = np.empty(0)

    @property
    def settings(self) -> PolicySettings:
        return self._settings

    @property
    def parameters(self) -> StimulationParameters:
        """The pulse train every request asks for (channels resolved)."""
        return self._parameters

    def decide(
        self, estimate: WaveEstimate, robust_sd_uv: float, *, data_age_s: float = 0.0
    ) -> StimulationDecision:
        """Decide from the predicted frames of ``estimate``.

        Parameters
        ----------
        estimate
            Output of ``WaveEstimator.estimate``; only its predicted frames are used.
        robust_sd_uv
            Robust s.d. of the band-passed background from a long stretch of measured frames
            (``WaveEstimator.robust_sd``), in µV; sets the amplitude scale.
        data_age_s
            How long ago the newest measured frame became available, now: the predicted
            arrival is counted from that frame, so this much of the lead has already gone.
            The lead window (``min_lead_ms``, ``max_lead_ms``) is judged on what is left:
            judged on the whole lead, a wave arriving in 5 ms on data 6 ms old would be
            requested after it had arrived.

        Raises
        ------
        TypeError, ValueError
            If the estimate is not a ``WaveEstimate``, refers to another grid or rate, holds
            fewer predicted frames than ``persistence_frames``, ``robust_sd_uv`` is not a
            finite positive number, or ``data_age_s`` is not a finite number >= 0.
        """
        self._check_inputs(estimate, robust_sd_uv)
        check_range("data_age_s", data_age_s, 0.0)
        s = self._settings
        if not s.target_electrodes:
            return self._blocked(
                "target", "blocked: no target region configured (policy.target_electrodes)", 0
            )
        n = estimate.n_predicted
        values = self._frame_values(estimate, robust_sd_uv, data_age_s)
        passes = _passes(values, s)
        need = s.persistence_frames
        together = np.logical_and.reduce([passes[name] for name in CHECKS])
        start, length = longest_run(together)

        for name in CHECKS:
            if longest_run(passes[name])[1] < need:
                reason = _reason(name, values[name], passes[name], s, data_age_s)
                return self._blocked(name, reason, length)
        if length < need:
            return self._blocked(
                "persistence",
                f"blocked: all thresholds hold together on at most {length} consecutive "
                f"predicted frames < {need} required",
                length,
            )
        run = slice(start, start + length)
        lead = float(np.median(values["lead_time"][run])) + data_age_s  # from the newest frame
        return StimulationDecision(
            request=True,
            check="ok",
            reason=(
                f"request: all thresholds hold on predicted frames {run.start + 1}-{run.stop} "
                f"of {n} (>= {need} consecutive); wavefront reaches the target in "
                f"{1e3 * lead:.1f} ms"
            ),
            lead_time_s=lead,
            parameters=self._parameters,
            run_start=run.start,
            run_length=length,
        )

    def _frame_values(
        self, estimate: WaveEstimate, robust_sd_uv: float, data_age_s: float = 0.0
    ) -> dict[str, np.ndarray]:
        """Per predicted frame, the value each threshold is compared with (the lead time:
        what is left of it after ``data_age_s``)."""
        tail = estimate.predicted
        n = estimate.n_predicted
        where = arrival(
            envelope=estimate.envelope_uv[tail],
            live=estimate.channel_valid,
            direction_deg=estimate.direction_deg[tail],
            speed_mps=estimate.speed_mps[tail],
            delay_s=estimate.delay_s[tail],
            frame_time_s=np.arange(1, n + 1) / self._fs,
            threshold_uv=self._settings.min_amplitude_sd * robust_sd_uv,
            positions=(self._x, self._y),
            target=(self._target_x, self._target_y),
            pitch_m=self._grid.pitch_m,
        )
        return {
            "pgd": estimate.pgd[tail],
            "speed": estimate.speed_mps[tail],
            "amplitude": estimate.amplitude_uv[tail] / robust_sd_uv,
            "direction": where.direction_error_deg,
            "lead_time": where.lead_s - data_age_s,  # ±inf (arrived, unknown) stay so
        }

    def _blocked(self, check: str, reason: str, run_length: int) -> StimulationDecision:
        return StimulationDecision(
            request=False,
            check=check,
            reason=reason,
            lead_time_s=None,
            parameters=self._parameters,
            run_start=None,
            run_length=run_length,
        )

    def _check_inputs(self, estimate: WaveEstimate, robust_sd_uv: float) -> None:
        check_type("estimate", estimate, WaveEstimate)
        check_number("robust_sd_uv", robust_sd_uv)
        if not (math.isfinite(robust_sd_uv) and robust_sd_uv > 0):
            raise ValueError(
                f"'robust_sd_uv' must be a finite number > 0 (the background's robust s.d.), "
                f"got {robust_sd_uv!r}"
            )
        if not estimate.grid.same_array(self._grid):
            raise ValueError(
                f"'estimate' must be on the policy's grid {self._grid}, got {estimate.grid}"
            )
        if not math.isclose(estimate.sample_rate_hz, self._fs, rel_tol=1e-9):
            raise ValueError(
                f"'estimate' must be at {self._fs:g} Hz like the policy, got "
                f"{estimate.sample_rate_hz:g} Hz"
            )
        need = self._settings.persistence_frames
        if estimate.n_predicted < need:
            raise ValueError(
                f"'estimate' must hold at least persistence_frames={need} predicted frames, "
                f"got {estimate.n_predicted}"
            )


def _passes(values: dict[str, np.ndarray], s: PolicySettings) -> dict[str, np.ndarray]:
    """Per predicted frame, whether each threshold holds.

    Non-finite values never pass: a ``WaveEstimate`` may hold inf (NaN it refuses), and an
    infinite PGD or amplitude would clear a lower bound that measures nothing."""
    lead_ms = 1e3 * values["lead_time"]
    within = {
        "pgd": values["pgd"] >= s.min_pgd,
        "speed": (values["speed"] >= s.min_speed_mps) & (values["speed"] <= s.max_speed_mps),
        "amplitude": values["amplitude"] >= s.min_amplitude_sd,
        "direction": values["direction"] <= s.max_direction_error_deg,
        "lead_time": (lead_ms >= s.min_lead_ms) & (lead_ms <= s.max_lead_ms),
    }
    return {name: ok & np.isfinite(values[name]) for name, ok in within.items()}


def _reason(
    name: str,
    values: np.ndarray,
    passed: np.ndarray,
    s: PolicySettings,
    data_age_s: float,
) -> str:
    """Why ``name`` blocked: its median over the failing frames, the rule, and how often."""
    failing = values[~passed]
    count = f"on {failing.size} of {passed.size} predicted frames"
    if name == "lead_time":
        return f"blocked: {_lead_rule(failing, s, data_age_s)} {count}"
    value = float(np.median(failing))
    if name == "pgd":
        rule = f"pgd {value:.2f} < {s.min_pgd:.2f}"
    elif name == "speed":
        rule = f"speed {value:.3g} m/s outside [{s.min_speed_mps:g}, {s.max_speed_mps:g}] m/s"
    elif name == "amplitude":
        rule = f"amplitude {value:.2f} sd < {s.min_amplitude_sd:g} sd"
    else:
        rule = f"direction {value:.0f}° off the target > {s.max_direction_error_deg:g}°"
    return f"blocked: {rule} {count}"


def _lead_rule(failing: np.ndarray, s: PolicySettings, data_age_s: float = 0.0) -> str:
    """The commonest way the lead time failed: arrived, unpredictable, or out of the window
    (what is left of it after the data's age)."""
    arrived = int(np.count_nonzero(failing == -math.inf))
    unknown = int(np.count_nonzero(failing == math.inf))
    finite = failing[np.isfinite(failing)]
    if arrived >= max(unknown, finite.size):
        return "wavefront already at the target region (it has crossed the array)"
    if unknown >= finite.size:
        return "arrival at the target cannot be predicted (no wave above threshold, or no speed)"
    value = 1e3 * float(np.median(finite))
    left = f" left on data {1e3 * data_age_s:.1f} ms old" if data_age_s > 0 else ""
    return f"lead time{left} {value:.1f} ms outside [{s.min_lead_ms:g}, {s.max_lead_ms:g}] ms"


def longest_run(flags: np.ndarray) -> tuple[int, int]:
    """Start and length of the first longest run of True in ``flags`` ((0, 0) if none): how
    many consecutive predicted frames hold together, against ``persistence_frames``."""
    padded = np.concatenate([[False], flags, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    if edges.size == 0:
        return 0, 0
    starts, stops = edges[::2], edges[1::2]
    best = int(np.argmax(stops - starts))
    return int(starts[best]), int(stops[best] - starts[best])
