"""The command line that runs one of our modules in a child Python process."""

from __future__ import annotations

import sys


def python_module_command(module: str, *args: str) -> list[str]:
    """``python -P -m module args`` with this interpreter.

    ``-P`` (Python 3.11): without it ``-m`` puts the working directory first on ``sys.path``. A
    folder there named like one of our packages (a rig's ``models/`` of ONNX files, say)
    shadowed ours, and the child failed at its imports; a file there named like one of our
    modules would have run in its place.
    """
    return [sys.executable, "-P", "-m", module, *args]
