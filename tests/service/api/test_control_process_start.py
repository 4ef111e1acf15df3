"""Starting the control process fails as a ControlPlaneError, which the loop's watch retries,
never as a bare OSError, which would end a running daemon."""

import os
import subprocess
import sys

import pytest

from service.api.control_process import ControlPlaneError, ControlProcess
from service.config import Settings
from service.daemon.link_protocol import LinkAddress


def test_an_interpreter_that_cannot_be_run_is_a_control_plane_error_naming_it(
    monkeypatch, tmp_path
):
    missing = tmp_path / "no-python"
    monkeypatch.setattr(sys, "executable", str(missing))
    before = set(os.listdir("/proc/self/fd"))
    control = ControlProcess(Settings(), LinkAddress(str(tmp_path / "link"), b"k" * 32))
    with pytest.raises(ControlPlaneError, match="could not be started") as refused:
        control.start(timeout_s=5)
    assert str(missing) in str(refused.value)
    assert set(os.listdir("/proc/self/fd")) <= before  # neither end of its pipe left open
    assert control.exit_status() is None


def test_the_control_process_loads_none_of_the_loops_stages():
    """The control process (re)starts while the disarm route is down: the loop's stages, ONNX
    Runtime and scipy.signal are the loop's process's, and importing them there (through the
    link's loop end, for its address) cost about 2 s of each start on two cores. Its start
    arguments come over stdin; with none it stops at reading them, after every import its
    ``main`` makes, which ``-X importtime`` lists."""
    started = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "service.api.control_process"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "EOFError" in started.stderr  # it got as far as reading its start arguments
    imported = {line.rsplit("|", 1)[-1].strip() for line in started.stderr.splitlines()}
    assert {"uvicorn", "fastapi", "service.api.remote_daemon", "zmq"} <= imported
    loaded = imported & {"service.daemon.daemon", "service.loop.closed_loop", "onnxruntime"}
    assert not loaded and "scipy.signal" not in imported, loaded
