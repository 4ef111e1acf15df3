"""The control process's start read on a pipe numbered past ``select.select``'s limit."""

from __future__ import annotations

import os

from service.api.control_process import _read_within
from service.core.readable import readable_within
from tests._many_descriptors import SELECT_LIMIT, past_select_s_limit


def test_a_pipe_numbered_past_select_s_limit_is_waited_on():
    """The loop's process reads its control process's start on a pipe: opened while it holds
    over 1024 descriptors, ``select.select`` refused it and the control plane never started
    again after a fault."""
    with past_select_s_limit():
        read_end, write_end = os.pipe()
    try:
        assert read_end >= SELECT_LIMIT
        assert readable_within([read_end], 0.05) == set()
        assert _read_within(read_end, 0.05) == b""  # the control process said nothing yet
        os.write(write_end, b"serving")
        assert readable_within([read_end], 5.0) == {read_end}
        assert _read_within(read_end, 5.0) == b"serving"
        os.close(write_end)
        write_end = -1
        assert readable_within([read_end], 5.0) == {read_end}  # hung up: a read says so
        assert os.read(read_end, 16) == b""
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
