"""The stimulator link's shared key: read from the file the configuration names, never logged.

The file holds the key as hex text (``python3 -c 'import secrets; print(secrets.token_hex(32))'``),
surrounding whitespace ignored; at least 16 bytes (32 hex digits), since the tag is only as
strong as the key. Like an SSH private key, a file that its group or other users can read or
write is refused (PROTOCOL.md: readable by its owner only; a writer could plant a key it knows).
"""

from __future__ import annotations

import stat
from pathlib import Path

MIN_KEY_BYTES = 16


def load_link_key(path: Path) -> bytes:
    """The key in ``path``.

    Raises
    ------
    ValueError
        If the file cannot be read, is open to its group or other users, or does not hold
        at least 32 hex digits; the message names the file and the rule, never its content.
    """
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "it is not ASCII text"
        raise ValueError(f"{str(path)!r} cannot be read: {reason}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(
            f"{str(path)!r} is open to users other than its owner (mode "
            f"{stat.S_IMODE(mode):04o}): chmod go-rwx it, the key lets whoever reads it command "
            "the stimulator, and whoever writes it choose the key"
        )
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{str(path)!r} must hold the key as hex digits") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"{str(path)!r} must hold at least {2 * MIN_KEY_BYTES} hex digits "
            f"({MIN_KEY_BYTES} bytes), got {len(text)}"
        )
    return key
