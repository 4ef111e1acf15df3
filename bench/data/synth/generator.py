"""Turn a ``SynthConfig`` into a ``Session``: background, episodes, truth, then artefacts."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bench.data.session import Session
from bench.data.synth._registry import lookup
from bench.data.synth._truth import schedule_truth
from bench.data.synth.artefacts import apply_artefacts
from bench.data.synth.background import background
from bench.data.synth.config import SynthConfig
from bench.data.synth.schedule import random_schedule
from service.core.progress import NO_PROGRESS, Progress


def generate_session(
    config: SynthConfig, *, progress: Callable[[int], Progress] | None = None
) -> Session:
    """Generate the session ``config`` describes; bitwise identical for an identical config.

    Each part draws from its own child of ``default_rng(seed)`` (background, artefacts, one
    per episode), so adding an episode or an artefact leaves the other parts unchanged. Truth
    is computed on the nominal timeline, where each episode's pattern is on (not between a
    wave's bursts), and subset with the frames that survive dropouts.
    ``progress(total)`` returns a bar (``update(n)``, ``close()``; tqdm is one) advanced by
    the frames rendered: the whole background, then each episode's span.
    """
    fs = config.sample_rate_hz
    t = np.arange(config.n_frames) / fs
    episodes = config.episodes
    if episodes is None:
        episodes = random_schedule(config.duration_s, config.seed, config.grid)
    background_rng, artefact_rng, *episode_rngs = np.random.default_rng(config.seed).spawn(
        2 + len(episodes)
    )

    spans = []
    for episode in episodes:
        inside = np.flatnonzero(episode.covers(t))
        spans.append(slice(inside[0], inside[-1] + 1))
    total = t.size + sum(span.stop - span.start for span in spans)
    bar = NO_PROGRESS if progress is None else progress(total)
    on = np.zeros((len(episodes), t.size), dtype=bool)
    try:
        frames = background(t, config.grid, config.background, background_rng)
        bar.update(t.size)
        for index, (episode, span, rng) in enumerate(
            zip(episodes, spans, episode_rngs, strict=True)
        ):
            _, render = lookup(episode.kind)
            pattern = render(t[span], config.grid, episode, rng)
            on[index, span] = np.any(pattern != 0, axis=(1, 2))
            frames[span] += episode.envelope(t[span])[:, None, None] * pattern
            bar.update(span.stop - span.start)
    finally:
        bar.close()
    truth = schedule_truth(t, episodes, on)

    frames, timestamps, keep, artefacts = apply_artefacts(
        frames, t, config.artefacts, fs, artefact_rng
    )
    info = {
        # A provenance label, not the module path (bench.data.synth): kept as the shipped
        # models' metadata records it, so the same generator keeps one name across models.
        "generator": "bench.synth",
        "seed": int(config.seed),
        "config": config.to_dict(),
        "episodes": [episode.to_dict() for episode in episodes],
        "n_frames_generated": int(config.n_frames),
        "artefacts": artefacts,
    }
    return Session(
        frames=frames.astype(np.float32),
        timestamps=timestamps,
        sample_rate_hz=fs,
        grid=config.grid,
        truth=truth.take(keep),
        info=info,
    )
