"""What a synthetic session contains: length, seed, background, episodes and artefacts."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from bench.data.synth._episode import FREQUENCY_RANGE_HZ, Episode
from bench.data.synth._registry import EPISODE_KINDS, lookup
from bench.data.synth.artefacts import Artefacts
from bench.data.synth.background import Background
from service.core.checks import check_above, check_int, check_number, check_type
from service.core.grid import DEFAULT_GRID, NOMINAL_RATE_HZ, ElectrodeGrid

_EPISODE_KEYS = ("kind", "start_s", "duration_s", "params")
"""Keys of an episode's dictionary form (see ``Episode.to_dict``)."""
_MIN_EPISODE_FRAMES = 4
"""Shortest episode, in frames: a neural field needs two samples to know its time step, and
a span this long covers at least three frames wherever it starts."""


@dataclass(frozen=True)
class SynthConfig:
    """Everything ``generate_session`` needs; the same config always gives the same session.

    Parameters
    ----------
    duration_s
        Session length; the session has ``round(duration_s * sample_rate_hz)`` frames before
        any are dropped.
    seed
        Seed of every random choice (schedule, noise, phases, artefacts).
    sample_rate_hz
        Frame rate; timestamps are ``k / sample_rate_hz`` before jitter and drops.
    grid
        Electrode geometry.
    background
        The 1/f background; ``Background(rms_uv=0)`` gives pure patterns.
    episodes
        Patterns laid on the background (a list is accepted and stored as a tuple); None asks
        for a varied random schedule drawn from ``seed`` (see ``random_schedule``).
    artefacts
        Recording artefacts; none by default, ``Artefacts.realistic()`` for a realistic set.
    """

    duration_s: float
    seed: int = 0
    sample_rate_hz: float = NOMINAL_RATE_HZ
    grid: ElectrodeGrid = DEFAULT_GRID
    background: Background = field(default_factory=Background)
    episodes: tuple[Episode, ...] | None = None
    artefacts: Artefacts = field(default_factory=Artefacts)

    def __post_init__(self) -> None:
        check_above("duration_s", self.duration_s, 0.0)
        check_int("seed", self.seed, 0)
        check_type("grid", self.grid, ElectrodeGrid)
        check_type("background", self.background, Background)
        check_type("artefacts", self.artefacts, Artefacts)
        check_number("sample_rate_hz", self.sample_rate_hz)
        highest = FREQUENCY_RANGE_HZ[1]
        if self.artefacts.line_uv > 0:
            highest = max(highest, self.artefacts.line_freq_hz)
        if not (math.isfinite(self.sample_rate_hz) and self.sample_rate_hz > 2 * highest):
            raise ValueError(
                f"'sample_rate_hz' must be > 2 x the highest generated frequency "
                f"({highest:g} Hz), got {self.sample_rate_hz!r}"
            )
        if self.n_frames < 2:
            raise ValueError(
                f"'duration_s' must span at least 2 frames at {self.sample_rate_hz} Hz, "
                f"got {self.duration_s!r}"
            )
        bad = self.artefacts.n_dead + self.artefacts.n_noisy + self.artefacts.n_intermittent
        if bad > self.grid.n_channels:
            raise ValueError(
                f"'artefacts.n_dead' + 'artefacts.n_noisy' + 'artefacts.n_intermittent' must be "
                f"<= {self.grid.n_channels} channels, got {bad}"
            )
        if self.episodes is not None:
            check_type("episodes", self.episodes, (tuple, list))
            object.__setattr__(self, "episodes", tuple(self.episodes))
            for index, episode in enumerate(self.episodes):
                self._check_episode(index, episode)

    def _check_episode(self, index: int, episode: Any) -> None:
        check_type(f"episodes[{index}]", episode, tuple(cls for cls, _ in EPISODE_KINDS.values()))
        where = f"episodes[{index}] ({type(episode).__name__})"
        if episode.end_s > self.duration_s + 1e-9:
            raise ValueError(
                f"{where} must end within the session ('start_s' + 'duration_s' <= "
                f"{self.duration_s!r} s), got {episode.end_s!r} s"
            )
        if episode.duration_s * self.sample_rate_hz < _MIN_EPISODE_FRAMES:
            raise ValueError(
                f"{where} 'duration_s' must span at least {_MIN_EPISODE_FRAMES} frames "
                f"(>= {_MIN_EPISODE_FRAMES / self.sample_rate_hz:.4g} s), "
                f"got {episode.duration_s!r}"
            )

    @property
    def n_frames(self) -> int:
        """Frames generated, before any are dropped."""
        return round(self.duration_s * self.sample_rate_hz)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; ``SynthConfig.from_dict`` inverts it."""
        episodes = None if self.episodes is None else [ep.to_dict() for ep in self.episodes]
        return {
            "duration_s": float(self.duration_s),
            "seed": int(self.seed),
            "sample_rate_hz": float(self.sample_rate_hz),
            "grid": asdict(self.grid),
            "background": asdict(self.background),
            "episodes": episodes,
            "artefacts": asdict(self.artefacts),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SynthConfig:
        """Rebuild a config from ``to_dict`` output (e.g. a session's ``info["config"]``).

        Unknown keys are errors, never ignored: a misspelt parameter must not silently fall
        back to its default.
        """
        check_type("data", data, Mapping)
        _check_keys("SynthConfig", data, tuple(f.name for f in fields(cls)))
        kwargs = dict(data)
        parts = {"grid": ElectrodeGrid, "background": Background, "artefacts": Artefacts}
        for name, part in parts.items():
            if name in kwargs:
                kwargs[name] = _build(name, part, kwargs[name])
        if kwargs.get("episodes") is not None:
            check_type("episodes", kwargs["episodes"], Sequence)
            kwargs["episodes"] = tuple(
                _episode_from_dict(f"episodes[{i}]", ep) for i, ep in enumerate(kwargs["episodes"])
            )
        return cls(**kwargs)


def _episode_from_dict(where: str, data: Mapping[str, Any]) -> Episode:
    """An episode from its ``Episode.to_dict`` form."""
    check_type(where, data, Mapping)
    _check_keys(where, data, _EPISODE_KEYS)
    episode_cls, _ = lookup(data.get("kind", ""))
    params = data.get("params", {})
    check_type(f"{where}.params", params, Mapping)
    valid = tuple(f.name for f in fields(episode_cls) if f.name not in _EPISODE_KEYS)
    _check_keys(f"{where}.params", params, valid)
    span = {key: data[key] for key in ("start_s", "duration_s") if key in data}
    return episode_cls(**params, **span)


def _build(where: str, cls: type, data: Any) -> Any:
    """``cls(**data)`` after checking that ``data`` is a mapping with only known keys."""
    check_type(where, data, Mapping)
    _check_keys(where, data, tuple(f.name for f in fields(cls)))
    return cls(**data)


def _check_keys(where: str, data: Mapping[str, Any], valid: tuple[str, ...]) -> None:
    """Raise ValueError naming the unknown keys of ``data`` and listing the valid ones."""
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ValueError(f"unknown field(s) {unknown} in '{where}'; valid fields: {sorted(valid)}")
