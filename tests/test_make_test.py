"""`make test` runs every test: phase 1 leaves out the tests marked ``alone``, and phase 2 runs
them from the files the Makefile's ``ALONE_TESTS`` names (collecting only those is ~15 s quicker
than collecting the whole suite again). A file that marks a test ``alone`` and is not named
there would run in neither phase."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")
_MARKED = re.compile(r"\bmark\.alone\b")


def _named_in_the_makefile() -> set[str]:
    match = re.search(r"^ALONE_TESTS :?= (.+)$", MAKEFILE, re.M)
    assert match, "the Makefile defines no ALONE_TESTS"
    return set(match.group(1).split())


def _marking_a_test_alone() -> set[str]:
    here = Path(__file__).resolve()
    return {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "tests").rglob("*.py")
        if path != here and _MARKED.search(path.read_text(encoding="utf-8"))
    }


def test_phase_two_runs_the_files_that_mark_a_test_alone_and_only_those():
    assert _marking_a_test_alone() == _named_in_the_makefile()
    assert re.search(r"^\t\S*python -m pytest -m alone \$\(ALONE_TESTS\)$", MAKEFILE, re.M)


def _target(name: str) -> tuple[list[str], list[str]]:
    """A Makefile target's prerequisites and recipe lines."""
    match = re.search(rf"^{name}:(.*)\n((?:\t.*\n)*)", MAKEFILE, re.M)
    assert match, f"the Makefile has no target {name!r}"
    return match.group(1).split(), [line.strip() for line in match.group(2).splitlines()]


def test_make_test_lints_as_make_lint_does():
    """`make test` ran `ruff check` but not `ruff format --check`: a change `make lint`
    refused passed `make test`."""
    prerequisites, recipe = _target("test")
    _, lint = _target("lint")
    assert "lint" in prerequisites or set(lint) <= set(recipe), (prerequisites, recipe)
