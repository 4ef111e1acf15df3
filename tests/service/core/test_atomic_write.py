"""A file written atomically is the old one or the new one whatever stops the write."""

import os

import pytest

from service.core.atomic_write import write_atomically


def test_a_write_stopped_before_its_rename_leaves_the_old_file_and_nothing_beside_it(
    tmp_path, monkeypatch
):
    target = tmp_path / "run.json"
    target.write_text("old")

    def killed(_fd):
        raise KeyboardInterrupt  # where a kill would land: written, not yet durable

    monkeypatch.setattr(os, "fsync", killed)
    with pytest.raises(KeyboardInterrupt):
        write_atomically(target, "new, and longer than the old")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_a_new_file_takes_the_umask_s_mode_and_a_replaced_one_keeps_its_own(tmp_path):
    new, kept = tmp_path / "new.json", tmp_path / "kept.json"
    kept.write_bytes(b"old")
    kept.chmod(0o640)
    umask = os.umask(0o022)
    try:
        write_atomically(new, b"{}")
        write_atomically(kept, "{}")
    finally:
        os.umask(umask)
    assert (new.stat().st_mode & 0o777, new.read_bytes()) == (0o644, b"{}")
    assert (kept.stat().st_mode & 0o777, kept.read_text()) == (0o640, "{}")
