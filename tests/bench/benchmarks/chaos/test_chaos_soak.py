"""The chaos soak: its auditor catches every kind of violation, its readers and relay do what
they say, and a short soak of the real daemon, rig and emulator under every fault breaks no rule.
"""

from __future__ import annotations

import json
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pylsl
import pytest

from bench.benchmarks.chaos._auditor import AnnouncedTrains, AuditRules, audit
from bench.benchmarks.chaos._config import SoakPlan
from bench.benchmarks.chaos._control import ControlClient
from bench.benchmarks.chaos._faults import FAULTS, FaultInjector, FaultLog
from bench.benchmarks.chaos._processes import ChildProcess, find_wave_thread
from bench.benchmarks.chaos._records import read_host_records, read_marker_times
from bench.benchmarks.chaos._relay import DIRECTIONS, FAULT_KINDS, MAX_HOLD_S, Episode, FaultyRelay
from bench.benchmarks.chaos._report import format_report
from bench.benchmarks.chaos.soak import LINK_ALLOWANCE_S, ChaosSoak, _AuditWatch
from bench.benchmarks.chaos.soak import main as soak_main
from firmware_bridge import AuditLog
from service.config import load_settings
from service.core.python_module import python_module_command
from service.core.stimulation_markers import MarkerStream

RULES = AuditRules(
    refractory_s=2.0,
    max_trains_per_minute=2,
    max_trains_per_day=3,
    charge_density_limit_uc_cm2=20.0,
    electrode_area_cm2=3e-4,
    min_amplitude_ua=1,
    max_amplitude_ua=100,
    min_phase_width_us=40,
    max_phase_width_us=500,
    min_frequency_hz=1,
    max_frequency_hz=200,
    min_train_duration_ms=10,
    max_train_duration_ms=1000,
    max_channels=8,
    max_sample_age_s=0.05,
    command_deadline_s=0.06,
    link_allowance_s=0.1,
)
TRAIN = {
    "channels": [177, 178, 179],
    "amplitude_ua": 10,
    "phase_width_us": 100,
    "frequency_hz": 100,
    "train_duration_ms": 50,
    "electrode_area_cm2": 3e-4,
}


class Story:
    """Hand-made records: what the host wrote to its audit log and the device to its pulse log.

    By default every train is decided on a frame 10 ms old, admitted by the host, and
    delivered 5 ms later in the session of the current arm.
    """

    def __init__(self) -> None:
        self.host: list[dict[str, Any]] = []
        self.pulses: list[dict[str, Any]] = []
        self.session = 0
        self._sequence = 1000

    def start(self) -> Story:
        self.host.append({"event": "start", "restored_trains": 0})
        return self

    def arm(self, session: int) -> Story:
        self.session = session
        self.host.append({"event": "arm", "session": session})
        return self

    def disarm(self, reason: str = "operator: request") -> Story:
        self.host.append({"event": "disarm", "cause": "operator", "reason": reason})
        return self

    def train(
        self,
        at: float,
        *,
        input_age_s: float = 0.010,
        lag_s: float = 0.005,
        transmitted: bool = True,
        withdrawn: bool = False,
        delivered: dict[str, Any] | None = None,
        health: dict[str, Any] | None = None,
        session: int | None = None,
    ) -> Story:
        """A train admitted at host clock ``at``, delivered ``lag_s`` later; ``withdrawn``:
        the host then records it blocked before sending (the pulse is left to the test)."""
        self._sequence += 1
        if transmitted:
            self.host.append(
                {
                    "event": "transmit",
                    "request_id": self._sequence,
                    "sequence": self._sequence,
                    "clock": at,
                    "request": dict(TRAIN),
                    "health": health
                    if health is not None
                    else {"input_seq": 7, "input_timestamp": at - input_age_s},
                }
            )
        if withdrawn:
            self.host.append(
                {
                    "event": "decision",
                    "request_id": self._sequence,
                    "outcome": "blocked",
                    "clock": at,
                    "interlocks": ["stale_data"],
                    "sequence": self._sequence,
                }
            )
            return self
        self.pulses.append(
            {
                "event": "train",
                "clock": at + lag_s,
                "session": self.session if session is None else session,
                "sequence": self._sequence,
                **TRAIN,
                **(delivered or {}),
            }
        )
        return self

    def audit(self, operator_disarms: dict[str, float] | None = None) -> set[str]:
        result = audit(RULES, self.pulses, self.host, operator_disarms)
        return {violation.rule for violation in result.violations}


# --------------------------------------------------------------------- the auditor
def test_a_lawful_story_across_restarts_has_no_violation():
    story = Story().start().arm(11).train(100.0).train(102.5)
    story.start().arm(22).train(170.0).disarm()
    result = audit(RULES, story.pulses, story.host)
    assert result.violations == []
    assert (result.pulses, result.linked, result.transmits) == (3, 3, 3)


def test_a_pulse_inside_the_refractory_period_is_a_violation():
    story = Story().start().arm(11).train(100.0).train(101.0)
    assert {"refractory", "host_refractory"} <= story.audit()


def test_a_train_withdrawn_before_sending_counts_against_no_host_limit():
    """The host withdrew the train at 101.0 (its data went stale during the transmit fsync):
    the next one 2 s after it and 3 s after the train before keeps refractory, as the
    interlocks judged it."""
    story = Story().start().arm(11).train(100.0).train(101.0, withdrawn=True).train(103.0)
    result = audit(RULES, story.pulses, story.host)
    assert result.violations == []
    assert (result.pulses, result.linked, result.transmits, result.withdrawn) == (2, 2, 3, 1)


def test_a_blocked_decision_of_another_lifetime_withdraws_nothing():
    story = Story().start().arm(11).train(100.0).start().arm(22)
    withdrawal = {"event": "decision", "outcome": "blocked", "clock": 100.0, "sequence": 1001}
    story.host.append(withdrawal)  # the first lifetime's train's sequence number
    result = audit(RULES, story.pulses, story.host)
    assert result.violations == [] and result.withdrawn == 0


def test_a_withdrawn_train_the_device_delivered_is_a_violation():
    story = Story().start().arm(11).train(100.0, withdrawn=True)
    sequence = story.host[-1]["sequence"]
    story.pulses.append(
        {"event": "train", "clock": 100.005, "session": 11, "sequence": sequence, **TRAIN}
    )
    assert story.audit() == {"delivered_withdrawn"}


def test_arrival_jitter_beyond_the_allowance_shows_on_the_device_side():
    # The host kept 2 s between admissions, but the first train arrived 0.4 s late.
    story = Story().start().arm(11).train(100.0, lag_s=0.4).train(102.0)
    assert story.audit() == {"refractory", "delivery_lag", "data_age"}


def test_a_minute_budget_spent_across_a_restart_is_a_violation():
    story = Story().start().arm(11).train(100.0).train(103.0)
    story.start().arm(22).train(106.0)  # the restarted daemon forgot the first two
    assert {"minute_budget", "host_minute_budget"} <= story.audit()


def test_a_day_budget_spent_across_restarts_is_a_violation():
    story = Story()
    for lifetime, at in enumerate((100.0, 200.0, 300.0, 400.0)):
        story.start().arm(lifetime + 1).train(at)
    assert story.audit() == {"day_budget", "host_day_budget"}


def test_a_train_transmitted_while_the_host_was_disarmed_is_a_violation():
    story = Story().start().arm(11).train(100.0).disarm().train(103.0)
    assert story.audit() == {"armed_session"}


def test_a_disarm_an_arm_overtook_does_not_end_that_arm():
    """A disarm still telling the device when the operator armed again is recorded after that
    arm, marked (``StimulationBridge``): the trains the arm allowed are lawful."""
    story = Story().start().arm(11).train(100.0).arm(12)
    story.host.append(
        {"event": "disarm", "cause": "operator", "reason": "r", "overtaken_by_arm": True}
    )
    assert story.train(103.0).audit() == set()
    story.host[-2].pop("overtaken_by_arm")  # unmarked, the same log reads as a disarmed train
    assert story.audit() == {"armed_session"}


def test_a_train_of_another_session_is_a_violation():
    story = Story().start().arm(11).train(100.0, session=12)
    assert story.audit() == {"armed_session"}


def test_a_train_delivered_after_the_operators_disarm_took_effect_is_a_violation():
    story = Story().start().arm(11).train(100.0, lag_s=0.15).disarm("operator: chaos-disarm-1")
    assert story.audit({"chaos-disarm-1": 100.1}) == set()
    assert story.audit({"chaos-disarm-1": 99.5}) == {"armed_session"}


def test_a_train_decided_on_old_data_is_a_violation():
    story = Story().start().arm(11).train(100.0, input_age_s=0.5)
    assert story.audit() == {"data_age"}


@pytest.mark.parametrize("amplitude_ua", [61, 76])  # 20.3 and 25.3 µC/cm²/phase
def test_a_charge_density_over_the_limit_is_a_violation(amplitude_ua):
    story = Story().start().arm(11).train(100.0)
    for record in (story.pulses[-1], story.host[-1]["request"]):
        record["amplitude_ua"] = amplitude_ua
    assert story.audit() == {"charge_density"}


def test_a_train_other_than_the_one_transmitted_is_a_violation():
    story = Story().start().arm(11).train(100.0, delivered={"phase_width_us": 120})
    assert story.audit() == {"parameters"}


def test_a_pulse_without_a_transmit_record_is_unlinked():
    story = Story().start().arm(11).train(100.0, transmitted=False)
    assert story.audit() == {"unlinked"}


def test_a_pulse_whose_transmit_record_does_not_name_its_data_is_unlinked():
    story = Story().start().arm(11).train(100.0, health={"newest_sample_age_s": 0.01})
    assert story.audit() == {"unlinked"}


def test_a_train_delivered_twice_is_a_violation():
    story = Story().start().arm(11).train(100.0)
    story.pulses.append(dict(story.pulses[-1], clock=100.03))
    assert story.audit() == {"delivered_twice", "refractory"}


def test_the_rules_are_read_from_the_configuration_files(tmp_path):
    plan = SoakPlan.create(tmp_path, seed=0, minutes=10)
    plan.write()
    rules = AuditRules.from_config(plan.daemon_config, plan.emulator_config, link_allowance_s=0.1)
    assert (rules.max_trains_per_minute, rules.max_trains_per_day) == (2, plan.day_budget)
    assert rules.density_limit_uc_cm2 == 20.0
    assert rules.command_deadline_s == pytest.approx(0.06)
    text = plan.daemon_config.read_text().replace("refractory_s = 2.0\n", "")
    plan.daemon_config.write_text(text)
    with pytest.raises(KeyError, match=r"\[interlocks\] refractory_s"):
        AuditRules.from_config(plan.daemon_config, plan.emulator_config, link_allowance_s=0.1)


@pytest.mark.parametrize(
    ("marker", "broken"),
    [
        (99.3, True),  # pushed 0.7 s before the admission; blanks 99.3-100.4
        (98.75, True),  # its blank ends at 99.85, on the decision's oldest frames
        (98.6, False),  # its blank ended at 99.7, before the decision's oldest frame
        (99.7, False),  # pushed only 0.3 s before the admission: perhaps still on its way
    ],
)
def test_a_train_decided_on_frames_another_tool_s_train_blanked_is_a_violation(marker, broken):
    """The train is admitted at 100.0, decided on the 48 frames stamped 99.82-99.99."""
    story = Story().start().arm(11).train(100.0)
    announced = AnnouncedTrains((marker,), blank_s=1.1, decision_span_s=47 / 277.78)
    result = audit(RULES, story.pulses, story.host, announced=announced)
    assert {v.rule for v in result.violations} == ({"artefact"} if broken else set())
    assert result.announced_trains == 1
    assert audit(RULES, story.pulses, story.host).announced_trains is None


def test_another_tool_s_trains_and_the_daemon_s_blank_are_read_from_the_files(tmp_path):
    plan = SoakPlan.create(tmp_path, seed=0, minutes=10, pulser=True)
    plan.write()
    assert read_marker_times(plan.marker_log) == ()
    plan.marker_log.write_text('{"time": 12.5}\n{"time": 17.25}\n{"ti')  # one half written
    assert read_marker_times(plan.marker_log) == (12.5, 17.25)
    announced = AnnouncedTrains.from_config(plan.daemon_config)
    assert announced.times == () and announced.blank_s == pytest.approx(1.1)
    settings = load_settings(plan.daemon_config)
    assert settings.ingest.stimulation_marker_streams == (MarkerStream(name=plan.pulser_stream),)
    assert announced.decision_span_s == pytest.approx(
        (settings.waves.past_frames - 1) / settings.stream.sample_rate_hz
    )


def test_the_other_tool_announces_each_train_on_its_marker_stream_as_it_logs_it(tmp_path):
    name = f"pulser-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "markers.jsonl"
    pulser = ChildProcess(
        "pulser",
        python_module_command(
            "bench.benchmarks.chaos._pulser", "--name", name, "--log", str(log),
            "--every", "0.3", "0.4",
        ),
        tmp_path / "pulser.log",
    )  # fmt: skip
    pulser.start()
    try:
        (info,) = pylsl.resolve_byprop("source_id", name, minimum=1, timeout=30)
        assert (info.name(), info.type(), info.nominal_srate()) == (name, "Markers", 0.0)
        inlet = pylsl.StreamInlet(info)
        inlet.open_stream(timeout=30)
        text, stamp = inlet.pull_sample(timeout=30)
    finally:
        assert pulser.stop(signal.SIGTERM) == "SIGTERM: exited 0", pulser.log_path.read_text()
    assert text is not None and text[0].startswith("train ")
    logged = [json.loads(line)["time"] for line in log.read_text().splitlines()]
    assert stamp in logged


_WAVE_STAGE_LOOKALIKE = """
import ctypes, threading, time
from service.core.worker import BackgroundWorker

def library_thread():  # a library naming its thread in bytes that are not UTF-8
    ctypes.CDLL(None).prctl(15, ctypes.c_char_p(b"lib-\\xff\\xfe"), 0, 0, 0)
    time.sleep(60)

threading.Thread(target=library_thread, daemon=True).start()

class Stage(BackgroundWorker):
    def _work(self):
        print(threading.get_native_id(), flush=True)
        self._stop_requested.wait(60)

# As in the daemon: the wave stage and the scale stage both run at nice +5.
Stage("corticast-waves", niceness=5).start()
time.sleep(1)
Stage("corticast-scale", niceness=5).start()
time.sleep(60)
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="no per-thread names here")
def test_the_wave_thread_is_found_among_others_of_its_nice_value():
    """The soak starves the daemon's wave thread: found by the name the daemon gives it, not
    as the one thread niced (the scale stage is niced alike: every wave_starve fault of a
    soak read 'wave thread not found'), beside a library's thread named in bytes that are not
    UTF-8."""
    child = subprocess.Popen(
        [sys.executable, "-c", _WAVE_STAGE_LOOKALIKE], stdout=subprocess.PIPE, text=True
    )
    try:
        tid = int(child.stdout.readline())
        child.stdout.readline()  # the second stage has started
        assert find_wave_thread(child.pid) == tid
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


# --------------------------------------------------------------------- the readers
def test_the_host_records_are_read_across_rotated_files_in_order(tmp_path):
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, max_bytes=400) as log:
        for i in range(40):
            log.append({"event": "transmit", "sequence": i}, durable=False)
    with open(path, "ab") as file:
        file.write(b'{"event": "transmit", "seq')  # still being written
    assert len(list(tmp_path.glob("audit.jsonl.[0-9]*"))) > 3
    records = read_host_records(path)
    assert [r["sequence"] for r in records] == list(range(40))


# --------------------------------------------------------------------- the relay
class RelayRig:
    """A host socket and a device socket either side of a relay running in a thread."""

    def __init__(self, tmp_path: Path) -> None:
        self.stats = tmp_path / "stats.json"
        self.device = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.device.bind(("127.0.0.1", 0))
        self.device.settimeout(10.0)
        self.host = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.host.settimeout(10.0)
        self.relay: FaultyRelay | None = None
        self._thread: threading.Thread | None = None

    def start(
        self, kind: str, probability: float = 1.0, max_hold_s: float = MAX_HOLD_S
    ) -> tuple[str, int]:
        """The relay, playing ``kind`` on a share ``probability`` of the datagrams."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        episode = Episode(0.0, kind, DIRECTIONS, probability, 3600.0)
        device_port = self.device.getsockname()[1]
        self.relay = FaultyRelay(
            port, device_port, 0, self.stats, iter([episode]), max_hold_s=max_hold_s
        )
        self.relay.started.set()
        self._thread = threading.Thread(target=self.relay.run, daemon=True)
        self._thread.start()
        return ("127.0.0.1", port)

    def wait_for_faults(self, key: str, count: int) -> None:
        deadline = time.monotonic() + 30.0
        while self.relay.faults[key] < count:
            assert time.monotonic() < deadline, f"{key}: {self.relay.faults[key]} of {count}"
            time.sleep(0.01)

    def stop(self) -> dict[str, Any]:
        if self.relay is not None:
            self.relay.stop_requested.set()
            self._thread.join(10)
        self.host.close()
        self.device.close()
        return json.loads(self.stats.read_text()) if self.stats.exists() else {}


@pytest.fixture
def relay_rig(tmp_path) -> Iterator[RelayRig]:
    rig = RelayRig(tmp_path)
    yield rig
    rig.stop()


@pytest.mark.parametrize("kind", [k for k in FAULT_KINDS if k != "reorder"])
def test_the_relay_applies_each_fault_to_the_datagrams_of_its_episode(relay_rig, kind):
    address = relay_rig.start(kind)
    sent = [bytes([i]) * 16 for i in range(1, 4)]
    for datagram in sent:
        relay_rig.host.sendto(datagram, address)
    relay_rig.wait_for_faults(f"{kind} to_device", len(sent))
    if kind == "drop":
        relay_rig.device.setblocking(False)
        with pytest.raises(BlockingIOError):
            relay_rig.device.recv(100)
        return
    count = 2 * len(sent) if kind == "duplicate" else len(sent)
    received = [relay_rig.device.recv(100) for _ in range(count)]
    if kind == "corrupt":
        assert all(r != s and len(r) == len(s) for r, s in zip(received, sent, strict=True))
    else:
        assert sorted(received) == sorted(sent * (count // len(sent)))
    assert relay_rig.stop()["faults"] == {f"{kind} to_device": len(sent)}


def test_the_relay_reorders_by_holding_a_datagram_until_the_next_overtakes_it(relay_rig):
    address = relay_rig.start("reorder", max_hold_s=60.0)
    relay_rig.host.sendto(b"first", address)
    relay_rig.wait_for_faults("reorder to_device", 1)
    relay_rig.host.sendto(b"second", address)  # not held: one is held already
    assert [relay_rig.device.recv(100) for _ in range(2)] == [b"second", b"first"]
    assert relay_rig.stop()["faults"] == {"reorder to_device": 1}


def test_the_relay_answers_the_host_that_spoke_last(relay_rig):
    address = relay_rig.start("drop", probability=0.0)
    relay_rig.host.sendto(b"ping", address)
    assert relay_rig.device.recvfrom(100)[0] == b"ping"
    relay_rig.device.sendto(b"pong", address)
    assert relay_rig.host.recv(100) == b"pong"


def test_a_fault_that_finds_nothing_to_act_on_says_it_took_no_effect(tmp_path):
    """A stall of a rig that is not running, a wave thread not found, a swap or disarm no
    daemon answered: the soak goes on until each kind has taken effect, instead of counting
    it as done (every wave_starve of a soak once found no thread, and the soak passed)."""
    plan = SoakPlan.create(tmp_path, seed=0, minutes=1)
    plan.write()
    rig = ChildProcess("rig", [sys.executable, "-c", "pass"], plan.log("rig"))
    daemon = ChildProcess("daemon", [sys.executable, "-c", "pass"], plan.log("daemon"))
    log = FaultLog()
    injector = FaultInjector(
        plan, daemon, rig, ControlClient(plan.api_url, plan.token), random.Random(0),
        threading.Event(), log,
    )  # fmt: skip
    for kind in ("rig_stall", "wave_starve", "model_swap", "disarm"):
        assert injector.inject(kind) is False, kind
    assert log.counts[("rig_stall", "rig not running")] == 1
    assert log.counts[("wave_starve", "wave thread not found")] == 1
    assert log.counts[("disarm", "no answer (daemon down)")] == 1


@pytest.mark.parametrize("earlier", ["audit.jsonl", "audit.jsonl.1", "pulses.jsonl"])
def test_a_workdir_holding_an_earlier_soak_s_logs_is_refused_naming_them(tmp_path, capsys, earlier):
    """The auditor reads the audit, pulse and marker logs whole: a soak into a kept
    ``--workdir`` counted the earlier soak's pulses as its own, and its bridge restored that
    soak's trains. It is refused before anything starts, and the logs are left as they were."""
    (tmp_path / earlier).write_text("{}\n")
    with pytest.raises(ValueError, match=rf"holds an earlier soak's logs \({re.escape(earlier)}\)"):
        ChaosSoak(tmp_path, minutes=1.0)
    with pytest.raises(SystemExit) as ended:
        soak_main(["--workdir", str(tmp_path), "--minutes", "0.1"])
    assert ended.value.code == 2
    assert "choose a new directory" in capsys.readouterr().err
    assert (tmp_path / earlier).read_text() == "{}\n"


# --------------------------------------------------------------------- the soak
class QuietRig:
    """A soak whose faults are over, with its auditor watching the files and the operator's
    look at the loop counted: no process runs, a tend may write a pulse's records."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.soak = soak = ChaosSoak(tmp_path, minutes=1.0, echo=lambda line: None)
        soak.plan.write()
        soak.rules = AuditRules.from_config(
            soak.plan.daemon_config, soak.plan.emulator_config, link_allowance_s=LINK_ALLOWANCE_S
        )
        soak._never_faulted = ()  # none started here, so none to have exited
        self.tends = 0
        self.pulse_at_tend: int | None = None
        monkeypatch.setattr(soak.injector, "tend", self._tend)

    def _tend(self) -> None:
        self.tends += 1
        if self.tends == self.pulse_at_tend:
            story = Story().start().arm(11).train(100.0)
            for path, records in ((self.soak.plan.audit_log, story.host),
                                  (self.soak.plan.pulse_log, story.pulses)):  # fmt: skip
                path.write_text("".join(json.dumps(r) + "\n" for r in records))

    def await_a_pulse(self) -> str:
        watch = _AuditWatch(self.soak, self.soak.stop).start()
        self.soak._watch = watch
        try:
            return self.soak._await_a_pulse()
        finally:
            watch.stop()


def test_a_soak_whose_faults_delivered_no_pulse_tends_the_loop_until_one_is(tmp_path, monkeypatch):
    """A soak that audited nothing has shown nothing: it goes on, faults over and the operator
    re-arming, until the auditor has read a pulse (the test's second soak from the start cost
    ~100 s where the first delivered none)."""
    rig = QuietRig(tmp_path, monkeypatch)
    rig.pulse_at_tend = 3
    said = rig.await_a_pulse()
    assert said.startswith("; the faults delivered no pulse, the first came ")
    assert rig.tends >= 3
    assert rig.soak._watch.result.violations == []
    assert not rig.soak.stop.is_set()


def test_a_soak_that_gets_no_pulse_after_its_faults_either_gives_up_saying_so(
    tmp_path, monkeypatch
):
    monkeypatch.setattr("bench.benchmarks.chaos.soak.PULSE_GRACE_S", 1.5)
    rig = QuietRig(tmp_path, monkeypatch)
    assert rig.await_a_pulse() == "; no pulse, during the faults or in the 1.5 s after them"
    assert rig.tends >= 1


@pytest.mark.slow
# Its pulses need the loop to keep up: beside another worker's tests on a 2-core host 1.7x
# slower than CI's, both soaks delivered none (stale data refused, as it must be); alone, one.
@pytest.mark.alone
@pytest.mark.timeout(600)  # per soak: setup, 30-60 s of faults, two restarts; a second if needed
def test_a_short_soak_with_every_fault_breaks_no_rule(tmp_path):
    # Half a minute: the soak goes on until every fault kind, the relay's in each direction,
    # has taken effect (the first round took 25-60 s on a 2-core host loaded by other work),
    # then until a pulse is delivered: in 4 of 6 such soaks logged the first came 11-16 s
    # after the faults, of the 90 s it may wait; none of 8 needed the second soak.
    summary = ChaosSoak(tmp_path / "first", minutes=0.5, seed=3, echo=lambda line: None).run()
    report = "\n".join(format_report(summary))
    assert summary.audit.violations == [], report
    if summary.audit.pulses == 0:
        # On a loaded machine the interlocks may block every request of one soak (stale data
        # is refused, as it must be), through its faults and the 90 s it waits after them:
        # the auditor then had nothing to check, so a second soak with another fault schedule
        # gives it pulses. Measured: 2 of 3 soaks run three at a time on 2 cores delivered
        # none, before the soak waited after its faults.
        summary = ChaosSoak(tmp_path / "second", minutes=0.5, seed=4, echo=lambda line: None).run()
        report = "\n".join(format_report(summary))
        assert summary.audit.violations == [], report
    assert summary.audit.pulses >= 1 and summary.audit.linked == summary.audit.pulses, report
    injected = {kind for kind, _ in summary.faults}
    assert set(FAULTS) | {"arm"} <= injected, report
    for kind in FAULT_KINDS:
        for direction in DIRECTIONS:
            assert summary.relay["faults"].get(f"{kind} {direction}", 0) >= 1, report
    assert len(summary.lifetimes) >= 3, report  # started, killed, stopped: three lifetimes
    assert not summary.problems, report
