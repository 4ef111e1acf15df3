"""`make demo` and `make test` set up ``.venv`` first, on a fresh machine with only Python 3.11
and make. A setup that fails must leave nothing the next run takes as done, and a Python of the
wrong version must be named before a venv is made of it. Make runs here for the venv's rule
alone, in a temporary directory, with a PYTHON that fails the way a fresh machine's does: no
network, no pip is installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

MAKEFILE = Path(__file__).resolve().parents[1] / "Makefile"
VENV_PYTHON = ".venv/bin/python"


def _make(directory: Path, python: str, *flags: str) -> subprocess.CompletedProcess[str]:
    command = ["make", "-f", str(MAKEFILE), "-C", str(directory), *flags, VENV_PYTHON]
    return subprocess.run(
        [*command, f"PYTHON={python}"], capture_output=True, text=True, timeout=120
    )


def test_a_venv_made_without_pip_is_made_again_on_the_next_run(tmp_path):
    """Debian and Ubuntu split ensurepip into python3.11-venv: without it ``python3.11 -m venv``
    makes ``bin/python``, then fails. Kept, the next ``make demo`` (after the package is
    installed) took the venv as made and failed on ``No module named pip``."""
    python = tmp_path / "python3.11"
    python.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = -m ] && [ "$2" = venv ]; then\n'
        f'    "{sys.executable}" -m venv --without-pip "$3" || exit 1\n'
        '    echo "ensurepip is not available" >&2; exit 1\n'
        "fi\n"
        f'exec "{sys.executable}" "$@"\n'
    )
    python.chmod(0o755)
    failed = _make(tmp_path, str(python))
    assert failed.returncode != 0
    assert "ensurepip is not available" in failed.stderr
    assert not (tmp_path / VENV_PYTHON).exists(), "a half-made venv is left as made"
    assert _make(tmp_path, str(python), "-q").returncode == 1  # out of date: made again


@pytest.mark.parametrize("found", [True, False], ids=["python 3.12", "not found"])
def test_a_python_that_is_not_3_11_is_named_before_a_venv_is_made(tmp_path, found):
    """A 3.12 venv was made, pip then refused the project (``requires-python``), and the venv
    was kept: naming the right PYTHON after that changed nothing until ``make clean``."""
    python = tmp_path / "python3.12"
    if found:  # answers for 3.12; makes its venvs without pip (no network here)
        python.write_text(
            "#!/bin/sh\n"
            'if [ "$1" = -c ]; then\n'
            f'    exec "{sys.executable}" -c '
            '"import sys; sys.version_info = (3, 12, 0); exec(sys.argv[1])" "$2"\n'
            "fi\n"
            'if [ "$1" = -m ] && [ "$2" = venv ]; then\n'
            f'    exec "{sys.executable}" -m venv --without-pip "$3"\n'
            "fi\n"
            f'exec "{sys.executable}" "$@"\n'
        )
        python.chmod(0o755)
    failed = _make(tmp_path, str(python))
    assert failed.returncode != 0
    assert f"needs Python 3.11, and PYTHON={python} is not it" in failed.stderr
    assert "make demo PYTHON=" in failed.stderr
    assert not (tmp_path / ".venv").exists()
