"""Model-test fixtures: a small generated session, made once.

(Torch runs on one thread in every test: ``tests/conftest.py``.)
"""

import pytest

from bench.synth import Artefacts, SynthConfig, generate_session
from models.data import SessionWindows


@pytest.fixture(scope="session")
def session():
    return generate_session(SynthConfig(duration_s=12.0, seed=11, artefacts=Artefacts.realistic()))


@pytest.fixture(scope="session")
def train_set(session):
    return SessionWindows(session, "train", stride=8)

