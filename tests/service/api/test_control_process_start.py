"""Starting the control process fails as a ControlPlaneError, which the loop's watch retries,
never as a bare OSError, which would end a running daemon."""

import os
import sys

import pytest

from service.api.control_process import ControlPlaneError, ControlProcess
from service.config import Settings
from service.daemon.control_link import LinkAddress


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
