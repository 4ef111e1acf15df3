"""The stimulator link's trust boundary: network transports stay on loopback unless the config
says otherwise by name, and with a shared key every frame carries an HMAC tag that both ends
check. Over real sockets: a forged or unkeyed ARM or STIMULATE from another socket delivers
nothing, a device reply with a bad tag is not believed, and matching keys close the loop."""

from __future__ import annotations

import os
import re
import secrets
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from firmware_bridge._link_key import MAX_KEY_FILE_BYTES
from firmware_bridge.config import BridgeSettings, EmulatorSettings
from firmware_bridge.emulator import FirmwareEmulator
from firmware_bridge.errors import AckTimeoutError
from firmware_bridge.frame_decoder import FrameDecoder
from firmware_bridge.loop_health import LoopHealth
from firmware_bridge.messages import Ack, Arm, Stimulate, encode_message, parse_message
from firmware_bridge.stimulation_bridge import StimulationBridge
from firmware_bridge.stimulation_request import StimulationRequest
from firmware_bridge.tcp_transport import TcpTransport
from firmware_bridge.udp_transport import UdpTransport
from firmware_bridge.wire import MessageType, clock_ms
from service.config import ConfigError, load_settings
from tests.service._private_files import give_to_nobody, grant_read_to_nobody

from .conftest import wait_until

OK = LoopHealth(0.005, 0, True)
REQUEST = StimulationRequest((10, 11, 12), 40, 100, 130, 200, 2.5e-4)


def _key_file(folder: Path, name: str = "link.key") -> Path:
    path = folder / name
    path.write_text(secrets.token_hex(32) + "\n")
    path.chmod(0o600)
    return path


# --------------------------------------------------------------------------- where it may go
@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("host", ["10.20.30.40", "0.0.0.0", "stimulator.lan", "::", "localhost"])
def test_a_network_link_off_loopback_is_refused_at_config_load(tmp_path, transport, host):
    config = tmp_path / "c.toml"
    config.write_text(f'[bridge]\ntransport = "{transport}"\nhost = "{host}"\n')
    with pytest.raises(ConfigError, match=r"bridge: .*not a loopback address.*allow_remote_link"):
        load_settings(config)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "127.5.6.7"])
def test_loopback_links_and_serial_links_need_no_setting(tmp_path, host):
    config = tmp_path / "c.toml"
    config.write_text(f'[bridge]\ntransport = "udp"\nhost = "{host}"\n')
    assert load_settings(config).bridge.host == host
    config.write_text('[bridge]\ntransport = "serial"\nhost = "10.20.30.40"\n')
    assert load_settings(config).bridge.transport == "serial"


def test_a_bracketed_ipv6_host_is_refused_naming_the_form_a_socket_takes(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[bridge]\ntransport = "udp"\nhost = "[::1]"\n')
    with pytest.raises(ConfigError, match=r"bridge\.host: .*'\[::1\]'.*without brackets"):
        load_settings(config)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_a_remote_link_without_a_key_is_refused_even_when_allowed(tmp_path, transport):
    """Off loopback, whoever can reach the link could ARM and STIMULATE: ``allow_remote_link``
    takes the network on purpose, as the HTTP API's ``allow_insecure_remote`` does, and the key
    stays required, as the API's token does."""
    config = tmp_path / "c.toml"
    config.write_text(
        f'[bridge]\ntransport = "{transport}"\nhost = "10.20.30.40"\nallow_remote_link = true\n'
    )
    with pytest.raises(ConfigError, match=r"bridge: .*off loopback needs 'link_key_file'"):
        load_settings(config)


def test_a_remote_link_is_allowed_when_the_config_says_so_by_name(tmp_path):
    config = tmp_path / "c.toml"
    key = _key_file(tmp_path)
    config.write_text(
        f'[bridge]\nhost = "10.20.30.40"\nallow_remote_link = true\nlink_key_file = "{key}"\n'
    )
    bridge = load_settings(config).bridge
    assert bridge.allow_remote_link and bridge.link_key_file == key


@pytest.mark.parametrize(
    ("content", "mode", "message"),
    [
        ("abc123\n", 0o600, r"at least 32 hex digits"),
        ("zz" * 32, 0o600, r"hex digits"),
        (secrets.token_hex(32), 0o644, r"open to users other than its owner \(mode 0644\)"),
        (secrets.token_hex(32), 0o640, r"open to users other than its owner \(mode 0640\)"),
        (secrets.token_hex(32), 0o602, r"open to users other than its owner \(mode 0602\)"),
    ],
    ids=["short", "not-hex", "world-readable", "group-readable", "world-writable"],
)
def test_a_key_file_that_cannot_serve_is_refused_naming_the_key_never_its_content(
    tmp_path, content, mode, message
):
    key = tmp_path / "link.key"
    key.write_text(content)
    key.chmod(mode)
    config = tmp_path / "c.toml"
    config.write_text(f'[bridge]\nlink_key_file = "{key}"\n')
    with pytest.raises(ConfigError, match=rf"bridge\.link_key_file: .*{message}") as raised:
        load_settings(config)
    assert content.strip() not in str(raised.value)


def test_a_key_file_another_user_owns_is_refused(tmp_path):
    """A file's owner may read it and chmod it whatever its mode: a 0600 key owned by another
    user (not root) is that user's to read, as the API token's check says."""
    key = _key_file(tmp_path)
    give_to_nobody(key)
    config = tmp_path / "c.toml"
    config.write_text(f'[bridge]\nlink_key_file = "{key}"\n')
    with pytest.raises(
        ConfigError, match=r"bridge\.link_key_file: .*belongs to another user \(uid 65534\)"
    ) as raised:
        load_settings(config)
    assert key.read_text().strip() not in str(raised.value)


def test_a_key_file_with_an_acl_is_refused(tmp_path):
    """An ACL entry letting another user read the key shows as the group's bits (its mask)."""
    key = _key_file(tmp_path)
    grant_read_to_nobody(key)
    config = tmp_path / "c.toml"
    config.write_text(f'[bridge]\nlink_key_file = "{key}"\n')
    with pytest.raises(ConfigError, match=r"bridge\.link_key_file: .*\(mode 0640\)"):
        load_settings(config)


def _make_fifo(path: Path) -> str:
    os.mkfifo(path, 0o600)
    return r"is a named pipe \(FIFO\), not a regular file"


def _make_dev_zero(path: Path) -> str:
    path.symlink_to("/dev/zero")
    return r"is a character device, not a regular file"


def _make_huge(path: Path) -> str:
    path.write_text(secrets.token_hex(8 * MAX_KEY_FILE_BYTES))  # hex, so it would pass as a key
    path.chmod(0o600)
    return rf"is {16 * MAX_KEY_FILE_BYTES} bytes long, more than a key file's {MAX_KEY_FILE_BYTES}"


@pytest.mark.parametrize(
    "make", [_make_fifo, _make_dev_zero, _make_huge], ids=["fifo", "dev-zero", "huge"]
)
def test_a_key_path_that_is_no_small_regular_file_is_refused_without_reading_it(tmp_path, make):
    """Config load reads the key: from a FIFO it would wait for a writer forever, and from
    /dev/zero or a huge file it would read until memory ran out."""
    key = tmp_path / "link.key"
    message = make(key)
    config = tmp_path / "c.toml"
    config.write_text(f'[bridge]\nlink_key_file = "{key}"\n')
    outcome: list[BaseException] = []

    def load() -> None:
        try:
            load_settings(config)
        except ConfigError as err:
            outcome.append(err)

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    loader.join(timeout=10.0)  # a refusal takes milliseconds; a blocked open never returns
    assert not loader.is_alive(), "config load still blocked reading the key file after 10 s"
    assert outcome, "config load accepted the key file"
    shown = rf"bridge\.link_key_file: .*'{re.escape(str(key))}' {message}"
    assert re.search(shown, str(outcome[0]))


# --------------------------------------------------------------------------- keyed frames
@contextmanager
def keyed_rig(
    kind: str,
    scratch: Path,
    *,
    device_key: Path | None,
    host_key: Path | None,
    ack_timeout_s: float = 1.0,  # generous: only a hang would reach it
):
    """An emulator on a free port with ``device_key``, and a bridge with ``host_key``."""
    server = (
        UdpTransport.bind("127.0.0.1", 0) if kind == "udp" else TcpTransport.listen("127.0.0.1", 0)
    )
    port = server.local_address[1]
    emulator = FirmwareEmulator(
        BridgeSettings(transport=kind, link_key_file=device_key),
        EmulatorSettings(heartbeat_timeout_s=0.5, pulse_log=scratch / "pulses.jsonl"),
        transport=server,
    )
    link = BridgeSettings(
        transport=kind,
        port=port,
        dry_run=False,
        ack_timeout_s=ack_timeout_s,
        heartbeat_period_s=0.05,
        audit_log=scratch / "audit.jsonl",
        link_key_file=host_key,
    )
    try:
        with emulator, StimulationBridge(link) as bridge:
            yield bridge, emulator, port
    finally:
        server.close()


@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_with_matching_keys_the_loop_arms_stimulates_and_disarms(kind, scratch):
    key = _key_file(scratch)
    with keyed_rig(kind, scratch, device_key=key, host_key=key) as (bridge, emulator, _):
        bridge.arm()
        assert emulator.armed
        decision = bridge.request_stimulation(REQUEST, OK)
        assert decision.sent, decision
        assert [pulse["channels"] for pulse in emulator.pulses] == [[10, 11, 12]]
        assert bridge.disarm() and not emulator.armed
    assert emulator.counters["unauthenticated"] == 0


@pytest.mark.parametrize("forger_key", [None, b"\x01" * 32], ids=["unkeyed", "wrong-key"])
def test_forged_arm_and_stimulate_from_another_socket_deliver_nothing(scratch, forger_key):
    """Even knowing the open session (sniffed from an ACK) and sending on time, a sender
    without the key neither arms the device nor makes it stimulate, and gets no answer."""
    key = _key_file(scratch)
    with keyed_rig("udp", scratch, device_key=key, host_key=key) as (bridge, emulator, port):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as forger:
            forger.connect(("127.0.0.1", port))
            forger.settimeout(0.3)
            forger.send(encode_message(Arm(clock_ms(time.monotonic())), 1, key=forger_key))
            with pytest.raises(TimeoutError):
                forger.recv(1024)  # an unauthenticated frame is never answered
            assert not emulator.armed
            bridge.arm()  # the real host arms; the forger sniffed the session
            session = emulator.session
            stimulate = Stimulate(
                channels=(10, 11, 12), amplitude_ua=40, phase_width_us=100, frequency_hz=130,
                train_duration_ms=200, electrode_area_cm2=2.5e-4, session=session,
                host_time_ms=clock_ms(time.monotonic()),
            )  # fmt: skip
            for sequence in range(2, 12):
                forger.send(encode_message(stimulate, sequence, key=forger_key))
            wait_until(lambda: emulator.counters["unauthenticated"] >= 11)
            with pytest.raises(TimeoutError):
                forger.recv(1024)
        assert emulator.pulses == ()
        assert emulator.armed  # the forgery did not disturb the real session either
        assert bridge.request_stimulation(REQUEST, OK).sent  # and the real host still can


class _DeviceAnsweringWith:
    """A device on a UDP socket that answers ARM with an ACK tagged with ``reply_key``."""

    def __init__(self, reply_key: bytes | None, session: int = 0x1234) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.05)
        self.reply_key = reply_key
        self.session = session
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.socket.recvfrom(2048)
            except TimeoutError:
                continue
            # The header is enough to answer: sequence at bytes 4..8, type at byte 3.
            sequence, kind = int.from_bytes(data[4:8], "little"), data[3]
            armed = kind != MessageType.DISARM
            reply = Ack(kind, armed, self.session if armed else 0)
            self.socket.sendto(encode_message(reply, sequence, key=self.reply_key), peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.socket.close()


def test_the_host_does_not_believe_a_device_reply_with_a_bad_tag(scratch):
    key = _key_file(scratch)
    device = _DeviceAnsweringWith(reply_key=b"\x02" * 32)
    link = BridgeSettings(
        port=device.socket.getsockname()[1],
        dry_run=False,
        ack_timeout_s=0.2,
        audit_log=scratch / "audit.jsonl",
        link_key_file=key,
    )
    try:
        with StimulationBridge(link, heartbeat_thread=False) as bridge:
            with pytest.raises(AckTimeoutError):
                bridge.arm()
            assert not bridge.armed
            rejected = bridge.metrics.frame_errors.labels("UNAUTHENTICATED")._value.get()
            assert rejected >= 1
    finally:
        device.close()


def test_a_keyed_frame_parses_only_with_its_key():
    key = secrets.token_bytes(32)
    frame = encode_message(Arm(1234), 7, key=key)
    (good,) = FrameDecoder(datagram=True, key=key).feed(frame)
    assert parse_message(good) == Arm(1234)
    (bad,) = FrameDecoder(datagram=True, key=secrets.token_bytes(32)).feed(frame)
    assert bad.code.name == "UNAUTHENTICATED" and bad.sequence == 7
    (unkeyed,) = FrameDecoder(datagram=True, key=key).feed(encode_message(Arm(1234), 7))
    assert unkeyed.code.name == "UNAUTHENTICATED"


def _bad_frames(key: bytes | None) -> dict[str, bytes]:
    """Frames whose header the device can read, in the link's layout (tagged with ``key``)."""
    arm = encode_message(Arm(clock_ms(time.monotonic())), 77, key=key)
    return {
        "bad-crc": arm[:-1] + bytes([arm[-1] ^ 0xFF]),
        "bad-version": arm[:2] + b"\x09" + arm[3:],
        "oversized": arm[:8] + (0xFFFF).to_bytes(2, "little") + arm[10:],
    }


@pytest.mark.parametrize("kind", ["udp", "tcp"])
@pytest.mark.parametrize("frame", ["bad-crc", "bad-version", "oversized"])
@pytest.mark.parametrize("keyed", [False, True], ids=["unkeyed", "keyed"])
def test_a_keyed_device_answers_no_frame_it_cannot_authenticate(scratch, kind, frame, keyed):
    """A NACK carries the armed flag in clear: on a keyed link it would tell anyone who can
    send bytes (here tagging with a key of their own) whether the device is armed. An
    unkeyed device still NACKs such frames, well within the same wait."""
    key_file = _key_file(scratch) if keyed else None
    key = bytes.fromhex(key_file.read_text()) if key_file is not None else None
    server = (
        UdpTransport.bind("127.0.0.1", 0) if kind == "udp" else TcpTransport.listen("127.0.0.1", 0)
    )
    emulator = FirmwareEmulator(
        BridgeSettings(transport=kind, link_key_file=key_file), transport=server
    )
    family = socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM
    with server, emulator, socket.socket(socket.AF_INET, family) as host:
        host.connect(server.local_address)
        host.settimeout(1.0)  # a NACK takes milliseconds on loopback
        host.send(encode_message(Arm(clock_ms(time.monotonic())), 76, key=key))
        assert host.recv(1024)[11] == 1  # the ACK's armed byte: the device is armed
        host.send(_bad_frames(b"\x01" * 32 if keyed else None)[frame])
        if keyed:
            host.settimeout(0.3)  # three times the host's default ACK deadline
            with pytest.raises(TimeoutError):
                host.recv(1024)
        else:
            assert host.recv(1024)[12] == 1  # the NACK's armed byte
        assert emulator.counters["unauthenticated"] == int(keyed)
        assert emulator.counters["nacks"] == int(not keyed)
    assert not emulator.pulses


@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_a_host_whose_key_the_device_does_not_have_times_out_saying_why(scratch, kind):
    device_key, host_key = _key_file(scratch, "device.key"), _key_file(scratch, "host.key")
    keys = {"device_key": device_key, "host_key": host_key}
    with keyed_rig(kind, scratch, **keys, ack_timeout_s=0.3) as (bridge, emulator, _):
        with pytest.raises(AckTimeoutError, match="answers nothing it cannot authenticate"):
            bridge.arm()
        assert not bridge.armed and not emulator.armed
        assert emulator.counters["unauthenticated"] >= 1
        assert emulator.counters["nacks"] == 0


@pytest.mark.parametrize("kind", ["udp", "tcp"])
def test_a_keyless_host_facing_a_keyed_device_times_out_saying_why(scratch, kind):
    """The keyed device drops an untagged frame unanswered (never a NACK, which would tell an
    intruder its armed flag), so to a keyless host it looks exactly like a device that is not
    there: the timeout on a connection nothing has answered yet names the key as one cause."""
    key = _key_file(scratch)
    with keyed_rig(kind, scratch, device_key=key, host_key=None, ack_timeout_s=0.3) as rig:
        bridge, emulator, _ = rig
        with pytest.raises(
            AckTimeoutError,
            match=r"no reply to ARM #\d+ within 0\.3 s; nothing has answered on this connection "
            r"yet: a device that requires a link key stays silent to untagged frames "
            r"\(is \[bridge\] link_key_file set on both sides\?\)",
        ):
            bridge.arm()
        assert not bridge.armed and not emulator.armed
        # Over TCP the device reads the next frame's first bytes as the ARM's missing tag.
        wait_until(lambda: emulator.counters["unauthenticated"] >= 1)
        assert emulator.counters["nacks"] == 0
