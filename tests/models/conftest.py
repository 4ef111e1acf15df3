"""Model-test fixtures: a small generated session and short exported graphs, made once.

(Torch runs on one thread in every test: ``tests/conftest.py``.)
"""

from collections.abc import Iterator

import pytest

from bench.data.synth import Artefacts, SynthConfig, generate_session
from models.data import SessionWindows
from tests._export_memo import ExportMemo
from tests.models._short_export import short_exporter


@pytest.fixture(scope="session")
def session():
    return generate_session(SynthConfig(duration_s=12.0, seed=11, artefacts=Artefacts.realistic()))


@pytest.fixture(scope="session")
def train_set(session):
    return SessionWindows(session, "train", stride=8)


@pytest.fixture(scope="session")
def short_export(tmp_path_factory, export_memo):
    """``short_export(family, graph)``: an untrained 2-frame model's "window" or "step" graph,
    exported the first time a test of the run asks for it (``tests/models/_short_export.py``);
    read-only."""
    return short_exporter(tmp_path_factory, export_memo)


@pytest.fixture(scope="session")
def export_memo() -> ExportMemo:
    """This worker's memo of ONNX exports (``tests/_export_memo.py``): ``with
    export_memo.active():`` around an export of weights a test of the same file exports too."""
    return ExportMemo()


@pytest.fixture
def memoized_export(export_memo: ExportMemo) -> Iterator[ExportMemo]:
    """:func:`export_memo`, active for the whole test."""
    with export_memo.active():
        yield export_memo
