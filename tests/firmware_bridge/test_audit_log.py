"""The audit log appends durable JSON lines, refuses what it cannot write, never truncates."""

from __future__ import annotations

import pytest

from firmware_bridge.audit_log import AuditLog, read_audit_log
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
