"""Progress bars of the command line, one look for every slow command: on stderr, only on a
terminal (a log file or a pipe gets none), and only once the work has taken long enough to wait
on, so a quick run prints nothing."""

from __future__ import annotations

from typing import IO, Protocol

SHOW_AFTER_S = 1.0
"""Seconds of work before a bar appears."""


class Progress(Protocol):
    """A progress bar as the code doing the work sees it: tqdm's two methods."""

    def update(self, n: int) -> object: ...

    def close(self) -> None: ...


class _NoProgress:
    """A bar that shows nothing, for callers that asked for none."""

    def update(self, n: int) -> None:
        """Nothing to draw."""

    def close(self) -> None:
        """Nothing to clear."""


NO_PROGRESS: Progress = _NoProgress()
"""The bar of work nobody watches."""


def progress_bar(
    total: int, *, desc: str, unit: str, file: IO[str] | None = None, delay: float = SHOW_AFTER_S
) -> Progress:
    """A tqdm bar of ``total`` units on ``file`` (stderr), drawn only where ``file`` is a
    terminal and only after ``delay`` seconds; it clears itself when closed."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=file,
        disable=None,  # tqdm's "off unless a terminal"
        delay=delay,
        leave=False,
        dynamic_ncols=True,
    )
