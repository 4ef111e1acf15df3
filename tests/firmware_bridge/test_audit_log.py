"""The audit log appends durable JSON lines, refuses what it cannot write, never truncates,
rotates by size with a checkpoint at the head of each new file, and is read back across its
rotated files, skipping only a torn last line."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from firmware_bridge.audit_log import AuditLog, audit_files, read_audit_history, read_audit_log
from firmware_bridge.errors import AuditLogError


def test_records_are_appended_with_a_time_and_survive_reopening(scratch):
    path = scratch / "sub" / "audit.jsonl"
    with AuditLog(path) as log:
        log.append({"event": "arm"})
    with AuditLog(path) as log:
        log.append({"event": "disarm", "reason": "µ test"})
    records = read_audit_log(path)
    assert [r["event"] for r in records] == ["arm", "disarm"]
    assert records[1]["reason"] == "µ test" and records[0]["time"] > 0


def test_a_lone_surrogate_is_written_as_its_json_escape_and_reads_back(scratch):
    """A disarm's reason may hold one (a file name that is not UTF-8, as Python decodes it):
    its record must be written, or the disarm that writes it fails."""
    reason = "cannot read '/data/\udcff.onnx'; operator \ud800"
    with AuditLog(scratch / "a.jsonl") as log:
        log.append({"event": "disarm", "reason": reason})
        log.append({"event": "arm"})
    assert [r.get("reason") for r in read_audit_log(scratch / "a.jsonl")] == [reason, None]
    assert b"\\udcff.onnx" in (scratch / "a.jsonl").read_bytes()


def test_non_json_values_are_refused_rather_than_written_wrong(scratch):
    with AuditLog(scratch / "a.jsonl") as log:
        with pytest.raises(AuditLogError, match="not plain JSON"):
            log.append({"value": float("nan")})
        with pytest.raises(AuditLogError, match="not plain JSON"):
            log.append({"value": object()})
    assert read_audit_log(scratch / "a.jsonl") == []


def test_append_after_close_fails_and_close_is_idempotent(scratch):
    log = AuditLog(scratch / "a.jsonl")
    log.close()
    log.close()
    with pytest.raises(AuditLogError, match="is closed"):
        log.append({"event": "x"})


def test_an_unopenable_path_is_an_audit_log_error(scratch):
    (scratch / "file").write_text("")
    with pytest.raises(AuditLogError, match="cannot open audit log"):
        AuditLog(scratch / "file" / "audit.jsonl")


def test_a_log_another_process_has_open_is_refused_until_it_closes(scratch):
    """Two bridges on one log (a second daemon beside the service) each counted only their own
    trains: with a day budget of one, each gave one. The second log is refused at open."""
    path = scratch / "audit.jsonl"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOG, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert holder.stdout.readline() == b"open\n"
        with pytest.raises(AuditLogError, match=rf"'{path}' is in use by another bridge"):
            AuditLog(path)
    finally:
        holder.communicate(b"close\n", timeout=30)
    with AuditLog(path) as log:  # closed (or its process gone): the lock is free again
        with pytest.raises(AuditLogError, match="in use by another bridge"):
            AuditLog(path)  # and in one process too
        log.append({"event": "x"})


def test_a_log_that_could_not_start_again_frees_its_path_when_closed(scratch):
    """Its path taken away into a folder that is gone, the log cannot start again and its file
    is left closed; closing it then kept the path's lock until the object was collected, so
    the bridge the supervisor reopens on that path was refused as another bridge's."""
    path = scratch / "audit.jsonl"
    log = AuditLog(path)
    path.unlink()
    path.symlink_to(scratch / "gone" / path.name)
    with pytest.raises(AuditLogError, match="cannot append"):
        log.append({"event": "x"})
    log.close()
    path.unlink()
    with AuditLog(path) as again:
        again.append({"event": "y"})


_HOLD_LOG = """
import sys
from firmware_bridge.audit_log import AuditLog
with AuditLog(sys.argv[1]):
    print("open", flush=True)
    sys.stdin.readline()
"""


def test_records_carry_the_wall_time_and_the_boot_id(scratch):
    with AuditLog(scratch / "a.jsonl") as log:
        log.append({"event": "x"})
        log.append({"event": "y"}, durable=False)
    records = read_audit_log(scratch / "a.jsonl")
    assert [r["event"] for r in records] == ["x", "y"]
    boot = Path("/proc/sys/kernel/random/boot_id")
    expected = boot.read_text().strip() if boot.exists() else None
    assert all(r["boot"] == expected and r["time"] > 0 for r in records)


def _fill(log, n, size=100):
    for i in range(n):
        log.append({"event": "filler", "i": i, "pad": "x" * size})


def test_rotation_at_the_size_cap_starts_each_file_with_a_checkpoint_and_prunes(scratch):
    path = scratch / "audit.jsonl"
    with AuditLog(path, max_bytes=1_000, keep_files=2) as log:
        log.set_checkpoint(lambda: {"trains": [1.0, 2.0]})
        _fill(log, 40)
    files = audit_files(path)
    assert [f.name for f in files] == ["audit.jsonl.2", "audit.jsonl.1", "audit.jsonl"]
    for file in files:
        lines = file.read_text().splitlines()
        assert file.stat().st_size <= 1_000
        assert json.loads(lines[0]) | {"time": 0, "boot": 0} == {
            "time": 0,
            "boot": 0,
            "event": "checkpoint",
            "trains": [1.0, 2.0],
        }
    fillers = [r["i"] for r in read_audit_log(path) if r["event"] == "filler"]
    assert fillers == list(range(fillers[0], 40)), "oldest first, nothing missing in between"
    assert fillers[0] > 0, "the oldest files were deleted"


def test_without_a_checkpoint_files_rotate_but_none_is_deleted(scratch):
    path = scratch / "audit.jsonl"
    with AuditLog(path, max_bytes=500, keep_files=1) as log:
        _fill(log, 20)
    assert len(audit_files(path)) > 2
    assert [r["i"] for r in read_audit_log(path)] == list(range(20))


def test_a_log_that_ends_torn_is_rotated_aside_so_the_torn_line_stays_last(scratch, caplog):
    path = scratch / "audit.jsonl"
    path.write_text('{"event":"arm"}\n{"event":"transm')
    with caplog.at_level(logging.WARNING, "corticast.bridge"), AuditLog(path) as log:
        log.append({"event": "start"})
    assert path.with_name("audit.jsonl.1").read_text().endswith('"transm')
    assert [r["event"] for r in read_audit_log(path)] == ["arm", "start"]
    assert "torn line" in caplog.text and "skipped the torn last line" in caplog.text


def test_a_corrupt_line_before_the_last_is_an_error_naming_the_file_and_line(scratch):
    path = scratch / "audit.jsonl"
    path.write_text('{"event":"arm"}\n[1, 2]\n{"event":"disarm"}\n')
    with pytest.raises(AuditLogError, match=rf"'{path}' line 2 must be a JSON object"):
        read_audit_log(path)
    path.write_text('{"event":"arm"}\n\xff\n')
    with pytest.raises(AuditLogError, match=rf"'{path}' line 2 is not JSON"):
        read_audit_history(path)


def test_history_is_read_from_the_newest_file_that_starts_with_a_checkpoint(scratch):
    path = scratch / "audit.jsonl"
    path.with_name("audit.jsonl.3").write_text("corrupt, but older than any checkpoint\n")
    path.with_name("audit.jsonl.2").write_text('{"event":"checkpoint","n":2}\n{"event":"a"}\n')
    path.with_name("audit.jsonl.1").write_text('{"event":"b"}\n')
    path.write_text('{"event":"c"}\n')  # a crash mid-rotation: no checkpoint here
    history = read_audit_history(path)
    assert [r["event"] for _, r in history] == ["checkpoint", "a", "b", "c"]
    assert history[0][0] == f"{path.with_name('audit.jsonl.2')}:1"
    assert read_audit_history(scratch / "none.jsonl") == []


def test_reading_a_log_that_does_not_exist_says_so(scratch):
    with pytest.raises(FileNotFoundError, match="no audit log"):
        read_audit_log(scratch / "none.jsonl")


def test_rotation_settings_are_checked(scratch):
    with pytest.raises(ValueError, match="'max_bytes' must be an int >= 1, got 0"):
        AuditLog(scratch / "a.jsonl", max_bytes=0)
    with pytest.raises(TypeError, match="'keep_files' must be an int"):
        AuditLog(scratch / "a.jsonl", keep_files=1.5)
