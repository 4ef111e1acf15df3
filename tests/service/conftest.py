"""Fixtures shared by the service tests: a small exported model and a session to feed it."""

import pytest

from bench.synth import SynthConfig, generate_session


@pytest.fixture(scope="session")
def session():
    return generate_session(SynthConfig(duration_s=6.0, seed=21))


@pytest.fixture(scope="session")
def exported(tmp_path_factory, session):
    """A briefly trained MR-layer model: its run directory, window graph and step graph."""
    from models.data import SessionWindows
    from models.export import export_from_checkpoint
    from models.training import RunConfig, train

    root = tmp_path_factory.mktemp("model")
    config = RunConfig(
        family="mr_layer_lstm", model={"hidden": (4, 4), "kernel_size": 3}, steps=3, batch_size=4
    )
    train(config, SessionWindows(session, stride=16), root / "run", progress=False)
    window, step = root / "model.onnx", root / "model.step.onnx"
    export_from_checkpoint(root / "run", window, step)
    return root / "run", window, step
