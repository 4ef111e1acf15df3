"""The readiness judgement against a stimulator bridge that is connected but will not arm: a
real (dry-run) bridge on an audit log on disk, a real ingestor with no stream."""

from __future__ import annotations

from firmware_bridge import BridgeSettings, StimulationBridge
from service.daemon.status import Readiness
from service.ingest.ingestor import Ingestor
from service.ingest.settings import IngestSettings, StreamSettings


def test_a_bridge_that_refuses_arming_for_an_unreadable_history_makes_the_daemon_not_ready(
    tmp_path,
):
    """A bridge whose refractory and budget history cannot be read back from the audit log
    refuses every arm until the log is repaired. Readiness said nothing of it: ``/readyz``,
    systemd's READY=1 and ``/status`` called the daemon ready, and each arm then failed."""
    log = tmp_path / "audit.jsonl"
    log.write_text('{"event": "transmit", "clo\n{"event": "close", "time": 3.0}\n')
    ingestor = Ingestor(StreamSettings(source_id="no-such-stream"), IngestSettings())
    with StimulationBridge(BridgeSettings(audit_log=log)) as bridge:
        readiness = Readiness.judge(
            ingestor, None, bridge, started=True, stopping=False, reload_failure=None
        )
    refused = [reason for reason in readiness.reasons if "bridge refuses arming" in reason]
    assert len(refused) == 1, readiness.reasons
    assert "cannot be rebuilt from the audit log" in refused[0]
    assert f"'{log}' line 1 is not JSON" in refused[0]
