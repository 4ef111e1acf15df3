"""The tiny exported model the service tests run on: committed files and their generator.

``tests/data/tiny_model/`` holds an MR-layer ConvLSTM (hidden 4,4, kernel 3) trained for three
steps on a 6 s generated session (seed 21), as the tests use it:

``run/checkpoint.pt``, ``run/run.json``
    The training run, for the PyTorch backend and for tests that export the run themselves.
    The checkpoint keeps what loading a generator needs (config, weights, normalisation,
    provenance, steps, last losses); the training state (optimisers, discriminator, random
    generators) is dropped because nothing resumes this run, and it is 98 % of the file.
``model.onnx``, ``model.step.onnx``
    The window graph and the step graph, exported from that checkpoint.

Why committed: exporting the step graph traces ``torch.cond`` and costs 1-3 minutes on two busy
cores, more than the suite's 120 s per-test limit allows a session fixture on a loaded
machine; copying these files costs milliseconds.

When to regenerate: whenever ``tests/models/test_tiny_model.py`` fails, i.e. after a change of
the export format (graph inputs, outputs or the step graph's branches), of the model metadata
(keys, ``format_version``, what goes into it) or of the MR-layer model's code. From the
repository root::

    python -m tests.data.tiny_model

then commit ``tests/data/tiny_model/``. Run again on the same machine with the same torch and
onnx versions, it writes the same files but for ``provenance.code_revision`` (the commit it was
made from) in the graphs' metadata.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

DIRECTORY = Path(__file__).with_name("tiny_model")
"""Where the committed files live."""
RUN, WINDOW, STEP = "run", "model.onnx", "model.step.onnx"
"""Their names inside :data:`DIRECTORY`: run directory, window graph, step graph."""
CHECKPOINT_KEYS = ("config", "steps_done", "last_logs", "generator", "normalisation", "provenance")
"""What the committed checkpoint keeps: what ``models.training.generator_from_checkpoint`` and
``models.export.metadata_from_checkpoint`` read."""


def copy_tiny_model(destination: Path) -> tuple[Path, Path, Path]:
    """Copy the committed model into ``destination`` (so a test may change its copy).

    Returns
    -------
    tuple of Path
        The run directory, the window graph and the step graph.
    """
    shutil.copytree(DIRECTORY, destination, dirs_exist_ok=True)
    return destination / RUN, destination / WINDOW, destination / STEP


def generate(destination: Path) -> list[str]:
    """Train, trim and export the tiny model into ``destination`` (replaced whole).

    Returns one line per exported file, as ``corticast export`` prints them.
    """
    import torch

    from bench.data.synth import SynthConfig, generate_session
    from models.data import SessionWindows
    from models.export import export_from_checkpoint
    from models.training import CHECKPOINT, LOG_FILE, RunConfig, load_checkpoint, train

    torch.set_num_threads(1)  # the same sums in the same order, run after run
    session = generate_session(SynthConfig(duration_s=6.0, seed=21))
    config = RunConfig(
        family="mr_layer_lstm",
        model={"hidden": (4, 4), "kernel_size": 3},
        window_stride=16,
        steps=3,
        batch_size=4,
    )
    with tempfile.TemporaryDirectory(dir=destination.parent) as scratch:
        built = Path(scratch) / destination.name
        run = built / RUN
        train(config, SessionWindows(session, stride=config.window_stride), run, progress=False)
        state = load_checkpoint(run)
        torch.save({key: state[key] for key in CHECKPOINT_KEYS}, run / CHECKPOINT)
        (run / LOG_FILE).unlink()
        lines = export_from_checkpoint(run, built / WINDOW, built / STEP)
        if destination.exists():
            shutil.rmtree(destination)
        built.rename(destination)
    return [line.replace(str(built), str(destination)) for line in lines]


if __name__ == "__main__":
    for line in generate(DIRECTORY):
        print(line, file=sys.stderr)
