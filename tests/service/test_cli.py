"""The command line as a user meets it: clear messages and exit codes, no tracebacks."""

import re

import pytest
from typer.testing import CliRunner

from bench.frame_source import PatternSource
from bench.rig import SimulatedRig
from service.cli import app

runner = CliRunner()


def test_ingest_reports_what_arrived(source_id, monkeypatch):
    monkeypatch.setenv("CORTICAST_STREAM__SOURCE_ID", source_id)
    with SimulatedRig(PatternSource(), source_id=source_id, speed=5):
        result = runner.invoke(app, ["ingest", "--seconds", "1.2"])
    assert result.exit_code == 0, result.output
    assert "positions         from metadata" in result.output
    samples = int(re.search(r"samples\s+(\d+)", result.output).group(1))
    assert samples > 300
    assert "missing frames    0 in 0 gaps" in result.output


def test_ingest_without_a_stream_says_so(source_id, monkeypatch):
    monkeypatch.setenv("CORTICAST_STREAM__SOURCE_ID", source_id)
    monkeypatch.setenv("CORTICAST_STREAM__RESOLVE_TIMEOUT_S", "0.2")
    result = runner.invoke(app, ["ingest", "--seconds", "1"])
    assert result.exit_code == 1
    assert f"source_id='{source_id}' appeared within 0.2 s" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["ingest", "rig", "demo"])
def test_bad_config_stops_before_anything_starts(tmp_path, command):
    path = tmp_path / "bad.toml"
    path.write_text("[ingest]\nlost_after_s = 0\n")
    result = runner.invoke(app, [command, "--config", str(path)])
    assert result.exit_code == 2
    assert "ingest.lost_after_s: Input should be greater than 0" in result.output


def test_rig_refuses_a_missing_session_file(tmp_path):
    result = runner.invoke(app, ["rig", "--source", str(tmp_path / "nope.xdf"), "--seconds", "1"])
    assert result.exit_code == 1
    assert "nope.xdf" in result.output
