"""The one error type of session files."""

from __future__ import annotations


class SessionFileError(ValueError):
    """A session file is corrupt, truncated, or does not hold a usable µECoG recording.

    A ValueError, because the file's content is the bad input; every message starts with the
    file's path so a batch job names the file that failed.
    """
