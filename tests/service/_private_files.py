"""Another user's access to a test's file: a POSIX ACL entry, as ``setfacl -m u:nobody:r``
writes it (no setfacl needed), or the file given to that user (root only)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from service.core.private_files import ACL_ATTRIBUTE

NOBODY = 65534
_NO_ID = 0xFFFFFFFF
_USER_OBJ, _USER, _GROUP_OBJ, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x10, 0x20


def grant_read_to_nobody(path: Path) -> None:
    """Let user ``nobody`` read the 0600 file ``path`` by an ACL entry, as the kernel stores
    one; its mask then shows as the group's bits (the mode reads 0640). Skips the test where
    the filesystem has no ACLs."""
    entries = [
        (_USER_OBJ, 6, _NO_ID),
        (_USER, 4, NOBODY),
        (_GROUP_OBJ, 0, _NO_ID),
        (_MASK, 4, _NO_ID),
        (_OTHER, 0, _NO_ID),
    ]
    acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in entries)
    try:
        os.setxattr(path, ACL_ATTRIBUTE, acl)
    except OSError as err:
        pytest.skip(f"no POSIX ACLs here: {err}")


def give_to_nobody(path: Path) -> None:
    """``chown nobody path``; skips the test where this process may not (it is not root)."""
    try:
        os.chown(path, NOBODY, -1)
    except PermissionError as err:
        pytest.skip(f"only root may give a file away: {err}")


def give_group_to_nogroup(path: Path) -> None:
    """``chgrp nogroup path`` (gid 65534), a group this process is not in; skips the test
    where it may not (it is not root) or is in that group."""
    if os.getegid() == NOBODY or NOBODY in os.getgroups():
        pytest.skip("this process is in group 65534")
    try:
        os.chown(path, -1, NOBODY)
    except PermissionError as err:
        pytest.skip(f"only root may give a file to a group it is not in: {err}")
