"""Text from outside (an operator's reason, a client's field) on its way into a log line.

One line of a plain-text log is one record: a newline in a disarm reason would let one request
write a second, forged record (``... ARMED by operator``). What may break or disguise a line is
a control character (``\\n``, ``\\r``, ``\\x1b``, ``\\x85``), a Unicode line or paragraph
separator (``U+2028``, ``U+2029``) or an invisible format character (``U+202E`` reverses the
text after it). Values that name or explain something are refused with them
(:func:`line_problem`); whatever reaches a log all the same is escaped as ``repr`` would
(:func:`escape_controls`), lone surrogates too (no UTF-8 log can hold one).
"""

from __future__ import annotations

import unicodedata

_BREAKING = {
    "Cc": "a control character",
    "Cf": "an invisible format character",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}
"""Unicode categories that may break or disguise a log line, and what to call them."""
_ESCAPED = {*_BREAKING, "Cs"}


def line_problem(text: str) -> str | None:
    """Why ``text`` cannot go into a log line as it is (its first such character, by position
    and escaped), or None when it can."""
    if text.isprintable():  # the common case, at C speed: nothing of _BREAKING is printable
        return None
    for index, char in enumerate(text):
        what = _BREAKING.get(unicodedata.category(char))
        if what is not None:
            return f"character {index} is {char!r}, {what}"
    return None


def escape_controls(text: str) -> str:
    """``text`` with every character that may break or disguise a log line escaped as in its
    ``repr`` (a newline becomes the two characters ``\\n``); the rest, ``µ`` included, kept."""
    if text.isprintable():
        return text
    return "".join(
        repr(char)[1:-1] if unicodedata.category(char) in _ESCAPED else char for char in text
    )
