"""The stimulator link's shared key: read from the file the configuration names, never logged.

The file holds the key as hex text (``python3 -c 'import secrets; print(secrets.token_hex(32))'``),
surrounding whitespace ignored; at least 16 bytes (32 hex digits), since the tag is only as
strong as the key. Like an SSH private key, a file that its group or other users can read or
write is refused (PROTOCOL.md: readable by its owner only; a writer could plant a key it knows),
and so, by the check every secret goes through (:func:`service.core.private_files.check_private`),
is one owned by another user (who may read it and chmod it whatever its mode) or given an ACL.
Anything but a regular file of at most :data:`MAX_KEY_FILE_BYTES` is refused before a byte is read:
config load would wait forever on a FIFO, and read /dev/zero until memory ran out.
"""

from __future__ import annotations

from pathlib import Path

from service.core.private_files import read_secret_text

MIN_KEY_BYTES = 16
MAX_KEY_FILE_BYTES = 4096
"""Room for a 2048-byte key in hex with any whitespace around it, far more than any needs."""

_WHY = "the key lets whoever reads it command the stimulator, and whoever writes it choose the key"


def load_link_key(path: Path) -> bytes:
    """The key in ``path``.

    Raises
    ------
    ValueError
        If the file cannot be read, is not a regular file of at most
        :data:`MAX_KEY_FILE_BYTES`, is open to its group or other users (by its mode, its
        owner or an ACL), or does not hold at least 32 hex digits; the message names the
        file and the rule, never its content.
    """
    text = read_secret_text(
        path,
        label=repr(str(path)),
        noun="key",
        max_bytes=MAX_KEY_FILE_BYTES,
        encoding="ASCII",
        why=_WHY,
        owner_only=True,
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
