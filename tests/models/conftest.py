"""Model-test fixtures: a small generated session (made once) and one torch thread."""

import pytest
import torch

from bench.synth import Artefacts, SynthConfig, generate_session
from models.data import SessionWindows


@pytest.fixture(scope="session")
def session():
    return generate_session(SynthConfig(duration_s=12.0, seed=11, artefacts=Artefacts.realistic()))


@pytest.fixture(scope="session")
def train_set(session):
    return SessionWindows(session, "train", stride=8)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run several times faster on one thread than on two contended cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
