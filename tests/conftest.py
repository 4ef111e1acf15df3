"""Shared fixtures. liblsl is told to keep quiet (and to time its clock-offset probes for
loopback) before any test touches it, and torch (with OpenMP and OpenBLAS) runs on one thread
unless ``OMP_NUM_THREADS`` says otherwise.

One thread, because the suite must hold on a loaded 2-core machine: the tests' models are tiny,
one thread runs them as fast as two, and two OpenMP threads competing with other processes
spin-wait for each other (a 40-step training test ran 5-10x slower and overran the 120 s
limit). Set here, before anything imports torch, it holds in this process and in every process
a test starts (daemons, ``torchrun`` workers, replays).
"""

from __future__ import annotations

import gc
import logging
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before the imports below load any library

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pylsl
import pytest

from service.core import log_queue
from service.ingest.liblsl_config import QUIET
from tests._built_once import built_once

# Before any other liblsl call: liblsl reads one configuration per process. Quiet, as the
# daemon's, and with its clock-offset probes timed for loopback (``liblsl_loopback.cfg``
# says why). Not through LSLAPICFG: the commands a test runs would log where their
# configuration came from, into the output the test reads.
pylsl.set_config_content((Path(__file__).parent / "liblsl_loopback.cfg").read_text() + QUIET)

_THREADS = int(os.environ["OMP_NUM_THREADS"])
"""Torch's thread count in every test (``_torch_threads_kept``)."""


@pytest.fixture
def source_id() -> str:
    """A source_id no other test (or stray rig on this machine) uses."""
    return f"corticast-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def tiny_int8(tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """The committed tiny model's fp32 window and step graphs with int8 copies beside them
    (``tests/_tiny_int8.py``), made once per test run, read-only; and what the export printed.

    In a folder of their own: a probe of the service tests' ``exported`` must not see them.
    """
    from tests import _tiny_int8

    folder, lines = built_once(tmp_path_factory, "tiny-int8", _tiny_int8.build)
    return (*_tiny_int8.graphs(folder), lines)


@pytest.fixture
def udp_write_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A serial write's timeout as short as a UDP send needs (which never blocks): the
    bridge's bounds (one exchange's time, a bounded close's three) add it to the ACK
    deadline, so a test that waits out a bound (a request or a record held in an audit log
    write) waits 1 s less per exchange. Only for tests that wait a bound out: a bridge merely
    slow on a loaded machine may run past these shorter bounds."""
    monkeypatch.setattr("firmware_bridge.stimulation_bridge.WRITE_TIMEOUT_S", 0.05)


@pytest.fixture(autouse=True)
def _root_log_kept() -> Iterator[None]:
    """The root logger's handlers and level as before each test, and no log queue left running
    after it: a command run in-process (``serve`` and ``demo`` through ``CliRunner``) installs
    corticast's queued handler, whose writer thread went on writing later tests' records
    straight to the worker's stderr, outside their capture (lines in the run's output, and in
    any test that reads its own stderr)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level
    log_queue.stop()


@pytest.fixture(scope="session", autouse=True)
def _heap_frozen() -> None:
    """The test process's heap as collection left it (torch, ONNX, every test module),
    collected once and frozen (``gc.freeze``). A daemon started on a frozen heap leaves it as
    it is (``Daemon.start``); on an unfrozen one each start ran a full collection over all of
    it and froze it, and each stop unfroze it again: 88 s of the suite's CPU in all, sampled
    by py-spy, against ~0.2 s for one collection of the libraries alone."""
    gc.collect()
    gc.freeze()


@pytest.fixture(autouse=True)
def _torch_threads_kept() -> Iterator[None]:
    """Put torch's thread count back after each test that changed it.

    The count is global to the process: a ``TorchPredictor`` (``threads=2`` by default) left a
    worker's every later test on two spin-waiting threads, the slowdown described above.
    """
    yield
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != _THREADS:
        torch.set_num_threads(_THREADS)
