"""A randomised mixture of generators: sessions drawn from wide ranges, labelled by family.

One generator with one set of habits (one background spectrum, sinusoidal waves, one gain)
teaches a model that generator, not cortex. The mixture draws every session's background,
waves, artefacts and recording scale from ranges wide enough that the only thing common to all
of them is wave dynamics, and labels each session with its *family* so that a family can be
held out of training entirely and scored on its own (``bench.benchmarks.generalisation``).

Families
--------
A family is what the session's **background** is: ``pink`` (1/f^alpha, the classic cortical
spectrum), ``ou`` (Ornstein-Uhlenbeck: a Lorentzian spectrum, flat below a knee and 1/f² above,
what a damped population relaxing to rest gives) or ``field`` (Wilson-Cowan neural-field
activity under the whole session, on a weak pink floor: nonlinear, self-generated waves).
The background is most of a session's power and most of what a model predicts between
episodes, and it is what differs most between one rig, animal or generator and another; the
waves (planar, radial, spiral, seizure-like, every shape) are laid over every family, so
holding a family out asks whether a model learnt to continue waves on a background statistics
it never saw, rather than whether it has seen a given wave geometry.

Ranges, drawn per session (background, artefacts, scale) and per episode (everything else)
------------------------------------------------------------------------------------------
- pink exponent 0.5–2.5 (measured cortical exponents span about 1–2; the margins cover
  whitened and heavily filtered recordings), knee ``low_hz`` 0.3–3 Hz log-uniform.
- OU time constant 2–200 ms log-uniform (fast synaptic to slow population time constants).
- spatial correlation length 0–3 mm (independent electrodes to a quarter of the array).
- neural field: time constant 5–30 ms, lateral coupling 0.2–1.5 mm, noise 0.5–4 (slow
  irregular to fast regular rhythms), amplitude 15–60 µV on a 2–8 µV pink floor.
- background RMS 5–40 µV log-uniform.
- episodes: plane, radial, spiral and seizure-like with equal odds, 0.5–4 s (seizures 2–6 s),
  separated by 0.1–1.5 s of background only.
- frequency 2–30 Hz (delta to beta, where µECoG travelling waves are reported); seizures chirp
  from 6–16 Hz down to 2–5 Hz.
- phase speed 0.05–1 m/s log-uniform (the reported range of cortical travelling waves).
- cycle shape sine, harmonic or sharp with equal odds; bursts (0.5–4 Hz) in 40 % of episodes.
- planar direction anywhere, drifting at up to ±45 °/s in 40 % of planar episodes.
- amplitude 10–100 µV log-uniform (seizures 50–250 µV); onset/offset ramps from abrupt
  (0 s, 30 % of episodes: a wave that stops dead) to half the episode (a slow swell).
- recording gain 0.2–5 log-uniform (rigs, references and unit conventions differ by more
  than an order of magnitude), per-electrode gain spread 0–0.3 (log SD; impedances).
- mains hum at 50 or 60 Hz (equal odds), 0.5–20 µV median, absent in 20 % of sessions.
- 0–6 dead, 0–6 noisy (20–200 µV) and 0–4 intermittent channels (0.2–2 outages/s).
- dropped samples at 0–0.5 events/s of 1–5 frames; timestamp jitter 0–0.2 ms.

The same ``(seed, family)`` always gives the same session; the family of a seed is drawn
from the families allowed, so ``only=pink`` gives seed 7 the session seed 7 has in the full
mixture whenever seed 7 is pink there.
"""

from __future__ import annotations

import numpy as np

from bench.data.session import Session
from bench.data.synth._episode import Episode
from bench.data.synth._waveform import WAVEFORMS
from bench.data.synth.artefacts import Artefacts
from bench.data.synth.background import Background
from bench.data.synth.config import SynthConfig
from bench.data.synth.generator import generate_session
from bench.data.synth.neural_field import NeuralField
from bench.data.synth.plane_wave import PlaneWave
from bench.data.synth.radial_wave import RadialWave
from bench.data.synth.schedule import _log_uniform, _point
from bench.data.synth.seizure import Seizure
from bench.data.synth.spiral_wave import SpiralWave
from service.core.checks import check_above, check_int
from service.core.grid import DEFAULT_GRID, ElectrodeGrid

FAMILIES = ("pink", "ou", "field")
"""Generator families: what a session's background is (see the module docstring)."""
GENERATOR = "bench.synth.mixture"
"""The ``info["generator"]`` label of a mixture session."""
_TAG = 0x6D6978
"""Mixed into every seed sequence, so mixture seed N shares no stream with ``synthetic:N``."""
_GAP_S = (0.1, 1.5)
_DURATION_S = (0.5, 4.0)
_SEIZURE_S = (2.0, 6.0)
_MIN_EPISODE_S = 0.3
_KINDS = (PlaneWave.kind, RadialWave.kind, SpiralWave.kind, Seizure.kind)


def family_of(seed: int, families: tuple[str, ...] = FAMILIES) -> str:
    """The family mixture session ``seed`` has when only ``families`` are allowed."""
    check_int("seed", seed, 0)
    _check_families(families)
    allowed = [name for name in FAMILIES if name in families]
    return allowed[int(np.random.default_rng([_TAG, seed]).integers(len(allowed)))]


def mixture_config(
    seed: int, duration_s: float, family: str, grid: ElectrodeGrid = DEFAULT_GRID
) -> SynthConfig:
    """The generator config of mixture session ``(seed, family)``: every draw made here."""
    check_int("seed", seed, 0)
    check_above("duration_s", duration_s, 0.0)
    _check_families((family,))
    index = FAMILIES.index(family)
    rng = np.random.default_rng([_TAG, seed, index])
    synth_seed = int(np.random.SeedSequence([_TAG, seed, index]).generate_state(1)[0])
    background = _background(rng, family)
    episodes = _episodes(rng, grid, duration_s)
    if family == "field":
        episodes = (_field(rng, duration_s), *episodes)
    return SynthConfig(
        duration_s=duration_s,
        seed=synth_seed,
        grid=grid,
        background=background,
        episodes=episodes,
        artefacts=_artefacts(rng),
    )


def generate_mixture_session(
    seed: int, duration_s: float, families: tuple[str, ...] = FAMILIES
) -> Session:
    """Mixture session ``seed`` drawn from ``families``; its family is ``info["family"]``."""
    family = family_of(seed, families)
    session = generate_session(mixture_config(seed, duration_s, family))
    info = {
        **session.info,
        "generator": GENERATOR,
        "family": family,
        "mixture": {"seed": int(seed), "family": family, "families": list(families)},
    }
    return Session(
        frames=session.frames,
        timestamps=session.timestamps,
        sample_rate_hz=session.sample_rate_hz,
        grid=session.grid,
        truth=session.truth,
        info=info,
    )


def _check_families(families: tuple[str, ...]) -> None:
    unknown = [name for name in families if name not in FAMILIES]
    if unknown or not families:
        raise ValueError(
            f"generator families must be a non-empty selection of {list(FAMILIES)}, "
            f"got {list(families)}"
        )


def _background(rng: np.random.Generator, family: str) -> Background:
    correlation = float(rng.uniform(0.0, 3.0e-3))
    if family == "ou":
        return Background(
            family="ou",
            rms_uv=_log_uniform(rng, 5.0, 40.0),
            tau_s=_log_uniform(rng, 0.002, 0.2),
            correlation_m=correlation,
        )
    floor = family == "field"
    return Background(
        rms_uv=_log_uniform(rng, 2.0, 8.0) if floor else _log_uniform(rng, 5.0, 40.0),
        exponent=float(rng.uniform(0.5, 2.5)),
        correlation_m=correlation,
        low_hz=_log_uniform(rng, 0.3, 3.0),
    )


def _field(rng: np.random.Generator, duration_s: float) -> NeuralField:
    """Neural-field activity under the whole session (the ``field`` family's background)."""
    return NeuralField(
        start_s=0.0,
        duration_s=duration_s,
        ramp_s=min(0.1, duration_s / 2),
        amplitude_uv=float(rng.uniform(15.0, 60.0)),
        tau_s=float(rng.uniform(0.005, 0.03)),
        coupling_m=float(rng.uniform(0.2e-3, 1.5e-3)),
        noise=float(rng.uniform(0.5, 4.0)),
    )


def _episodes(
    rng: np.random.Generator, grid: ElectrodeGrid, duration_s: float
) -> tuple[Episode, ...]:
    """Non-overlapping wave episodes of every kind, with background-only gaps between."""
    episodes: list[Episode] = []
    now = 0.0
    while True:
        start = now + rng.uniform(*_GAP_S)
        kind = _KINDS[int(rng.integers(len(_KINDS)))]
        wanted = rng.uniform(*(_SEIZURE_S if kind == Seizure.kind else _DURATION_S))
        length = min(wanted, duration_s - start)
        if length < _MIN_EPISODE_S:
            return tuple(episodes)
        episodes.append(_episode(rng, grid, kind, start, length))
        now = start + length


def _episode(
    rng: np.random.Generator, grid: ElectrodeGrid, kind: str, start: float, length: float
) -> Episode:
    ramp = 0.0 if rng.random() < 0.3 else float(rng.uniform(0.02, length / 2))
    span = {"start_s": start, "duration_s": length, "ramp_s": ramp}
    speed = _log_uniform(rng, 0.05, 1.0)
    if kind == Seizure.kind:
        return Seizure(
            **span,
            amplitude_uv=_log_uniform(rng, 50.0, 250.0),
            start_freq_hz=float(rng.uniform(6.0, 16.0)),
            end_freq_hz=float(rng.uniform(2.0, 5.0)),
            speed_mps=speed,
            direction_deg=float(rng.uniform(-180.0, 180.0)),
            onset_fraction=float(rng.uniform(0.1, 0.5)),
        )
    wave = {
        **span,
        "amplitude_uv": _log_uniform(rng, 10.0, 100.0),
        "frequency_hz": float(rng.uniform(2.0, 30.0)),
        "speed_mps": speed,
        "waveform": WAVEFORMS[int(rng.integers(len(WAVEFORMS)))],
        "burst_hz": float(rng.uniform(0.5, 4.0)) if rng.random() < 0.4 else 0.0,
    }
    if kind == PlaneWave.kind:
        drift = float(rng.uniform(-45.0, 45.0)) if rng.random() < 0.4 else 0.0
        return PlaneWave(**wave, direction_deg=float(rng.uniform(-180.0, 180.0)), drift_deg_s=drift)
    x, y = _point(rng, grid, 0.25 if kind == RadialWave.kind else -0.2)
    if kind == RadialWave.kind:
        return RadialWave(**wave, source_x_m=x, source_y_m=y, inward=bool(rng.random() < 0.25))
    return SpiralWave(
        **wave,
        centre_x_m=x,
        centre_y_m=y,
        handedness=int(rng.choice([-1, 1])),
        arms=int(rng.integers(1, 3)),
    )


def _artefacts(rng: np.random.Generator) -> Artefacts:
    return Artefacts(
        line_freq_hz=float(rng.choice([50.0, 60.0])),
        line_uv=0.0 if rng.random() < 0.2 else _log_uniform(rng, 0.5, 20.0),
        n_dead=int(rng.integers(0, 7)),
        n_noisy=int(rng.integers(0, 7)),
        noisy_uv=_log_uniform(rng, 20.0, 200.0),
        n_intermittent=int(rng.integers(0, 5)),
        outage_rate_hz=float(rng.uniform(0.2, 2.0)),
        drop_rate_hz=float(rng.uniform(0.0, 0.5)),
        max_drop_frames=int(rng.integers(1, 6)),
        jitter_s=float(rng.uniform(0.0, 2e-4)),
        gain=_log_uniform(rng, 0.2, 5.0),
        gain_spread=float(rng.uniform(0.0, 0.3)),
    )
