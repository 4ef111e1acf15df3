"""Exported files kept out of where they are served until their held-out check is recorded.

``corticast export`` writes a model's graphs, then scores the window graph and records the
check in every file (minutes later). Written in place, a kill or a failure between the two
left a file at OUT that the daemon serves without its below-persistence warning, over the
model that was there. Here each file is written into a hidden folder beside where it goes
(so moving it is a rename on the same file system) and moved there only when everything is
written and checked: the window graph, what the daemon's configuration and a swap name, last.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

from service.core.atomic_write import replace_keeping_mode

__all__ = ["StagedExport"]


class StagedExport:
    """Where to export ``out`` (and ``step_out``) until :meth:`publish` moves the files.

    Whatever was written there is removed when the block ends without :meth:`publish` (an
    error, Ctrl-C): the files that were at ``out`` stay as they were. A kill leaves only a
    hidden ``.NAME.unchecked-*`` folder, which no configuration names. A symlink at ``out``
    keeps pointing where it did (its target is replaced) and a file replaced keeps its mode,
    as :func:`models.metadata.replacing` does for one file.
    """

    def __init__(self, out: Path, step_out: Path | None) -> None:
        self._targets = [Path(os.path.realpath(p)) for p in (out, step_out) if p is not None]
        self._folders: dict[Path, Path] = {}
        self._made: list[Path] = []
        """Folders made for the files, deepest first: removed again when nothing is published
        (a run that does not load, a failed export), as an export that never began leaves."""
        self._published = False
        try:
            for target in self._targets:
                if target.parent not in self._folders:
                    self._made[:0] = _missing(target.parent)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    self._folders[target.parent] = Path(
                        tempfile.mkdtemp(prefix=f".{out.name}.unchecked-", dir=target.parent)
                    )
        except BaseException:
            self.__exit__(None, None, None)  # the step graph's folder could not be made
            raise
        staged = [self._folders[target.parent] / target.name for target in self._targets]
        self.window = staged[0]
        self.step = staged[1] if step_out is not None else None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for folder in self._folders.values():
            shutil.rmtree(folder, ignore_errors=True)
        if not self._published:
            for folder in self._made:
                with contextlib.suppress(OSError):  # not empty: someone else's files now
                    folder.rmdir()

    def as_published(self, text: str) -> str:
        """``text`` (what the exporter says it wrote) naming the files where they will be."""
        for place, folder in self._folders.items():
            text = text.replace(f"{folder}{os.sep}", f"{place}{os.sep}")
        return text

    def publish(self) -> list[Path]:
        """Move every file written into its place, the window graph last; returns where."""
        moved = []
        for place, folder in self._folders.items():
            for staged in sorted(folder.iterdir()):
                if staged != self.window:
                    moved.append(_move(staged, place / staged.name))
        moved.append(_move(self.window, self._targets[0]))
        self._published = True
        return moved


def _missing(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _move(staged: Path, target: Path) -> Path:
    replace_keeping_mode(staged, target)
    return target
