"""Each wire error code has exactly one exception class, and the mapping is total."""

from __future__ import annotations

import pytest

from firmware_bridge import errors
from firmware_bridge.errors import (
    DeviceFaultError,
    ErrorCode,
    FirmwareError,
    FrameError,
    NotArmedError,
    describe_code,
    error_for_code,
)


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_code_maps_to_a_class_that_carries_it(code):
    cls = error_for_code(code)
    assert issubclass(cls, FirmwareError) and cls.code == code


def test_no_two_classes_share_a_code():
    classes = [
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type)
        and issubclass(obj, FirmwareError)
        and obj is not FirmwareError
        and "code" in vars(obj)
    ]
    codes = [cls.code for cls in classes]
    assert sorted(codes) == sorted(set(codes)) == sorted(ErrorCode)


def test_framing_codes_are_frame_errors_and_interlock_codes_are_not():
    assert issubclass(error_for_code(ErrorCode.CRC_MISMATCH), FrameError)
    assert not issubclass(error_for_code(ErrorCode.NOT_ARMED), FrameError)
    assert error_for_code(ErrorCode.NOT_ARMED) is NotArmedError


def test_an_unknown_code_is_a_device_fault():
    assert error_for_code(0x42) is DeviceFaultError
    assert describe_code(0x42) == "UNKNOWN (0x42)"
    assert describe_code(ErrorCode.REFRACTORY) == "REFRACTORY (0x11)"
