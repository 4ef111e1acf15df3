"""liblsl runs with the site's ``lsl_api.cfg`` (``service.ingest.liblsl_config``): read in a
fresh process, as liblsl reads its configuration once per process."""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from service.ingest.liblsl_config import QUIET, _sets_log_level, liblsl_config_file, quiet_config

ROOT = Path(__file__).resolve().parents[3]
_SESSION_OF_A_NEW_OUTLET = """
from service.ingest.lsl import quiet_liblsl
quiet_liblsl()
import pylsl
info = pylsl.StreamInfo("cfg-probe", "Markers", 1, 0, "string", "cfg-probe")
print(pylsl.StreamOutlet(info).get_info().session_id())
"""


def _session_seen(cwd: Path, **env: str) -> str:
    """The SessionID liblsl gives an outlet in a process that configured it as the daemon does."""
    environ = {k: v for k, v in os.environ.items() if k != "LSLAPICFG"}
    environ.update(PYTHONPATH=str(ROOT), HOME=str(cwd), **env)
    done = subprocess.run(
        [sys.executable, "-c", _SESSION_OF_A_NEW_OUTLET],
        cwd=cwd, env=environ, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_file_lslapicfg_names_is_in_effect_and_liblsl_kept_quiet(tmp_path):
    """A lab's lsl_api.cfg (KnownPeers, SessionID, ...) was ignored: the quiet log level was
    given to liblsl as its whole configuration, which wins over every file."""
    session = f"corticast-test-{uuid.uuid4().hex[:8]}"
    config = tmp_path / "site.cfg"
    config.write_text(f"[lab]\nSessionID = {session}\n")
    assert _session_seen(tmp_path, LSLAPICFG=str(config)) == session


def test_a_file_in_the_working_directory_that_sets_its_own_log_level_is_in_effect(tmp_path):
    """The file's own ``[log] level`` is kept: adding the quiet one too would give liblsl a
    key twice, and it drops a file with a duplicate key whole."""
    session = f"corticast-test-{uuid.uuid4().hex[:8]}"
    (tmp_path / "lsl_api.cfg").write_text(f"[log]\nlevel = -2\n\n[lab]\nSessionID = {session}")
    assert _session_seen(tmp_path) == session


@pytest.mark.parametrize(
    ("text", "sets"),
    [
        ("[log]\nlevel = 0\n", True),
        ("[lab]\nSessionID = x\n[log]\n  level=2\n", True),
        ("[log]\nfile = /tmp/lsl.log\n", False),
        ("[lab]\nlevel = 0\n", False),  # another section's key
        ("[log]\n;level = 0\n", False),  # a comment
        ("level = 0\n", False),  # before any section
        ("", False),
    ],
)
def test_whether_a_file_sets_the_log_level_is_read_as_liblsl_reads_it(text, sets):
    assert _sets_log_level(text) is sets


def test_the_quiet_level_is_added_to_a_file_that_sets_none(tmp_path, monkeypatch):
    config = tmp_path / "site.cfg"
    config.write_text("[lab]\nKnownPeers = {rig.lab}")  # no newline at the end
    monkeypatch.setenv("LSLAPICFG", str(config))
    assert liblsl_config_file() == config
    assert quiet_config() == "[lab]\nKnownPeers = {rig.lab}\n" + QUIET


def test_an_unreadable_lslapicfg_is_passed_over_as_liblsl_passes_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LSLAPICFG", str(tmp_path / "missing.cfg"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lsl_api.cfg").write_text("[lab]\nSessionID = here\n")
    assert liblsl_config_file() == Path("lsl_api.cfg")
