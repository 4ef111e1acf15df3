"""The tiny model that takes irregular input, served by ``test_irregular_serving.py``: committed
files and their generator.

``tests/data/tiny_irregular_model/`` holds a TrajGRU-Attention (hidden 2,3,4, 2 links, 2
heads, attention over 2 states) trained for two steps on a 6 s generated session (seed 21):

``run/checkpoint.pt``, ``run/run.json``
    The training run, for the PyTorch backend, trimmed as ``tests/data/tiny_model.py``'s.
``model.onnx``
    Its window graph (past frames and their times in, 16 frames out), exported unoptimised.

Why committed: the export traces the model unrolled over 16 + 16 frames, 40-50 s on two busy
cores, once per test run; copying the files costs milliseconds.

When to regenerate: whenever ``tests/models/test_tiny_model.py``'s checks of this model fail,
i.e. after a change of the export format, of the model metadata or of the TrajGRU models'
code. From the repository root::

    python -m tests.data.tiny_irregular_model

then commit ``tests/data/tiny_irregular_model/``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from tests.data.tiny_model import CHECKPOINT_KEYS, RUN, WINDOW

DIRECTORY = Path(__file__).with_name("tiny_irregular_model")
"""Where the committed files live (:data:`RUN`, :data:`WINDOW` inside)."""
CONFIG = {"hidden": [2, 3, 4], "links": 2, "head_channels": 2, "attention_window": 2}
"""The ``trajgru_attention`` config: the smallest widths, two links, two heads."""


def copy_tiny_irregular_model(destination: Path) -> tuple[Path, Path]:
    """Copy the committed model into ``destination``; returns its run directory and window
    graph."""
    shutil.copytree(DIRECTORY, destination, dirs_exist_ok=True)
    return destination / RUN, destination / WINDOW


def generate(destination: Path) -> None:
    """Train, trim and export the model into ``destination`` (replaced whole)."""
    import torch

    from bench.data.synth import SynthConfig, generate_session
    from models.data import SessionWindows
    from models.export import export_onnx, metadata_from_checkpoint
    from models.training import CHECKPOINT, LOG_FILE, RunConfig, load_checkpoint, train

    torch.set_num_threads(1)  # the same sums in the same order, run after run
    session = generate_session(SynthConfig(duration_s=6.0, seed=21))
    config = RunConfig(family="trajgru_attention", model=CONFIG, steps=2, batch_size=2)
    with tempfile.TemporaryDirectory(dir=destination.parent) as scratch:
        built = Path(scratch) / destination.name
        run = built / RUN
        result = train(config, SessionWindows(session, stride=32), run, progress=False)
        state = load_checkpoint(run)
        torch.save({key: state[key] for key in CHECKPOINT_KEYS}, run / CHECKPOINT)
        (run / LOG_FILE).unlink()
        # Unoptimised: the graph optimiser needs minutes on the unrolled 32-frame graph.
        metadata = metadata_from_checkpoint(state)
        export_onnx(result.generator, built / WINDOW, metadata, optimize=False)
        if destination.exists():
            shutil.rmtree(destination)
        built.rename(destination)


if __name__ == "__main__":
    generate(DIRECTORY)
    print(f"wrote {DIRECTORY}", file=sys.stderr)
