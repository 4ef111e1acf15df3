"""Whether a file has a POSIX ACL: a secret's mode bits alone do not say who may read it.

An ACL entry can let a named user or group read a file whose mode reads 0640 or 0600 (the
group's bits then show the ACL's mask), so a check of the mode passes a file that another
user may read. The secrets' checks (``[api] token_file``, ``ssl_keyfile``, the CURVE secret
keys) refuse one with an ACL.
"""

from __future__ import annotations

import os
from pathlib import Path

ACL_ATTRIBUTE = "system.posix_acl_access"
"""The extended attribute Linux stores a file's access ACL in (absent when it has none)."""


def has_acl(file: int | Path) -> bool:
    """Whether ``file`` (an open descriptor, or a path, followed) has an access ACL; False
    where the filesystem has no extended attributes."""
    try:
        return ACL_ATTRIBUTE in os.listxattr(file)
    except OSError:
        return False
