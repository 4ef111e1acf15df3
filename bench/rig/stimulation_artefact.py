"""The stimulation artefact a pulse train puts on the recorded µECoG array.

On a rig every delivered train shows on the recording: a large transient at every pulse,
largest at and around the stimulated electrodes, that decays over a few milliseconds, and after
the train an amplifier recovery tail of tens of milliseconds. :class:`StimulationArtefact` adds
that to the simulated rig's frames, for the trains the stimulator (the firmware emulator, or
anything with the same ``pulses`` log) actually delivered, so the daemon has a real artefact to
blank.

The model, per train delivered at ``t0`` on the stimulator's clock, with ``P`` pulses at
``t0 + k / f`` over ``D`` seconds (``P = f * D``, as the firmware counts them):

- space: each stimulated contact is a point current source of the train's amplitude ``I`` in
  homogeneous cortex, so electrode ``e`` sees ``I / (4 pi sigma sqrt(r^2 + a^2))`` summed over
  the stimulated contacts, with ``r`` its distance to the contact and ``a`` the contact's
  radius (from its area: the potential stays finite on the contact itself);
- time: each pulse leaves a transient of that peak decaying as ``exp(-dt / tau_pulse)``
  (sampled at the frames' own times, so at 277.78 Hz the frames catch it at varying phases, as
  a real amplifier does); after the last pulse a recovery tail of a fraction of the peak
  decays over ``recovery`` seconds and reaches exactly zero at its end;
- the amplifier: the sum is clipped to its input range, as a saturated channel reads.

It is zero outside ``[t0, t0 + D + recovery]``: that window is where a frame carries it.

Clocks: the emulator stamps a train with its injected clock (``time.monotonic`` unless a test
gives another), and the rig stamps frames with ``pylsl.local_clock``. liblsl's clock is C++'s
``steady_clock``, which on Linux is ``CLOCK_MONOTONIC``, the clock of ``time.monotonic``: the
two read the same (measured here to a few µs). Other platforms need not agree, so the offset
between them is measured when the artefact is made, unless given.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any, Protocol

import numpy as np
import pylsl

from service.core.checks import check_array, check_number, check_type
from service.core.grid import DEFAULT_GRID, ElectrodeGrid

__all__ = ["PulseLog", "StimulationArtefact"]

CONDUCTIVITY_S_PER_M = 0.3
"""Grey matter's conductivity (0.2-0.4 S/m in the literature): sets the potential a current
source makes at a distance, hence the mV scale of the artefact."""
PULSE_TAU_S = 1.0e-3
"""Decay time of each pulse's transient: the amplifier's anti-alias filter and the contacts'
double layer settle within a few ms of a pulse."""
TAIL_FRACTION = 0.1
"""The recovery tail starts at this fraction of the per-pulse peak: the offset the train's
slight charge imbalance and the amplifier's saturation leave behind."""
TAIL_TAU_S = 15e-3
"""Decay time of that tail: the amplifier's high-pass recovering, tens of ms."""
RECOVERY_S = 60e-3
"""The tail's length (four time constants): it is shifted to reach zero here, so a frame
after it carries nothing and a blanker has a finite window to blank."""
RAIL_UV = 5000.0
"""The amplifier's input range (±5 mV, an Intan RHD2000's): a channel near the contacts reads
its rail, not the tens of mV the point source gives there."""

_OFFSET_READS = 5


class PulseLog(Protocol):
    """What delivered trains: ``FirmwareEmulator`` is one. Each record holds ``clock`` (the
    delivery time on the stimulator's monotonic clock, s), ``train_duration_ms``, ``channels``
    (row-major electrode indices), ``amplitude_ua``, ``frequency_hz`` and
    ``electrode_area_cm2``."""

    @property
    def pulses(self) -> Sequence[Mapping[str, Any]]: ...


@dataclass(frozen=True)
class _Train:
    """One delivered train, checked, on the LSL clock, with its per-electrode peak (µV)."""

    start: float
    duration_s: float
    frequency_hz: float
    n_pulses: int
    peak_uv: np.ndarray  # (n_electrodes,) float64

    @property
    def end(self) -> float:
        """When the last frame that carries it is stamped (train plus recovery)."""
        return self.start + self.duration_s + RECOVERY_S

    def envelope(self, t: np.ndarray) -> np.ndarray:
        """Its time course at ``t`` (LSL clock): 1 just after a lone pulse, 0 outside."""
        inside = (t >= self.start) & (t <= self.end)
        s = np.clip(t - self.start, 0.0, self.end - self.start)  # no overflow far outside
        period = 1.0 / self.frequency_hz
        # The newest pulse at or before t; the older ones add a geometric series.
        last = np.clip(np.floor(s * self.frequency_hz), 0, self.n_pulses - 1)
        since = s - last * period
        ratio = math.exp(-period / PULSE_TAU_S)
        pulses = np.exp(-since / PULSE_TAU_S) * (1.0 - ratio ** (last + 1)) / (1.0 - ratio)
        floor = math.exp(-RECOVERY_S / TAIL_TAU_S)
        after = np.maximum(s - self.duration_s, 0.0)
        tail = TAIL_FRACTION * (np.exp(-after / TAIL_TAU_S) - floor) / (1.0 - floor)
        tail = np.where(s > self.duration_s, tail, 0.0)
        return np.where(inside, pulses + tail, 0.0)


class StimulationArtefact:
    """The artefact of the trains ``pulse_log`` delivered, for frames stamped on the LSL clock.

    Parameters
    ----------
    pulse_log
        The stimulator's record of delivered trains, read anew at every call (it grows).
    grid
        The recorded array: the trains' channels are its row-major electrode indices.
    clock_offset_s
        ``pylsl.local_clock() - stimulator clock``; None measures it now against
        ``time.monotonic`` (the emulator's default clock). Give ``0.0`` for a log whose
        ``clock`` is already LSL time.

    Notes
    -----
    A record that cannot be a delivered train (a negative duration, a channel not on ``grid``)
    raises ValueError naming the record, at the first call that reads it.
    """

    def __init__(
        self,
        pulse_log: PulseLog,
        grid: ElectrodeGrid = DEFAULT_GRID,
        *,
        clock_offset_s: float | None = None,
    ) -> None:
        check_type("grid", grid, ElectrodeGrid)
        if not hasattr(pulse_log, "pulses"):
            raise TypeError(
                f"'pulse_log' must have a 'pulses' log of delivered trains (as "
                f"FirmwareEmulator has), got {type(pulse_log).__name__}"
            )
        if clock_offset_s is None:
            clock_offset_s = _lsl_minus_monotonic()
        check_number("clock_offset_s", clock_offset_s)
        if not math.isfinite(clock_offset_s):
            raise ValueError(f"'clock_offset_s' must be finite, got {clock_offset_s!r}")
        self.pulse_log = pulse_log
        self.grid = grid
        self.clock_offset_s = float(clock_offset_s)
        x, y = grid.positions_m()
        self._x, self._y = x.ravel(), y.ravel()
        self._trains: list[_Train] = []
        self._starts = np.zeros(0)
        self._ends = np.zeros(0)

    @property
    def windows(self) -> list[tuple[float, float]]:
        """``(first, last)`` LSL times of the frames each delivered train so far can reach."""
        self._read_log()
        return [(train.start, train.end) for train in self._trains]

    def at(self, timestamps: np.ndarray) -> np.ndarray:
        """The additive artefact (µV) for frames stamped ``timestamps`` (LSL clock), shaped
        ``(n, rows, cols)`` float32; zero for a frame no train reaches."""
        t = check_array("timestamps", np.asarray(timestamps, dtype=np.float64), ndim=1)
        if not np.isfinite(t).all():
            raise ValueError("'timestamps' must be finite, got NaN/inf")
        out = np.zeros((t.shape[0], self.grid.n_channels), dtype=np.float64)
        self._read_log()
        if t.size:
            reaching = np.flatnonzero((self._starts <= t.max()) & (self._ends >= t.min()))
            for index in reaching:
                train = self._trains[index]
                out += np.outer(train.envelope(t), train.peak_uv)
        np.clip(out, -RAIL_UV, RAIL_UV, out=out)
        return out.astype(np.float32).reshape(t.shape[0], *self.grid.shape)

    def _read_log(self) -> None:
        """Check and place the records delivered since the last read (the log only grows)."""
        records = self.pulse_log.pulses
        if len(records) == len(self._trains):
            return
        for number in range(len(self._trains), len(records)):
            self._trains.append(self._train(number, records[number]))
        self._starts = np.array([train.start for train in self._trains])
        self._ends = np.array([train.end for train in self._trains])

    def _train(self, number: int, record: Mapping[str, Any]) -> _Train:
        where = f"pulse record {number}"
        clock = _number(where, "clock", record, positive=False)
        fields = {
            key: _number(where, key, record)
            for key in ("train_duration_ms", "amplitude_ua", "frequency_hz", "electrode_area_cm2")
        }
        channels = _channels(where, record, self.grid)
        duration_s = fields["train_duration_ms"] / 1000.0
        frequency = fields["frequency_hz"]
        # The firmware's count; a train it delivered has at least its first pulse.
        n_pulses = max(1, int(frequency * fields["train_duration_ms"] // 1000))
        radius_m = math.sqrt(fields["electrode_area_cm2"] * 1e-4 / math.pi)
        rows, cols = np.divmod(channels, self.grid.cols)
        dx = self._x[:, None] - cols[None, :] * self.grid.pitch_m
        dy = self._y[:, None] - rows[None, :] * self.grid.pitch_m
        distance = np.sqrt(dx**2 + dy**2 + radius_m**2)
        current_a = fields["amplitude_ua"] * 1e-6
        peak_uv = (current_a / (4 * math.pi * CONDUCTIVITY_S_PER_M * distance)).sum(axis=1) * 1e6
        return _Train(
            start=clock + self.clock_offset_s,
            duration_s=duration_s,
            frequency_hz=frequency,
            n_pulses=n_pulses,
            peak_uv=peak_uv,
        )


def _number(where: str, key: str, record: Mapping[str, Any], *, positive: bool = True) -> float:
    """``record[key]`` as a finite (and, if ``positive``, > 0) float, or a ValueError."""
    if key not in record:
        raise ValueError(f"{where} has no '{key}', only {sorted(record)!r}")
    value = record[key]
    check_number(f"{where}: {key}", value)
    if not (math.isfinite(value) and (value > 0 or not positive)):
        rule = "finite number > 0" if positive else "finite number"
        raise ValueError(f"{where}: '{key}' must be a {rule}, got {value!r}")
    return float(value)


def _channels(where: str, record: Mapping[str, Any], grid: ElectrodeGrid) -> np.ndarray:
    channels = record.get("channels")
    if not isinstance(channels, Sequence) or len(channels) == 0:
        raise ValueError(f"{where}: 'channels' must be a non-empty list, got {channels!r}")
    for channel in channels:
        if isinstance(channel, bool) or not isinstance(channel, Integral):
            raise ValueError(f"{where}: channel {channel!r} is not an electrode index")
        if not 0 <= channel < grid.n_channels:
            raise ValueError(
                f"{where}: channel {channel} is not on the {grid.rows}x{grid.cols} grid "
                f"(electrodes 0..{grid.n_channels - 1})"
            )
    return np.asarray(channels, dtype=np.int64)


def _lsl_minus_monotonic() -> float:
    """``pylsl.local_clock() - time.monotonic()``, from the tightest of a few bracketed reads
    (0 to within µs on Linux, where both are CLOCK_MONOTONIC)."""
    best_width, offset = math.inf, 0.0
    for _ in range(_OFFSET_READS):
        before = time.monotonic()
        lsl = pylsl.local_clock()
        after = time.monotonic()
        if after - before < best_width:
            best_width, offset = after - before, lsl - (before + after) / 2
    return offset
