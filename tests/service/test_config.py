import os
import re
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from service.config import MAX_CONFIG_BYTES, ConfigError, Settings, load_settings
from tests.service._private_files import (
    give_group_to_nogroup,
    give_to_nobody,
    grant_read_to_nobody,
)

EXAMPLE = Path(__file__).parents[2] / "deploy" / "corticast.example.toml"


def test_defaults_need_no_file(monkeypatch):
    for name in list(__import__("os").environ):
        if name.startswith("CORTICAST_"):
            monkeypatch.delenv(name)
    settings = load_settings(None)
    assert settings.stream.type == "ECoG"
    assert settings.ingest.stale_after_frames == 10


def test_example_config_is_valid_and_states_the_defaults():
    assert load_settings(EXAMPLE) == Settings()


def test_the_stall_limit_left_unset_follows_the_ack_deadline(tmp_path):
    """A longer ACK deadline alone (1 s, a slow serial link) was refused with the stall limit's
    fixed default (2 s, not longer than the two 1 s waits a request may have for the device):
    unset, the limit is 2 s beyond them; set, it must still be longer than them."""
    assert Settings().stall_after_s == pytest.approx(2.2)
    path = tmp_path / "slow.toml"
    path.write_text("[bridge]\nack_timeout_s = 1\n")
    assert load_settings(path).stall_after_s == pytest.approx(4.0)
    path.write_text("[bridge]\nack_timeout_s = 1\n[loop]\nstall_after_s = 2.5\n")
    assert load_settings(path).stall_after_s == 2.5


def test_every_key_the_example_config_shows_or_comments_out_is_a_setting_and_all_are_there():
    """Its commented-out keys (``# path = ...``) are not loaded: a renamed setting would leave
    them to be copied, and refused, at a rig; a new setting, left out, is undocumented."""
    tables: dict[str, list[str]] = {}
    for block in re.split(r"^\[", EXAMPLE.read_text(encoding="utf-8"), flags=re.M)[1:]:
        name, body = block.split("]", 1)
        tables[name] = re.findall(r"^#?\s*([a-z_][a-z0-9_]*)\s*=\s*\S", body, re.M)
    problems = []
    for name, keys in tables.items():
        model = Settings
        for part in name.split("."):
            model = model.model_fields[part].annotation
        problems += [
            f"[{name}] {key} is not a setting" for key in keys if key not in model.model_fields
        ]
        for key, field in model.model_fields.items():
            nested = hasattr(field.annotation, "model_fields") and f"{name}.{key}" in tables
            if key not in keys and not nested:
                problems.append(f"[{name}] {key} is not in the example")
    assert set(tables) >= set(Settings.model_fields)
    assert not problems, "\n".join(problems)


def test_file_values_apply_and_environment_overrides_them(tmp_path, monkeypatch):
    path = tmp_path / "c.toml"
    path.write_text('[ingest]\nring_seconds = 3\n[stream]\nname = "file"\n')
    monkeypatch.setenv("CORTICAST_STREAM__NAME", "env")
    settings = load_settings(path)
    assert settings.ingest.ring_seconds == 3
    assert settings.stream.name == "env"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[ingest]\nring_seconds = -1\n",
            r"ingest\.ring_seconds: Input should be greater than 0, got -1",
        ),
        ("[ingest]\nring_secs = 3\n", r"ingest\.ring_secs: not a setting"),
        ("[stim]\narmed = true\n", r"stim: not a section"),
        ('[stream]\nname = "it\'s"\n', r"stream\.name: String should match pattern"),
        ("[rig]\nchunk_size = 0\n", r"rig\.chunk_size: Input should be greater than or equal to 1"),
        (
            "[zmq]\nstatus_period_s = 0\n",
            r"zmq\.status_period_s: Input should be greater than or equal to 0\.1, got 0",
        ),
        ("[zmq]\nstatus_period_s = nan\n", r"zmq\.status_period_s: Input should be a finite"),
        (  # a wave stage starved for a moment would be taken as stuck
            "[loop]\nstall_after_s = 0.1\n",
            r"loop\.stall_after_s: Input should be greater than or equal to 0\.5, got 0\.1",
        ),
        (  # a wave stage waiting for the device's answer would be taken as stuck
            "[loop]\nstall_after_s = 2\n[bridge]\nack_timeout_s = 1\n",
            r"loop\.stall_after_s \(2 s\) must be longer than twice bridge\.ack_timeout_s "
            r"\(1 s\): the wave stage waits that long",
        ),
        (  # a model fast enough to pass trains would be taken as stuck at every window
            "[loop]\nstall_after_s = 0.5\n[interlocks]\nmax_sample_age_s = 0.8\n",
            r"loop\.stall_after_s \(0\.5 s\) must be longer than interlocks\.max_sample_age_s "
            r"\(0\.8 s\): a model whose windows take between the two",
        ),
        ("[ingest\n", "is not valid TOML"),
        (  # 373 GiB of ring: a MemoryError traceback naming an array shape at start
            "[ingest]\nring_seconds = 1e6\n",
            r"ingest\.ring_seconds \(1e\+06 s\) at stream\.sample_rate_hz \(277\.78 Hz\) is "
            r"a ring of 277780000 frames; at most 1048576 \(1\.5 GB",
        ),
        (  # 134 GiB, the same way
            "[stream]\nsample_rate_hz = 1e7\n",
            r"stream\.sample_rate_hz \(1e\+07 Hz\) is a ring of 100000000 frames",
        ),
        (  # the baseline would measure 1.5 s where 2 s are configured
            "[ingest]\nring_seconds = 1.5\n",
            r"ingest\.ring_seconds \(1\.5 s\) must hold loop\.robust_sd_seconds \(2 s\)",
        ),
        (  # the baseline reads no frame another tool's marker may still blank
            '[ingest]\nring_seconds = 2.2\nstimulation_marker_streams = ["tool"]\n',
            r"ingest\.ring_seconds \(2\.2 s\) must hold loop\.robust_sd_seconds \(2 s\) of "
            r"measured frames before the last ingest\.stimulation_marker_latency_ms \(500 ms\)",
        ),
    ],
)
def test_invalid_file_names_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as raised:
        load_settings(path)
    assert str(path) in str(raised.value)


def test_invalid_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("CORTICAST_INGEST__LOST_AFTER_S", "soon")
    with pytest.raises(
        ConfigError,
        match=r"ingest\.lost_after_s: .*'soon' \(from environment "
        r"CORTICAST_INGEST__LOST_AFTER_S\)",
    ):
        load_settings(None)


def test_a_variable_nested_below_a_setting_is_named(monkeypatch):
    """``CORTICAST_API__TOKEN__FILE`` (meant: ``__TOKEN_FILE``) reaches ``api.token`` as a
    table; the refusal named only api.token, which the operator never set."""
    monkeypatch.setenv("CORTICAST_API__TOKEN__FILE", "/run/secrets/token")
    with pytest.raises(ConfigError) as raised:
        load_settings(None)
    assert str(raised.value).splitlines()[1:] == [
        "  api.token: Input should be a valid string, got '<secret>' (from environment "
        "CORTICAST_API__TOKEN__FILE)"
    ]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (
            '[api]\nhost = "0.0.0.0"\ntoken = "short"\n',
            "api.token: must be at least 32 characters when 'host' ('0.0.0.0') is not a "
            "loopback address, got 5; e.g. python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'",
        ),
        (
            '[zmq]\npub_endpoint = "foo"\n',
            "zmq: 'pub_endpoint' must look like 'tcp://127.0.0.1:5556' (transport one of "
            "('tcp', 'ipc', 'inproc')), got 'foo'",
        ),
    ],
    ids=["token", "section"],
)
def test_a_rule_that_says_what_it_got_is_not_followed_by_another_got(tmp_path, text, said):
    """Before: ', got '<secret>'' after the token rule's own 'got 5; e.g. ...', and a
    section's whole table after a section rule's 'got 'foo''."""
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert str(raised.value).splitlines()[1:] == [f"  {said}"]


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_a_file_saved_with_a_byte_order_mark_is_read(tmp_path):
    """Some editors (Windows Notepad) start a UTF-8 file with a byte order mark; tomllib then
    refused it as 'Invalid statement (at line 1, column 1)', a line that looks right."""
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf[ingest]\nring_seconds = 20\n")
    assert load_settings(path).ingest.ring_seconds == 20


def test_the_api_token_can_come_from_a_file_named_in_the_environment(tmp_path, monkeypatch):
    """A container secret (/run/secrets/...) carries the token, not an environment variable
    (which `docker inspect` shows); the file's trailing newline is not part of it."""
    secret = tmp_path / "corticast_api_token"
    secret.write_text("a-token-from-a-secret-file-0123456789\n")
    secret.chmod(0o600)
    monkeypatch.delenv("CORTICAST_API__TOKEN", raising=False)
    monkeypatch.setenv("CORTICAST_API__TOKEN_FILE", str(secret))
    token = load_settings(None).api.token
    assert token is not None and token.get_secret_value() == "a-token-from-a-secret-file-0123456789"


@pytest.mark.parametrize(
    ("token_line", "content", "message"),
    [
        ('token = "inline-token-0123456789"\n', "x", r"api\.token_file: .*'token' or 'token_file'"),
        ("", "  \n", r"api: .*'token_file' .* is empty"),
        ("", None, r"api\.token_file: Path does not point to a file"),
        ("", "t" * 5000, r"api: .*'token_file' .* is 5000 bytes long, more than a token file's"),
    ],
    ids=["both", "empty", "missing", "too-large"],
)
def test_a_token_file_that_cannot_be_used_names_the_key_and_never_the_token(
    tmp_path, monkeypatch, token_line, content, message
):
    monkeypatch.delenv("CORTICAST_API__TOKEN", raising=False)
    secret = tmp_path / "token"
    if content is not None:
        secret.write_text(content)
        secret.chmod(0o600)
    path = tmp_path / "c.toml"
    path.write_text(f'[api]\n{token_line}token_file = "{secret}"\n')
    with pytest.raises(ConfigError, match=message) as raised:
        load_settings(path)
    assert "inline-token" not in str(raised.value)


def test_strict_policy_numbers_still_take_environment_overrides(monkeypatch):
    monkeypatch.setenv("CORTICAST_POLICY__MIN_PGD", "0.7")
    monkeypatch.setenv("CORTICAST_POLICY__STIMULATION__AMPLITUDE_UA", "20")
    monkeypatch.setenv("CORTICAST_POLICY__TARGET_ELECTRODES", "[[3, 4]]")
    settings = load_settings(None)
    assert settings.policy.min_pgd == 0.7
    assert settings.policy.stimulation.amplitude_ua == 20
    assert settings.policy.target_electrodes == ((3, 4),)


def test_a_policy_the_interlocks_refuse_names_each_key_and_not_the_whole_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        "[policy]\ntarget_electrodes = [[0, 20]]\n[policy.stimulation]\nfrequency_hz = 300\n"
    )
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    lines = str(raised.value).splitlines()[1:]
    assert lines == [
        "  policy.target_electrodes.0: must be an electrode (row, col) on the 18x20 grid, "
        "row < 18 and col < 20, got (0, 20)",
        "  policy.stimulation.frequency_hz: frequency must be in [1, 200] Hz, got 300: the "
        "bridge's 'frequency' interlock ([interlocks]) would block every request",
    ]


def test_a_policy_whose_two_phases_overrun_the_pulse_period_is_refused_like_the_bridge_would(
    tmp_path,
):
    """Within every bound, yet 2 x 1000 µs phases do not fit a 2 ms period at 500 Hz: the
    bridge's pulse-timing interlock blocks every such request, so the policy is refused."""
    path = tmp_path / "c.toml"
    path.write_text(
        "[interlocks]\nmax_phase_width_us = 1000\nmax_frequency_hz = 500\n"
        "[policy]\ntarget_electrodes = [[3, 4]]\n"
        "[policy.stimulation]\namplitude_ua = 5\nphase_width_us = 1000\nfrequency_hz = 500\n"
    )
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert str(raised.value).splitlines()[1:] == [
        "  policy.stimulation: two phases of 1000 µs do not fit in one period at 500 Hz: the "
        "bridge's 'pulse_timing' interlock ([interlocks]) would block every request",
    ]


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o620], ids=["others-read", "o+r", "g+w"])
def test_a_token_file_other_users_may_read_or_its_group_write_is_refused(
    tmp_path, monkeypatch, mode
):
    """Whoever reads the token can arm stimulation: the rule the CURVE secret keys follow."""
    monkeypatch.delenv("CORTICAST_API__TOKEN", raising=False)
    secret = tmp_path / "token"
    secret.write_text("a-token-other-users-could-read-0123\n")
    secret.chmod(mode)
    path = tmp_path / "c.toml"
    path.write_text(f'[api]\ntoken_file = "{secret}"\n')
    with pytest.raises(
        ConfigError, match=rf"'token_file' .* is open to other users \(mode 0{mode:o}\)"
    ) as raised:
        load_settings(path)
    assert "could-read" not in str(raised.value)
    secret.chmod(0o640)  # read by the daemon's group: allowed
    token = load_settings(path).api.token
    assert token is not None and token.get_secret_value() == "a-token-other-users-could-read-0123"


@pytest.mark.parametrize("setting", ["token_file", "ssl_keyfile"])
def test_a_secret_an_acl_lets_another_user_read_is_refused(tmp_path, monkeypatch, setting):
    """An ACL entry lets a named user read a 0600 file while its mode reads 0640, which the
    group rule allows: the user it names can read the token (or the TLS key) all the same."""
    monkeypatch.delenv("CORTICAST_API__TOKEN", raising=False)
    secret, path = _config_naming_secret(
        tmp_path, setting, "a-token-an-acl-lets-nobody-read-0123", 0o600, grant_read_to_nobody
    )
    assert secret.stat().st_mode & 0o777 == 0o640
    with pytest.raises(ConfigError, match=r"has an ACL that may let other users read it"):
        load_settings(path)


@pytest.mark.parametrize("setting", ["token_file", "ssl_keyfile"])
def test_a_secret_another_user_owns_is_refused(tmp_path, monkeypatch, setting):
    """A file's owner may read it and chmod it whatever its mode: a 0600 token owned by
    another user (not root) is that user's to read."""
    monkeypatch.delenv("CORTICAST_API__TOKEN", raising=False)
    _, path = _config_naming_secret(
        tmp_path, setting, "a-token-its-owner-nobody-can-read-0123", 0o600, give_to_nobody
    )
    with pytest.raises(ConfigError, match=r"belongs to another user \(uid 65534\)") as raised:
        load_settings(path)
    assert "nobody-can-read" not in str(raised.value)


@pytest.mark.parametrize("setting", ["token_file", "ssl_keyfile"])
def test_a_secret_a_group_the_daemon_is_not_in_may_read_is_refused(tmp_path, monkeypatch, setting):
    """0640 is for the daemon to read a secret by its group: under another group, every member
    of that group may read it."""
    monkeypatch.delenv("CORTICAST_API__TOKEN", raising=False)
    secret, path = _config_naming_secret(
        tmp_path, setting, "a-token-the-group-nogroup-can-read-0123", 0o640, give_group_to_nogroup
    )
    with pytest.raises(
        ConfigError, match=r"may be read by group 65534, which the daemon is not in"
    ):
        load_settings(path)
    secret.chmod(0o600)  # the group may not read it: allowed
    load_settings(path)


def _config_naming_secret(
    tmp_path: Path, setting: str, token: str, mode: int, exposed: Callable[[Path], None]
) -> tuple[Path, Path]:
    """A secret holding ``token`` at ``mode``, then ``exposed`` (an ACL, another owner or
    group), and a config naming it as ``setting``: (the secret, the config)."""
    secret = tmp_path / "secret"
    secret.write_text(f"{token}\n")
    secret.chmod(mode)
    exposed(secret)
    path = tmp_path / "c.toml"
    path.write_text(f"[api]\n{_secret_setting(tmp_path, setting, secret)}")
    return secret, path


def _secret_setting(tmp_path: Path, setting: str, secret: Path) -> str:
    """``[api]`` lines that name ``secret`` as its ``token_file`` or ``ssl_keyfile``."""
    if setting == "token_file":
        return f'token_file = "{secret}"\n'
    certificate = tmp_path / "cert.pem"
    certificate.write_text("not read before the key is checked\n")
    return f'token = "{"t" * 32}"\nssl_certfile = "{certificate}"\nssl_keyfile = "{secret}"\n'


def test_a_token_from_a_file_obeys_the_token_rules(tmp_path, monkeypatch):
    monkeypatch.delenv("CORTICAST_API__TOKEN", raising=False)
    secret = tmp_path / "token"
    secret.write_text("short-token\n")
    secret.chmod(0o600)
    path = tmp_path / "c.toml"
    path.write_text(
        f'[api]\nhost = "0.0.0.0"\nallow_insecure_remote = true\ntoken_file = "{secret}"\n'
    )
    with pytest.raises(ConfigError, match="at least 32 characters") as raised:
        load_settings(path)
    assert "short-token" not in str(raised.value)


def test_a_misspelt_environment_section_is_refused_not_ignored(monkeypatch):
    monkeypatch.setenv("CORTICAST_BRIDG__PORT", "5")
    with pytest.raises(ConfigError, match=r"CORTICAST_BRIDG__PORT names no configuration section "
                       r"'bridg'; the sections are api, bridge, "):  # fmt: skip
        load_settings(None)
    monkeypatch.delenv("CORTICAST_BRIDG__PORT")
    monkeypatch.setenv("CORTICAST_LOG_FORMAT", "json")  # not a setting: left alone
    monkeypatch.setenv("CORTICAST_BRIDGE__PORT", "5555")
    assert load_settings(None).bridge.port == 5555


def test_a_rule_across_sections_is_said_without_an_empty_key_or_pydantics_prefix(tmp_path):
    """A cross-section rule has no one key: its line is the rule's own message (it names the
    keys), not '  : Value error, ...'."""
    path = tmp_path / "ring.toml"
    path.write_text("[ingest]\nring_seconds = 1.5\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert str(raised.value).splitlines()[1:] == [
        "  ingest.ring_seconds (1.5 s) must hold loop.robust_sd_seconds (2 s) of measured "
        "frames, which the amplitude baseline reads at every refresh: 556 frames at "
        "stream.sample_rate_hz (277.78 Hz), and it keeps 417"
    ]


def test_an_environment_value_that_is_not_json_where_json_is_needed_names_the_variable(
    monkeypatch,
):
    """A list or table from the environment is JSON; a malformed one was pydantic-settings'
    'error parsing value for field "policy" from source "EnvSettingsSource"', a ValueError
    that exits 1 (systemd restarts it) instead of a ConfigError (exit 2) naming the variable."""
    monkeypatch.setenv("CORTICAST_POLICY__TARGET_ELECTRODES", "[[1, 2]")
    with pytest.raises(
        ConfigError,
        match=r"environment variable CORTICAST_POLICY__TARGET_ELECTRODES \(section 'policy'\) "
        r"is not the JSON its setting needs: Expecting ',' delimiter",
    ) as raised:
        load_settings(None)
    assert raised.value.exit_code == 2


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("CORTICAST_POLICY__MIN_PGD", "policy.min_pgd"),
        ("CORTICAST_POLICY__STIMULATION__AMPLITUDE_UA", "policy.stimulation.amplitude_ua"),
        ("CORTICAST_INGEST__STALE_AFTER_FRAMES", "ingest.stale_after_frames"),
    ],
)
def test_true_or_false_from_the_environment_is_not_a_number(monkeypatch, name, key):
    """The file refuses ``min_pgd = true``; pydantic-settings read the same word from the
    environment as JSON ``true`` and then as 1.0 (an amplitude of 1 µA, 1 stale frame)."""
    monkeypatch.setenv(name, "true")
    with pytest.raises(
        ConfigError, match=rf"environment variable {name} = 'true': {key} takes a number"
    ):
        load_settings(None)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[interlocks]\nmax_sample_age_s = true\n", "interlocks.max_sample_age_s"),
        ("[interlocks]\nmax_missing_frames = false\n", "interlocks.max_missing_frames"),
        ("[ingest]\nstale_after_frames = true\n", "ingest.stale_after_frames"),
        ("[model]\nreprime_every_frames = true\n", "model.reprime_every_frames"),
    ],
)
def test_true_or_false_in_the_file_is_not_a_number(tmp_path, text, key):
    """Outside the policy the sections are not strict, and pydantic read ``true`` as 1: a
    stale-data limit of 1 s (its widest, 20 times the default) from ``max_sample_age_s = true``
    written to switch the check on."""
    path = tmp_path / "bool.toml"
    path.write_text(text)
    value = text.split("= ")[1].strip()
    with pytest.raises(ConfigError, match=rf"bool\.toml': {key} = {value}: takes a number"):
        load_settings(path)


def test_true_or_false_from_the_environment_is_not_an_optional_number(monkeypatch):
    """A number that may be left out (``reprime_every_frames``, None: never) is a number too."""
    monkeypatch.setenv("CORTICAST_MODEL__REPRIME_EVERY_FRAMES", "true")
    with pytest.raises(ConfigError, match=r"model\.reprime_every_frames takes a number"):
        load_settings(None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[waves]\nhigh_hz = 130\n",
            r"waves\.high_hz \(130 Hz\) with waves\.phase_band_octaves \(0\.5\) takes the "
            r"phase band up to 154\.6 Hz, past the Nyquist frequency of stream\.sample_rate_hz "
            r"\(277\.78 Hz\): 138\.89 Hz",
        ),
        (
            "[stream]\nsample_rate_hz = 50\n[ingest]\nring_seconds = 60\n",
            r"waves\.high_hz \(30 Hz\) must be below the Nyquist frequency of "
            r"stream\.sample_rate_hz \(50 Hz\): 25 Hz",
        ),
    ],
)
def test_a_wave_band_past_the_stream_s_nyquist_is_refused_at_load(tmp_path, text, message):
    """The wave stage refuses such a band when the daemon is built: `corticast serve` ended in
    a traceback and exit status 1, which systemd restarts for ever, not a named refusal."""
    path = tmp_path / "band.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(path)
    if "high_hz = 130" in text:  # without the adaptive phase band, only the pass band counts
        path.write_text(text + "adaptive_band = false\n")
        assert load_settings(path).waves.high_hz == 130


@pytest.mark.parametrize(
    ("extension", "rate", "least", "unset_at_2_hz"), [(0, 277.78, 18, 35), (32, 1000, 63, 125)]
)
def test_a_wave_extension_short_of_a_quarter_period_is_refused_at_load(
    tmp_path, extension, rate, least, unset_at_2_hz
):
    """``[waves] extension_frames = 0`` was accepted and left the Hilbert transform's edge on
    the newest frames, whose envelope drooped (a steady 40 µV wave read 28.5 µV); the least
    the estimator takes is a quarter period of ``low_hz`` at the stream's rate, so at 1 kHz
    32 is short too. Left unset, the extension is 32 or that least (a band tuned down to 2 Hz
    was refused with the default before)."""
    path = tmp_path / "extension.toml"
    path.write_text(
        f"[stream]\nsample_rate_hz = {rate}\n[ingest]\nring_seconds = 60\n"
        f"[waves]\nextension_frames = {extension}\n"
    )
    with pytest.raises(
        ConfigError,
        match=rf"waves\.extension_frames \({extension}\) must be at least {least}: a quarter "
        rf"period of waves\.low_hz \(4 Hz\) at stream\.sample_rate_hz \({rate:g} Hz\)",
    ):
        load_settings(path)
    path.write_text(path.read_text().replace(f"= {extension}", f"= {least}"))
    assert load_settings(path).waves.extension_frames == least
    path.write_text(path.read_text().replace(f"extension_frames = {least}", "low_hz = 2"))
    unset = load_settings(path).waves
    assert unset.extension_frames is None
    assert unset.extension_at(rate) == unset_at_2_hz


def test_a_stimulation_marker_stream_named_as_the_rig_s_stream_is_refused() -> None:
    """Listed by mistake, the rig's own stream would be read as markers (every frame a train);
    said when the config loads, naming both keys."""
    with pytest.raises(ValueError, match=r"stimulation_marker_streams.*'rig-7'.*stream\.name"):
        Settings(stream={"name": "rig-7"}, ingest={"stimulation_marker_streams": ["rig-7"]})
    # Another daemon's (its own of that name is not read).
    Settings(ingest={"stimulation_marker_streams": ["lab", "corticast-stimulation"]})


def test_a_marker_stream_is_named_alone_or_with_its_source_id(tmp_path) -> None:
    """Two rigs on one network running the same protocol software announce on one name: the
    config names this rig's by its source id too, in a TOML table. A stream named alone and
    with a source id, or twice, is refused; a marker stream named as the rig's stream is
    refused unless its source id is another."""
    config = tmp_path / "corticast.toml"
    config.write_text(
        "[ingest]\n"
        'stimulation_marker_streams = ["lab", {name = "pulser", source_id = "rig-2-stim"}]\n',
        encoding="utf-8",
    )
    lab, pulser = load_settings(config).ingest.stimulation_marker_streams
    assert (lab.name, lab.source_id, str(lab)) == ("lab", None, "lab")
    assert (pulser.name, pulser.source_id) == ("pulser", "rig-2-stim")
    assert pulser.matches("pulser", "rig-2-stim") and not pulser.matches("pulser", "rig-1-stim")
    assert lab.matches("lab", "anything")
    assert [s.as_config() for s in (lab, pulser)] == [
        "lab",
        {"name": "pulser", "source_id": "rig-2-stim"},
    ]
    with pytest.raises(ValueError, match=r"\['pulser'\] listed by name alone and with a source"):
        Settings(ingest={"stimulation_marker_streams": [
            "pulser", {"name": "pulser", "source_id": "rig-2-stim"}]})  # fmt: skip
    with pytest.raises(ValueError, match=r"listed twice: \['pulser \(source id a\)'\]"):
        Settings(ingest={"stimulation_marker_streams": [{"name": "pulser", "source_id": "a"}] * 2})
    with pytest.raises(ValueError, match="colour"):
        Settings(ingest={"stimulation_marker_streams": [{"name": "pulser", "colour": "red"}]})
    rig = {"name": "rig-7", "source_id": "amp-1"}
    with pytest.raises(ValueError, match="the rig's stream"):
        Settings(stream=rig, ingest={"stimulation_marker_streams": [rig]})
    assert Settings(stream=rig, ingest={"stimulation_marker_streams": [
        {"name": "rig-7", "source_id": "stim-1"}]})  # fmt: skip


def test_marker_streams_said_alike_in_the_metrics_and_status_are_refused() -> None:
    """A stream named 'pulser (source id a)' and {name = "pulser", source_id = "a"} are two
    streams, but their metrics (labelled by 'NAME (source id ID)'), /status and log lines
    would make them one: one's connected gauge set by the other, their markers summed."""
    alike = ["pulser (source id a)", {"name": "pulser", "source_id": "a"}]
    with pytest.raises(ValueError, match=r"\['pulser \(source id a\)'\] named alike"):
        Settings(ingest={"stimulation_marker_streams": alike})


def test_the_daemon_s_own_marker_stream_listed_by_its_source_id_is_refused() -> None:
    """The daemon's own marker stream (``corticast-stimulation``, its rig's source id with
    ``-stimulation``) is never read: listed by that source id, its inlet would find nothing
    else and the daemon would never be ready, saying only 'not found yet'. Refused at load;
    with no own marker stream ([loop] stimulation_markers off) that source id is another's."""
    own = {"name": "corticast-stimulation", "source_id": "amp-1-stimulation"}
    with pytest.raises(ValueError, match="the daemon's own marker stream"):
        Settings(stream={"source_id": "amp-1"}, ingest={"stimulation_marker_streams": [own]})
    assert Settings(stream={"source_id": "amp-2"}, ingest={"stimulation_marker_streams": [own]})
    assert Settings(
        stream={"source_id": "amp-1"},
        loop={"stimulation_markers": False},
        ingest={"stimulation_marker_streams": [own]},
    )


def test_stimulation_markers_from_a_rig_named_by_neither_name_nor_source_id_are_refused():
    """A daemon reading its rig by type alone named its marker stream's source id
    '-stimulation', which names no rig: a recording of several rigs could not say whose
    trains it holds. Refused at load, naming the fix; with no marker stream it loads."""
    rig = {"name": "", "source_id": ""}
    with pytest.raises(
        ValueError,
        match=r"loop.stimulation_markers needs stream.source_id or stream.name: the marker "
        r"stream's source id names the rig",
    ):
        Settings(stream=rig)
    assert Settings(stream=rig, loop={"stimulation_markers": False})
    assert Settings(stream={"name": "amp", "source_id": ""})


@pytest.mark.parametrize(
    "stream", ["tool\nmarkers", {"name": "tool", "source_id": "rig\r\n2"}, "tool\x00"]
)
def test_a_marker_stream_name_or_source_id_with_a_control_character_is_refused(stream) -> None:
    """LSL sends a resolver's query as lines: a line break in a name or source id cuts the
    XPath predicate, every outlet on the network logs a query error, and the stream is never
    found (the daemon never ready, saying only 'not found yet'). Refused at load."""
    with pytest.raises(ValueError, match=r"streams\.0\.(name|source_id)\s+String should match"):
        Settings(ingest={"stimulation_marker_streams": [stream]})


def test_a_marker_latency_the_ring_cannot_hold_twice_over_is_refused() -> None:
    """The live scores and the AR fit read only frames older than the latency a marker may
    come with: in a ring barely longer, the AR would never be fitted. Said when the config
    loads, naming both keys; no limit while no marker stream is read."""
    ingest = {"stimulation_marker_streams": ["lab"], "ring_seconds": 4.0}
    with pytest.raises(
        ValueError, match=r"stimulation_marker_latency_ms \(2000 ms\).*ring_seconds \(4 s\)"
    ):
        Settings(ingest={**ingest, "stimulation_marker_latency_ms": 2000})
    assert Settings(ingest={**ingest, "stimulation_marker_latency_ms": 1999}).ingest
    assert Settings(ingest={"ring_seconds": 4.0, "stimulation_marker_latency_ms": 5000}).ingest
    with pytest.raises(ValueError, match="stimulation_marker_latency_ms"):
        Settings(ingest={"stimulation_marker_latency_ms": -1})


def test_a_ring_of_the_baseline_s_window_and_the_marker_latency_exactly_is_held() -> None:
    """The ring must hold the baseline's window (``[loop] robust_sd_seconds``) before the
    frames a marker may still blank: counted in frames, as the ring and the refresh count
    them. In seconds, 2.28 s was refused as short of 2 s and 280 ms (0.28 + 2.0 is more than
    2.28 in floating point), and 2.004 s was let through as holding 2 s and 4 ms while it
    keeps a frame fewer than the refresh reads."""
    ingest = {"stimulation_marker_streams": ["lab"]}
    assert Settings(ingest={**ingest, "ring_seconds": 2.28, "stimulation_marker_latency_ms": 280})
    with pytest.raises(
        ValueError, match=r"\(2\.004 s\) must hold .*: 558 frames .*and it keeps 557"
    ):
        Settings(ingest={**ingest, "ring_seconds": 2.004, "stimulation_marker_latency_ms": 4})
    assert Settings(ingest={"ring_seconds": 2.0})  # no marker stream: the window alone


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            "[ingest]\nring_secnds = 20\n",
            "  ingest.ring_secnds: not a setting; did you mean ingest.ring_seconds?",
        ),
        ("[ingset]\nring_seconds = 20\n", "  ingset: not a section; did you mean [ingest]?"),
        (
            "[policy.stimulation]\nampltude_ua = 20\n",
            "  policy.stimulation.ampltude_ua: not a setting; did you mean "
            "policy.stimulation.amplitude_ua?",
        ),
    ],
)
def test_an_unknown_key_is_named_with_the_setting_it_is_closest_to(tmp_path, text, line):
    """A misspelt key is refused (never ignored); the refusal says which setting was meant, not
    pydantic's 'Extra inputs are not permitted', so the operator need not search the docs."""
    path = tmp_path / "typo.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert str(raised.value).splitlines()[1:] == [line]


def test_an_unknown_key_with_nothing_close_lists_the_section_s_settings(tmp_path):
    """With no likely typo, the section's settings are the next best thing to name."""
    path = tmp_path / "typo.toml"
    path.write_text("[rig]\nzzz = 1\n")
    with pytest.raises(ConfigError, match=r"rig\.zzz: not a setting; \[rig\] has artefacts, "
                       r"chunk_size, duration_s, loop, seed, source, speed$"):  # fmt: skip
        load_settings(path)


def test_a_missing_relative_path_names_the_directory_it_was_looked_for_in(tmp_path, monkeypatch):
    """A relative path is read from the working directory, not the config file's: under
    systemd that is /var/lib/corticast, so 'cert.pem' beside /etc/corticast/corticast.toml is
    not found, and the refusal must say where it looked, or the file seems to be right there."""
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "token").write_text("a-token-of-some-length")
    path = tmp_path / "etc" / "c.toml"
    path.write_text('[api]\ntoken_file = "token"\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert str(raised.value).splitlines()[1:] == [
        "  api.token_file: Path does not point to a file, got 'token' (a relative path is read "
        f"from the working directory, {str(tmp_path)!r}, not from the config file's)"
    ]


def test_a_fixed_stride_past_the_models_horizon_is_refused_naming_what_to_set(tmp_path):
    """Served as configured, a stride past the 16 predicted frames leaves frames no prediction
    covers; ``serving = 'auto'`` refuses such a stride, and so must ``fixed``, at load."""
    path = tmp_path / "c.toml"
    path.write_text('[model]\nserving = "fixed"\n[scheduler]\nstride = 17\n')
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert str(raised.value).splitlines()[1:] == [
        "  scheduler.stride (17) is past the models' 16-frame horizon: the frames after the "
        "16th would never be predicted; set scheduler.stride to at most 16"
    ]
    path.write_text('[model]\nserving = "fixed"\n[scheduler]\nstride = 16\n')
    assert load_settings(path).scheduler.stride == 16


_HOME_PATHS = {
    "rig.source": "~/session.xdf",
    "model.path": "~/m/model.onnx",
    "model.step_path": "~/m/model.step.onnx",
    "model.directory": "~/m",
    "model.checkpoint": "~/m/run",
    "model.engine_cache_dir": "~/cache/engines",
    "model.serving_cache_dir": "~/cache/serving",
    "api.ssl_certfile": "~/tls/cert.pem",
    "api.ssl_keyfile": "~/tls/key.pem",
    "api.token_file": "~/token",
    "bridge.audit_log": "~/audit.jsonl",
    "bridge.link_key_file": "~/link.key",
    "emulator.pulse_log": "~/pulses.jsonl",
    "zmq.curve_secret_key_file": "~/curve/server.key_secret",
    "zmq.curve_allowed_clients_dir": "~/curve/allowed",
}


def test_every_path_setting_expands_a_leading_tilde_to_the_home_directory(tmp_path, monkeypatch):
    """``~`` read as a home directory for [model] path and no other path: '~/token' was looked
    for in a directory named '~' under the working directory, and a log written there."""
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("tls", "curve/allowed"):
        (tmp_path / name).mkdir(parents=True)
    for name, text in (
        ("tls/cert.pem", ""),
        ("tls/key.pem", ""),
        ("token", "a-token-of-some-length"),
        ("link.key", "ab" * 32),
        ("curve/server.key_secret", ""),
    ):
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o600)
    sections: dict[str, list[str]] = {}
    for key, value in _HOME_PATHS.items():
        section, name = key.split(".")
        sections.setdefault(section, []).append(f'{name} = "{value}"')
    path = tmp_path / "c.toml"
    path.write_text("".join(f"[{s}]\n" + "\n".join(lines) + "\n" for s, lines in sections.items()))
    settings = load_settings(path)
    for key, value in _HOME_PATHS.items():
        section, name = key.split(".")
        assert getattr(getattr(settings, section), name) == tmp_path / value[2:], key
    every = {
        f"{section}.{name}"
        for section, field in Settings.model_fields.items()
        for name, setting in getattr(field.annotation, "model_fields", {}).items()
        if "Path" in str(setting.annotation)
    }
    assert every == set(_HOME_PATHS)  # a new path setting: add it here


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_config_path_that_is_no_regular_file_is_refused_without_reading_it(tmp_path, kind):
    """``--config`` naming a FIFO waited for a writer for ever, and /dev/zero was read until
    memory ran out: refused, as the link key file is, before a byte is read."""
    if kind == "fifo":
        path, named = tmp_path / "c.toml", "a named pipe (FIFO)"
        os.mkfifo(path)
    else:
        path, named = Path("/dev/zero"), "a character device"
    outcome: list[Exception | None] = []

    def load() -> None:
        try:
            load_settings(path)
            outcome.append(None)
        except Exception as err:  # handed to the test's thread
            outcome.append(err)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    loader.join(timeout=10)
    if loader.is_alive() and kind == "fifo":  # a writer's end, closed: the read ends
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    assert outcome, f"config load still blocked reading {str(path)!r} after 10 s"
    assert isinstance(outcome[0], ConfigError), outcome[0]
    assert str(outcome[0]) == (
        f"config file {str(path)!r} is {named}, not a regular file: name the config file itself"
    )


def test_a_config_file_far_larger_than_any_config_is_refused_before_it_is_read(tmp_path):
    """A recording or a log named as ``--config`` by mistake was read into memory whole (and
    then refused as TOML, far into it): refused by its size, naming it and the limit."""
    path = tmp_path / "session.xdf"
    with path.open("wb") as file:
        file.truncate(MAX_CONFIG_BYTES + 1)  # sparse: no disk, no time
    with pytest.raises(ConfigError) as refused:
        load_settings(path)
    assert str(refused.value) == (
        f"config file {str(path)!r} holds {MAX_CONFIG_BYTES + 1} bytes, more than a config "
        f"file's {MAX_CONFIG_BYTES}: is it the config file?"
    )
    path.write_text("[stream]\n" + "# a long comment\n" * (MAX_CONFIG_BYTES // 20))
    assert load_settings(path).stream.name == Settings().stream.name  # under the limit: read
