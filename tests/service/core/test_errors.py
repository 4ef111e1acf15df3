"""Every exception corticast defines is a CorticastError, and keeps its built-in base."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import firmware_bridge
import service
from firmware_bridge.errors import BridgeError, CrcMismatchError
from service.config import ConfigError
from service.core.errors import CorticastError
from service.ingest.lsl import StreamFormatError

# Modules that need optional GPU libraries or torch at import are still walked: each imports
# those lazily, inside the functions that use them.
_PACKAGES = (service, firmware_bridge)


def _defined_exceptions() -> list[type[BaseException]]:
    found = []
    for package in _PACKAGES:
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            module = importlib.import_module(info.name)
            for _, obj in inspect.getmembers(module, inspect.isclass):
                if issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                    found.append(obj)
    return found


def test_every_exception_defined_in_the_runtime_and_the_bridge_is_a_corticast_error():
    defined = _defined_exceptions()
    assert len(defined) >= 30  # the bridge's tree and the stages' errors were all found
    assert [e.__qualname__ for e in defined if not issubclass(e, CorticastError)] == []


@pytest.mark.parametrize(
    ("error", "builtin"),
    [(ConfigError, ValueError), (StreamFormatError, ValueError), (BridgeError, Exception)],
)
def test_the_root_is_caught_as_itself_and_the_old_builtin_base_still_catches(error, builtin):
    with pytest.raises(CorticastError):
        raise error("x")
    with pytest.raises(builtin):
        raise error("x")
    assert issubclass(CrcMismatchError, CorticastError)
