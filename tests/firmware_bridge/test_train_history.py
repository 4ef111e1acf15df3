"""Refractory and budgets outlive the bridge: a new bridge rebuilds them from the audit log
(across rotated files, after a reboot, after a crash mid-write) and refuses to arm when the log
cannot be read."""

from __future__ import annotations

import json
import logging
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from firmware_bridge._train_history import past_trains
from firmware_bridge.audit_log import AuditLog, audit_files, read_audit_log
from firmware_bridge.config import BridgeSettings, EmulatorSettings, InterlockSettings
from firmware_bridge.emulator import FirmwareEmulator
from firmware_bridge.errors import AuditLogError
from firmware_bridge.loop_health import LoopHealth
from firmware_bridge.stimulation_bridge import StimulationBridge
from firmware_bridge.stimulation_request import StimulationRequest
from firmware_bridge.udp_transport import UdpTransport

from .conftest import FakeClock
from .test_disarm_races import DEADLINE_S, _rig, _StallingAuditLog, _Thread, _wait_until

OK = LoopHealth(0.005, 0, True)
REQUEST = StimulationRequest((10, 11), 40, 100, 130, 200, 2.5e-4)
ONE_A_DAY = InterlockSettings(max_trains_per_minute=1, max_trains_per_day=1)
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
BOOT = BOOT_ID.read_text().strip() if BOOT_ID.exists() else None


@contextmanager
def _device(clock):
    """The real emulator on UDP, on the host's clock (so its own limits move with it)."""
    with ExitStack() as stack:
        server = stack.enter_context(UdpTransport.bind("127.0.0.1", 0))
        emulator = FirmwareEmulator(
            BridgeSettings(transport="udp"), EmulatorSettings(), transport=server, clock=clock
        )
        stack.enter_context(emulator)
        yield emulator, server.local_address[1]


@contextmanager
def _live_bridge(scratch, port, clock, limits=ONE_A_DAY):
    settings = BridgeSettings(
        port=port, dry_run=False, ack_timeout_s=5.0, audit_log=scratch / "audit.jsonl"
    )
    with (
        UdpTransport.connect("127.0.0.1", port) as link,
        StimulationBridge(
            settings, limits, transport=link, clock=clock, heartbeat_thread=False
        ) as bridge,
    ):
        yield bridge


def test_a_day_budget_of_one_holds_across_three_bridge_lifetimes(scratch):
    clock = FakeClock()
    outcomes = []
    with _device(clock) as (emulator, port):
        for _ in range(3):
            with _live_bridge(scratch, port, clock) as bridge:
                bridge.arm()
                outcomes.append(bridge.request_stimulation(REQUEST, OK).outcome)
            clock.advance(61.0)  # past refractory and the minute budget: only the day is left
        delivered = len(emulator.pulses)
    assert outcomes == ["sent", "blocked", "blocked"], outcomes
    assert delivered == 1


# ------------------------------------------------------------------ dry run, one process
def _dry_bridge(scratch, clock, limits=ONE_A_DAY, **settings):
    return StimulationBridge(
        BridgeSettings(audit_log=scratch / "audit.jsonl", **settings), limits, clock=clock
    )


def _one_request(bridge):
    with bridge:
        bridge.arm()
        return bridge.request_stimulation(REQUEST, OK)


def test_dry_run_admissions_count_across_lifetimes_as_within_one(scratch):
    clock = FakeClock()
    assert _one_request(_dry_bridge(scratch, clock)).outcome == "dry_run"
    clock.advance(61.0)
    decision = _one_request(_dry_bridge(scratch, clock))
    assert decision.interlocks == ("day_budget",)
    clock.advance(86_400.0)  # a day after the first train
    assert _one_request(_dry_bridge(scratch, clock)).outcome == "dry_run"


def test_refractory_is_measured_from_the_last_lifetimes_train(scratch):
    clock = FakeClock()
    limits = InterlockSettings(refractory_s=2.0)
    assert _one_request(_dry_bridge(scratch, clock, limits)).outcome == "dry_run"
    clock.advance(1.5)
    assert _one_request(_dry_bridge(scratch, clock, limits)).interlocks == ("refractory",)
    clock.advance(0.5)
    assert _one_request(_dry_bridge(scratch, clock, limits)).outcome == "dry_run"


# ------------------------------------------------------------------ clocks across boots
def _append_records(path, *records, raw=""):
    with open(path, "a", encoding="utf-8") as file:
        for record in records:
            file.write(json.dumps(record) + "\n")
        file.write(raw)


def _train(**fields):
    return {"event": "transmit", "request_id": 1, "sequence": 7} | fields


this_boot = pytest.mark.skipif(BOOT is None, reason="no boot id on this system")


@pytest.mark.parametrize(
    ("train", "interlocks"),
    [
        # another boot: its clock means nothing here, the wall clock says how long ago
        (dict(boot="another-boot", clock=999.0, ago=30.0), ("minute_budget",)),
        (dict(boot="another-boot", clock=999.0, ago=61.0), ()),
        (dict(boot=None, clock=999.0, ago=30.0), ("minute_budget",)),
        # a wall time in the future (the clock was stepped back since): it happened now
        (dict(boot="another-boot", clock=0.0, ago=-3600.0), ("refractory", "minute_budget")),
        # this boot: the monotonic clock decides, whatever the wall clock says
        pytest.param(dict(boot=BOOT, clock=939.0, ago=0.0), (), marks=this_boot),
        pytest.param(dict(boot=BOOT, clock=970.0, ago=1e5), ("minute_budget",), marks=this_boot),
        # this boot, a clock reading later than now (cannot happen): it happened now
        pytest.param(
            dict(boot=BOOT, clock=5000.0, ago=1e5), ("refractory", "minute_budget"), marks=this_boot
        ),
    ],
)
def test_the_clock_compares_within_a_boot_and_wall_time_across_boots(scratch, train, interlocks):
    now = 1000.0
    record = _train(boot=train["boot"], clock=train["clock"], time=time.time() - train["ago"])
    _append_records(scratch / "audit.jsonl", record)
    limits = InterlockSettings(refractory_s=2.0, max_trains_per_minute=1, max_trains_per_day=2)
    decision = _one_request(_dry_bridge(scratch, FakeClock(now), limits))
    assert decision.interlocks == interlocks


def test_a_checkpoint_of_another_boot_places_its_trains_by_wall_time(scratch):
    # Written 10 s ago (wall); its trains 20 s and 100 s before it, on that boot's clock.
    checkpoint = {"event": "checkpoint", "boot": "another-boot", "clock": 500.0}
    checkpoint |= {"time": time.time() - 10.0, "trains": [400.0, 480.0]}
    _append_records(scratch / "audit.jsonl", checkpoint)
    limits = InterlockSettings(refractory_s=2.0, max_trains_per_minute=1, max_trains_per_day=3)
    with _dry_bridge(scratch, FakeClock(1000.0), limits) as bridge:
        bridge.arm()
        assert bridge.status().minute_budget_left == 0
        assert bridge.status().day_budget_left == 1


# ------------------------------------------------------------------ withdrawn trains
def _withdrawal(**fields):
    """The decision record of a train stopped after its transmit record: blocked, with the
    sequence number it had been given."""
    return {"event": "decision", "request_id": 1, "outcome": "blocked", "sequence": 7} | fields


@pytest.mark.parametrize(
    ("records", "trains"),
    [
        # transmit, then its withdrawal: nothing was sent
        ([_train(clock=990.0), _withdrawal(clock=990.0)], []),
        # a checkpoint listed it (its record started the file), then the record, then withdrawn
        (
            [
                {"event": "checkpoint", "clock": 990.0, "trains": [980.0, 990.0]},
                _train(clock=990.0),
                _withdrawal(clock=990.0),
            ],
            [980.0],
        ),
        # a train admitted after it at the same reading is another train, listed or not
        (
            [
                {"event": "checkpoint", "clock": 990.0, "trains": [990.0]},
                _train(clock=990.0),
                _withdrawal(clock=990.0),
                _train(clock=990.0, sequence=8),
            ],
            [990.0],
        ),
        # blocked at admission (no sequence): it never counted, so it takes nothing back
        ([_train(clock=990.0), _withdrawal(clock=990.0, sequence=None)], [990.0]),
        # another train's clock, or another boot's: its own train only
        ([_train(clock=990.0), _withdrawal(clock=995.0)], [990.0]),
        ([_train(clock=990.0), _withdrawal(clock=990.0, boot="another-boot")], [990.0]),
        # a withdrawal whose clock cannot be read takes nothing back: the train keeps counting
        ([_train(clock=990.0), _withdrawal(clock=None)], [990.0]),
        # a withdrawal read before its train (a cut log) takes back nothing that follows it
        ([_withdrawal(clock=990.0), _train(clock=990.0)], [990.0]),
    ],
)
def test_a_withdrawn_train_is_taken_back_from_the_history_and_nothing_else(records, trains):
    now_wall = time.time()
    lines = [
        (f"audit.jsonl:{n}", {"boot": "this-boot", "time": now_wall - 5.0} | record)
        for n, record in enumerate(records, start=1)
    ]
    assert past_trains(lines, now_clock=1000.0, now_wall=now_wall, boot="this-boot") == trains


def test_a_train_sent_at_the_clock_reading_of_one_withdrawn_before_it_counts(scratch):
    """A withdrawn train frees its clock reading: armed again before the clock moves (a test's
    clock; a coarse one), the next train is admitted at that same reading. Where the withdrawn
    train's record started its file (here the file was moved away as it was written), the
    checkpoint before it listed it, and the train sent after it, read back under the same boot
    and clock, was taken for that listed train and dropped: a restarted bridge forgot a train
    the device delivered."""
    path = scratch / "audit.jsonl"
    log = _StallingAuditLog(path)
    with _rig(scratch, audit_log=log) as (bridge, emulator, _):
        bridge.arm()
        request = _Thread(lambda: bridge.request_stimulation(REQUEST, OK))
        request.start()
        assert log.stalled.wait(DEADLINE_S), "the request never reached its transmit record"
        path.rename(scratch / "audit.jsonl-20261207")  # its record will start a new file
        disarm = _Thread(lambda: bridge.disarm("operator stop"))
        disarm.start()
        assert _wait_until(lambda: not bridge.armed)
        log.release.set()
        assert request.finish().withdrawn
        disarm.finish()
        bridge.arm()
        assert bridge.request_stimulation(REQUEST, OK).outcome == "sent"  # the clock has not moved
        assert len(emulator.pulses) == 1
    assert read_audit_log(path)[0]["event"] == "checkpoint"
    with _dry_bridge(scratch, FakeClock(), InterlockSettings()) as restarted:  # the rig's reading
        assert restarted.status().day_budget_left == InterlockSettings().max_trains_per_day - 1


# ------------------------------------------------------------------ unreadable logs
def test_a_corrupt_line_refuses_arming_and_names_the_file(scratch):
    path = scratch / "audit.jsonl"
    _append_records(path, _train(clock=1.0, time=1.0), raw='{"event": "transmit", "clo\n')
    _append_records(path, {"event": "close", "time": 3.0})
    with _dry_bridge(scratch, FakeClock()) as bridge:
        with pytest.raises(AuditLogError, match=rf"arming is refused.*'{path}' line 2 is not JSON"):
            bridge.arm()
        assert not bridge.armed
        assert "arming is refused" in bridge.status().arming_refused
        assert bridge.status().last_disarm_reason == "disarmed at start"
        assert bridge.request_stimulation(REQUEST, OK).interlocks == ("armed",)
    with _dry_bridge(scratch, FakeClock()) as bridge, pytest.raises(AuditLogError, match="line 2"):
        bridge.arm()  # and still after a restart: nothing has repaired it
    records = [json.loads(line) for line in path.read_text().splitlines()[3:]]
    reasons = [r["reason"] for r in records if r["event"] == "arm_failed"]
    assert len(reasons) == 2 and all("arming is refused" in r for r in reasons), reasons
    starts = [r for r in records if r["event"] == "start"]
    assert [(r["restored_trains"], "arming is refused" in r["history_error"]) for r in starts] == [
        (0, True),
        (0, True),
    ]


def test_a_bridge_reopened_after_a_fault_on_an_unreadable_log_keeps_the_fault_s_disarm(scratch):
    """A bridge reopened after a fault reports the fault's disarm until armed; one whose history
    was unreadable wrote the log's error over that disarm's reason and kept its cause, so
    /status and the status topic read a "fault" disarm whose reason was the audit log. The
    disarm stays the fault's; ``arming_refused`` (and readiness) name the log."""
    path = scratch / "audit.jsonl"
    _append_records(path, raw="not json\n")
    fault = ("bridge fault: heartbeat thread failed: RuntimeError: gone", "fault")
    settings = BridgeSettings(audit_log=path)
    with StimulationBridge(settings, ONE_A_DAY, clock=FakeClock(), last_disarm=fault) as bridge:
        status = bridge.status()
    assert (status.last_disarm_reason, status.last_disarm_cause) == fault
    assert status.arming_refused.startswith("refractory and budgets cannot be rebuilt")
    assert f"'{path}' line 1 is not JSON" in status.arming_refused


@pytest.mark.parametrize(
    "bad",
    [
        _train(clock=None, time=1.0),
        _train(clock=1.0, time="yesterday"),
        _train(clock=1.0, time=1.0, boot=7),
        {"event": "checkpoint", "clock": 1.0, "time": 1.0, "trains": [1.0, float("nan")]},
        {"event": "checkpoint", "clock": 1.0, "time": 1.0, "trains": "none"},
        {"event": "decision", "outcome": "dry_run", "time": 1.0},
    ],
)
def test_a_train_record_without_its_stamps_refuses_arming(scratch, bad):
    path = scratch / "audit.jsonl"
    with open(path, "w", encoding="utf-8") as file:
        file.write(json.dumps(bad) + "\n")
    with (
        _dry_bridge(scratch, FakeClock()) as bridge,
        pytest.raises(AuditLogError, match=rf"{path}:1: .* must be"),
    ):
        bridge.arm()


def test_a_torn_last_line_is_skipped_with_a_warning_and_kept_last_in_its_file(scratch, caplog):
    path = scratch / "audit.jsonl"
    clock = FakeClock()
    assert _one_request(_dry_bridge(scratch, clock)).outcome == "dry_run"
    _append_records(path, raw='{"event": "transmit", "request_id": 2, "clo')  # power cut
    clock.advance(61.0)
    with caplog.at_level(logging.WARNING, "corticast.bridge"):
        for _ in range(2):  # the second restart reads the torn file again, as ".1"
            assert _one_request(_dry_bridge(scratch, clock)).interlocks == ("day_budget",)
    assert "torn line" in caplog.text and "skipped the torn last line" in caplog.text
    assert path.with_name("audit.jsonl.1").read_text().endswith('"clo')
    assert read_audit_log(path)[-1]["event"] == "close"


def test_a_checkpoint_written_while_the_history_was_unreadable_keeps_arming_refused(scratch):
    path = scratch / "audit.jsonl"
    _append_records(path, {"event": "start"}, raw="not json\n")
    _append_records(path, {"event": "close"})
    with (
        AuditLog(path, max_bytes=300, keep_files=1) as log,
        StimulationBridge(BridgeSettings(audit_log=path), audit_log=log) as bridge,
    ):
        for _ in range(5):  # enough records to rotate, and so drop the corrupt file
            bridge.disarm("to fill the log")
    assert not any("not json" in f.read_text().splitlines() for f in audit_files(path))
    with (
        _dry_bridge(scratch, FakeClock()) as bridge,
        pytest.raises(AuditLogError, match="started while the history was unreadable"),
    ):
        bridge.arm()


# ------------------------------------------------------------------ rotation
def test_history_survives_rotation_and_the_deletion_of_every_older_file(scratch):
    path = scratch / "audit.jsonl"
    clock = FakeClock()
    limits = InterlockSettings(refractory_s=2.0, max_trains_per_minute=3, max_trains_per_day=3)
    with AuditLog(path, max_bytes=2_000, keep_files=2) as log:
        settings = BridgeSettings(audit_log=path)
        with StimulationBridge(settings, limits, audit_log=log, clock=clock) as bridge:
            bridge.arm()
            for _ in range(3):
                assert bridge.request_stimulation(REQUEST, OK).outcome == "dry_run"
                clock.advance(2.0)
            for _ in range(20):  # operator actions fill and rotate the log
                bridge.disarm("pause")
                bridge.arm()
    files = audit_files(path)
    assert len(files) == 3, files  # keep_files rotated ones and the current file
    assert json.loads(path.read_text().splitlines()[0])["event"] == "checkpoint"
    assert all(f.stat().st_size <= 2_000 for f in files)
    for old in files[:-1]:
        old.unlink()
    clock.advance(120.0)  # past the minute: only the day budget is left
    with _dry_bridge(scratch, clock, limits) as bridge:
        bridge.arm()
        assert bridge.request_stimulation(REQUEST, OK).interlocks == ("day_budget",)
    (start,) = [r for r in read_audit_log(path) if r["event"] == "start"][-1:]
    assert start["restored_trains"] == 3


def test_each_train_counts_once_across_rotated_files_and_lifetimes(scratch):
    path = scratch / "audit.jsonl"
    clock = FakeClock()
    limits = InterlockSettings(refractory_s=2.0, max_trains_per_minute=5, max_trains_per_day=5)
    for _ in range(3):  # each lifetime: one train, then enough records to rotate twice or more
        with (
            AuditLog(path, max_bytes=1_500, keep_files=50) as log,
            StimulationBridge(
                BridgeSettings(audit_log=path), limits, audit_log=log, clock=clock
            ) as bridge,
        ):
            bridge.arm()
            assert bridge.request_stimulation(REQUEST, OK).outcome == "dry_run"
            clock.advance(2.0)
            for _ in range(8):
                bridge.disarm("pause")
                bridge.arm()
    assert len(audit_files(path)) > 6
    starts = [r for r in read_audit_log(path) if r["event"] == "start"]
    assert [s["restored_trains"] for s in starts] == [0, 1, 2]


def test_a_train_whose_own_record_starts_a_file_counts_once(scratch):
    """The checkpoint a rotation writes is taken after the train was admitted, so it lists the
    train whose record comes right after it in the new file: one train, not two."""
    path = scratch / "audit.jsonl"
    clock = FakeClock()
    limits = InterlockSettings(refractory_s=2.0, max_trains_per_minute=4, max_trains_per_day=4)
    with (
        AuditLog(path, max_bytes=1_200, keep_files=50) as log,
        StimulationBridge(BridgeSettings(audit_log=path), limits, audit_log=log, clock=clock) as b,
    ):
        b.arm()
        for _ in range(3):
            assert b.request_stimulation(REQUEST, OK).outcome == "dry_run"
            clock.advance(2.0)
    assert [r["event"] for r in read_audit_log(path)].count("checkpoint") >= 2
    clock.advance(60.0)
    decision = _one_request(_dry_bridge(scratch, clock, limits))
    assert decision.outcome == "dry_run", decision.reason  # the day's 4th train
    starts = [r for r in read_audit_log(path) if r["event"] == "start"]
    assert [s["restored_trains"] for s in starts] == [0, 3]


@pytest.mark.parametrize("how", ["removed", "renamed", "truncated"])
def test_a_log_removed_or_emptied_under_a_running_bridge_keeps_its_trains(scratch, how):
    """Someone (a log cleaner, logrotate's rename or copytruncate, a hand) takes the audit file
    away while the bridge runs: its records went on into a file nobody reads, and the next
    bridge started from an empty history. The file the records go to now starts over with a
    checkpoint of the trains, as a rotated one does."""
    path = scratch / "audit.jsonl"
    clock = FakeClock()
    with _dry_bridge(scratch, clock) as bridge:
        bridge.arm()
        assert bridge.request_stimulation(REQUEST, OK).outcome == "dry_run"
        if how == "removed":
            path.unlink()
        elif how == "renamed":
            path.rename(scratch / "audit.jsonl-20261205")
        else:
            path.write_bytes(b"")
        bridge.disarm("pause")
    clock.advance(61.0)
    decision = _one_request(_dry_bridge(scratch, clock))
    assert decision.interlocks == ("day_budget",), decision.reason
    records = read_audit_log(path)
    assert records[0]["event"] == "checkpoint" and len(records[0]["trains"]) == 1


def test_another_boot_s_trains_are_placed_by_its_latest_wall_clock(scratch):
    """A machine that boots with its wall clock behind (no RTC battery, the daemon started
    before NTP) stamps its trains in the past; NTP then steps the clock right, and the records
    after the step, on the same monotonic clock, say so. After the next reboot, the trains of
    ten minutes ago were placed by their own stamps, a day old, and forgotten. Every train of a
    boot is placed by the latest wall time any record of that boot shows for its clock."""
    now, behind = time.time(), 86_400.0
    _append_records(
        scratch / "audit.jsonl",
        _train(boot="another-boot", clock=100.0, time=now - 600.0 - behind),
        {"event": "decision", "request_id": 2, "outcome": "blocked", "sequence": None}
        | {"boot": "another-boot", "clock": 400.0, "time": now - 300.0},  # after the step
    )
    decision = _one_request(_dry_bridge(scratch, FakeClock(), ONE_A_DAY))
    assert decision.interlocks == ("day_budget",), decision.reason


def test_a_log_with_no_records_at_start_is_named_in_a_warning(scratch, caplog, monkeypatch):
    """A bridge that finds no audit log starts with no trains, as it must the first time; a
    daemon started from another working directory (a relative ``audit_log``), or pointed at a
    new path, forgot the trains of the last day without a word. It says which file it read."""
    monkeypatch.chdir(scratch)
    with caplog.at_level(logging.WARNING, "corticast.bridge"):
        with StimulationBridge(BridgeSettings(audit_log=Path("audit.jsonl")), clock=FakeClock()):
            pass
        with _dry_bridge(scratch, FakeClock()):  # finds the first one's records: no warning
            pass
    warned = [r.getMessage() for r in caplog.records if "holds no records" in r.getMessage()]
    assert len(warned) == 1, caplog.text
    assert f"'{scratch / 'audit.jsonl'}'" in warned[0] and repr(str(scratch)) in warned[0]


def test_a_lifetime_s_close_record_places_its_trains_after_a_reboot(scratch):
    """A boot whose wall clock read a day behind until after its last train (NTP stepped it
    right later, and the policy asked for nothing more): its trains and their decisions were
    the only records carrying its monotonic clock, so after the reboot they were placed by
    their own stamps, a day old, and forgotten. The close record at shutdown carries the
    clock too, with the wall time after the step."""
    path = scratch / "audit.jsonl"
    clock = FakeClock()
    assert _one_request(_dry_bridge(scratch, clock)).outcome == "dry_run"
    records = read_audit_log(path)
    for record in records:  # as that boot wrote them; the close record after the step
        record["boot"] = "another-boot"
        record["time"] -= 0.0 if record["event"] == "close" else 86_400.0
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    clock.advance(61.0)
    decision = _one_request(_dry_bridge(scratch, clock))
    assert "day_budget" in decision.interlocks, decision.reason


def test_a_boot_s_clock_that_read_ahead_once_places_only_its_earlier_trains_later(scratch):
    """Only the records written after a train can show that the wall clock read behind when
    the train's own was written: a clock that read ahead earlier in that boot (then set right)
    says nothing of a later train, which is placed by its own time, not counted as now."""
    now = time.time()
    _append_records(
        scratch / "audit.jsonl",
        {"event": "decision", "request_id": 1, "outcome": "blocked", "sequence": None}
        | {"boot": "another-boot", "clock": 100.0, "time": now + 86_400.0 * 365},  # ahead
        _train(boot="another-boot", clock=900.0, time=now - 7_200.0),  # two hours ago
    )
    limits = InterlockSettings(refractory_s=2.0, max_trains_per_minute=1, max_trains_per_day=2)
    with _dry_bridge(scratch, FakeClock(), limits) as bridge:
        assert bridge.status().day_budget_left == 1
        assert bridge.status().minute_budget_left == 1
