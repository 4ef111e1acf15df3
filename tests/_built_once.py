"""Costly test inputs (exported graphs, int8 copies) built once per test run, not per worker.

Under pytest-xdist every worker process has its own session fixtures, so a session fixture
that exports a model ran once in each worker whose files used it: ``make test``'s two workers
often both exported the same graph. Here the first worker to ask builds it into a folder all
workers of the run share, under a lock; the others wait for it and read it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


def built_once(
    factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Any]
) -> tuple[Path, Any]:
    """``build(folder)`` fills an empty ``folder`` once per test run; returns the folder and
    what ``build`` returned, through JSON (a tuple comes back a list) whichever worker built it.

    The folder is shared: its users must not change it (copy what they modify). Without
    xdist it is this session's own. ``build`` must not call ``built_once`` itself (two
    workers each holding one lock and waiting for the other's would wait forever).
    """
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        folder = factory.mktemp(name)
        return folder, json.loads(json.dumps(build(folder)))
    # Each worker's base folder is <run's base>/<worker id>: the parent is the run's own
    # (pytest-xdist's documented way for workers to share a session fixture).
    shared = factory.getbasetemp().parent / "built-once"
    shared.mkdir(exist_ok=True)
    folder, done = shared / name, shared / f"{name}.json"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed part way
            folder.mkdir()
            done.write_text(json.dumps(build(folder)))
    return folder, json.loads(done.read_text())
