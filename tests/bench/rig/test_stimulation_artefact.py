"""The stimulation artefact on the simulated rig: the model's shape (zero outside its window,
decaying after each pulse and after the train, falling with distance, clipped at the rail), its
clear errors, and a train the real firmware emulator delivers over UDP showing on the frames a
real LSL inlet receives from the rig, at the frames' own timestamps."""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
import pylsl
import pytest

from bench.data.session import Session
from bench.rig.frame_source import PatternSource, SessionSource
from bench.rig.rig import SimulatedRig
from bench.rig.stimulation_artefact import (
    PULSE_TAU_S,
    RAIL_UV,
    RECOVERY_S,
    StimulationArtefact,
)
from firmware_bridge import (
    BridgeSettings,
    EmulatorSettings,
    FirmwareEmulator,
    LoopHealth,
    StimulationBridge,
    StimulationRequest,
    UdpTransport,
)
from service.core.grid import DEFAULT_GRID, NOMINAL_RATE_HZ, ElectrodeGrid

STIM_ROW, STIM_COL = 9, 5
STIM_CHANNEL = STIM_ROW * DEFAULT_GRID.cols + STIM_COL
BACKGROUND_UV = 20.0
QUIET_UV = 8 * BACKGROUND_UV
"""No background sample reaches this (8 standard deviations), so anything above is artefact."""


class RecordedTrains:
    """A pulse log holding given records, as the emulator's ``pulses`` holds delivered ones."""

    def __init__(self, *records: dict[str, Any]) -> None:
        self.pulses = list(records)


def _train(**changes: Any) -> dict[str, Any]:
    """A train record as the emulator logs it: 40 µA at 130 Hz for 200 ms on one electrode."""
    record = {
        "clock": 100.0,
        "channels": [STIM_CHANNEL],
        "amplitude_ua": 40,
        "phase_width_us": 100,
        "frequency_hz": 130,
        "train_duration_ms": 200,
        "electrode_area_cm2": 2.5e-4,
    }
    return record | changes


def _artefact(*records: dict[str, Any]) -> StimulationArtefact:
    return StimulationArtefact(RecordedTrains(*records), clock_offset_s=0.0)


def test_zero_outside_the_train_and_its_recovery_and_present_inside():
    artefact = _artefact(_train())
    ((start, end),) = artefact.windows
    assert (start, end) == (100.0, pytest.approx(100.0 + 0.2 + RECOVERY_S))
    outside = artefact.at(np.array([0.0, 99.0, start - 1e-6, end + 1e-6, end + 1.0]))
    assert outside.shape == (5, 18, 20) and outside.dtype == np.float32
    assert not outside.any()
    inside = artefact.at(np.array([start, start + 0.1 + 1e-4, start + 0.2 + 1e-3]))
    assert (np.abs(inside) > 50.0).all()  # every electrode, just after a pulse or the train


def test_each_pulse_decays_within_a_few_ms_and_the_tail_reaches_zero_at_its_end():
    artefact = _artefact(_train(frequency_hz=50))  # 20 ms between pulses
    far = np.s_[:, 0, 19]
    after_pulse = 100.0 + 0.04 + np.array([0.0, 0.5, 1.0, 2.0, 4.0, 8.0]) * 1e-3
    values = artefact.at(after_pulse)[far]
    assert (np.diff(values) < 0).all()
    assert values[-1] < 0.01 * values[0]  # 8 tau later: nothing left of the pulse
    np.testing.assert_allclose(values[3] / values[0], np.exp(-2e-3 / PULSE_TAU_S), rtol=1e-3)
    train_end = 100.2 + 10e-3  # past the last pulse's transient: the tail alone
    tail = artefact.at(train_end + np.linspace(0.0, RECOVERY_S - 20e-3, 6))[far]
    assert (np.diff(tail) < 0).all() and tail[-1] > 0
    assert artefact.at(np.array([100.2 + RECOVERY_S]))[far] == pytest.approx(0.0, abs=1e-3)


def test_largest_at_the_stimulated_electrode_and_falling_with_distance():
    artefact = _artefact(_train(frequency_hz=50))
    # 6 ms after a pulse the stimulated electrode is below the rail, so the fall shows there.
    frame = artefact.at(np.array([100.0 + 0.04 + 6e-3]))[0]
    along_row = frame[STIM_ROW, STIM_COL:]
    assert along_row[0] < RAIL_UV and (np.diff(along_row) < 0).all()
    assert np.unravel_index(frame.argmax(), frame.shape) == (STIM_ROW, STIM_COL)
    assert frame[STIM_ROW, STIM_COL] > 10 * frame[0, 19]


def test_a_saturated_channel_reads_the_rail_and_trains_on_two_contacts_add():
    one = _artefact(_train())
    both = _artefact(_train(channels=[STIM_CHANNEL, STIM_CHANNEL + 1]))
    at_pulse = np.array([100.0 + 1 / 130])
    assert one.at(at_pulse)[0, STIM_ROW, STIM_COL] == RAIL_UV
    later = np.array([100.0 + 1 / 130 + 5e-3])
    ratio = both.at(later)[0, 0, 19] / one.at(later)[0, 0, 19]
    assert 2.0 < ratio < 2.1  # the second contact is a little closer to that corner


def test_trains_delivered_later_are_read_at_the_next_call():
    log = RecordedTrains()
    artefact = StimulationArtefact(log, clock_offset_s=0.0)
    stamps = np.array([100.0 + 1e-3])
    assert not artefact.at(stamps).any()
    log.pulses.append(_train())
    assert artefact.at(stamps).any()


def test_the_clock_offset_moves_the_train_onto_the_lsl_clock():
    artefact = StimulationArtefact(RecordedTrains(_train()), clock_offset_s=5.0)
    assert artefact.windows[0][0] == 105.0
    assert not artefact.at(np.array([100.0 + 1e-3])).any()
    assert artefact.at(np.array([105.0 + 1e-3])).any()


@pytest.mark.skipif(sys.platform != "linux", reason="the clocks agree on Linux only")
def test_on_linux_the_emulators_clock_is_lsl_time():
    """liblsl's local_clock is steady_clock, CLOCK_MONOTONIC on Linux: time.monotonic's."""
    offset = StimulationArtefact(RecordedTrains()).clock_offset_s
    assert abs(offset) < 1e-3
    assert abs(pylsl.local_clock() - time.monotonic()) < 1e-3


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"train_duration_ms": -5},
            r"pulse record 0: 'train_duration_ms' must be a finite number > 0, got -5",
        ),
        ({"channels": [360]}, r"pulse record 0: channel 360 is not on the 18x20 grid"),
        ({"channels": [-1]}, r"pulse record 0: channel -1 is not on the 18x20 grid"),
        ({"channels": []}, r"pulse record 0: 'channels' must be a non-empty list, got \[\]"),
        ({"frequency_hz": float("nan")}, r"'frequency_hz' must be a finite number > 0, got nan"),
        ({"clock": None}, r"'pulse record 0: clock' must be a real number, got NoneType"),
    ],
)
def test_a_record_that_cannot_be_a_train_is_refused_by_name(changes, message):
    with pytest.raises((ValueError, TypeError), match=message):
        _artefact(_train(**changes)).at(np.array([100.0]))


def test_a_record_without_a_field_names_it():
    record = _train()
    del record["amplitude_ua"]
    with pytest.raises(ValueError, match="pulse record 0 has no 'amplitude_ua'"):
        _artefact(record).at(np.array([100.0]))


def test_bad_arguments_are_refused():
    with pytest.raises(TypeError, match="'pulse_log' must have a 'pulses' log"):
        StimulationArtefact(object())
    with pytest.raises(TypeError, match="'grid' must be ElectrodeGrid"):
        StimulationArtefact(RecordedTrains(), (18, 20))
    with pytest.raises(ValueError, match="'clock_offset_s' must be finite, got nan"):
        StimulationArtefact(RecordedTrains(), clock_offset_s=float("nan"))
    with pytest.raises(ValueError, match="'timestamps' must have 1 dimensions"):
        _artefact().at(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="'timestamps' must be finite"):
        _artefact().at(np.array([np.nan]))


def test_the_rig_refuses_an_artefact_it_cannot_place():
    artefact = _artefact()
    with pytest.raises(ValueError, match=r"'artefact' needs a real-time rig .* got speed 2"):
        SimulatedRig(PatternSource(), speed=2, artefact=artefact)
    small = StimulationArtefact(RecordedTrains(), ElectrodeGrid(4, 4), clock_offset_s=0.0)
    with pytest.raises(ValueError, match="'artefact' is for a 4x4 grid, the source plays 18x20"):
        SimulatedRig(PatternSource(), artefact=small)


def test_a_bad_record_stops_the_rig_with_its_message(source_id):
    # The rig reads the log at its first push, and the record cannot be a train.
    log = RecordedTrains(_train(clock=time.monotonic(), channels=[400]))
    rig = SimulatedRig(PatternSource(), source_id=source_id, artefact=StimulationArtefact(log))
    with rig:
        assert rig.finished.wait(30)
        with pytest.raises(RuntimeError, match="pulse record 0: channel 400 is not on the"):
            rig.raise_if_failed()


def _background(seconds: float = 4.0) -> SessionSource:
    rng = np.random.default_rng(11)
    n = int(seconds * NOMINAL_RATE_HZ)
    frames = rng.normal(0.0, BACKGROUND_UV, (n, *DEFAULT_GRID.shape)).astype(np.float32)
    return SessionSource(Session(frames=frames, timestamps=np.arange(n) / NOMINAL_RATE_HZ))


def _pull_until(inlet: pylsl.StreamInlet, stamp: float, got: list, timeout: float = 30.0) -> None:
    """Pull chunks into ``got`` until a frame stamped at or after ``stamp`` has arrived."""
    deadline = time.monotonic() + timeout
    while not got or got[-1][1][-1] < stamp:
        if time.monotonic() > deadline:
            pytest.fail(f"no frame stamped {stamp:.3f} within {timeout} s")
        samples, stamps = inlet.pull_chunk(timeout=0.2, max_samples=256)
        if stamps:
            got.append((np.asarray(samples, np.float32), np.asarray(stamps)))


def test_a_delivered_train_shows_on_the_frames_an_inlet_receives(source_id, tmp_path):
    """Bridge -> UDP -> emulator delivers one train; rig -> LSL -> inlet: frames stamped before
    it carry nothing but the background, frames in the train and its recovery carry the model's
    artefact at their own timestamps (what is left is the background), most near the stimulated
    electrode, and frames after the recovery carry nothing again."""
    server = UdpTransport.bind("127.0.0.1", 0)
    emulator = FirmwareEmulator(
        BridgeSettings(transport="udp"), EmulatorSettings(heartbeat_timeout_s=2.0),
        transport=server,
    )  # fmt: skip
    link = BridgeSettings(
        transport="udp", port=server.local_address[1], dry_run=False, ack_timeout_s=1.0,
        heartbeat_period_s=0.1, audit_log=tmp_path / "audit.jsonl",
    )  # fmt: skip
    artefact = StimulationArtefact(emulator)
    rig = SimulatedRig(_background(), source_id=source_id, wait_for_consumer=True,
                       artefact=artefact)  # fmt: skip
    request = StimulationRequest((STIM_CHANNEL,), 40, 100, 130, 200, 2.5e-4)
    got: list[tuple[np.ndarray, np.ndarray]] = []
    try:
        with emulator, StimulationBridge(link) as bridge, rig:
            (info,) = pylsl.resolve_byprop("source_id", source_id, timeout=30)
            inlet = pylsl.StreamInlet(info, max_buflen=30)
            inlet.open_stream(timeout=30)
            _pull_until(inlet, pylsl.local_clock() + 0.3, got)
            bridge.arm()
            assert bridge.request_stimulation(request, LoopHealth(0.005, 0, True)).sent
            ((start, end),) = artefact.windows
            _pull_until(inlet, end + 0.3, got)
            inlet.close_stream()
    finally:
        server.close()
    frames = np.concatenate([f for f, _ in got]).reshape(-1, *DEFAULT_GRID.shape)
    stamps = np.concatenate([s for _, s in got])
    (pulse,) = emulator.pulses
    assert start == pytest.approx(pulse["clock"], abs=1e-3)  # the same clock, to within µs

    before, after = stamps < start, stamps > end
    assert before.sum() > 50 and after.sum() > 50
    assert float(np.abs(frames[before]).max()) < QUIET_UV
    assert float(np.abs(frames[after]).max()) < QUIET_UV
    # A frame stamped just after the delivery may have been pushed before the emulator logged
    # it; from 50 ms on every frame was pushed after, and carries exactly the model's artefact.
    carried = (stamps >= start + 0.05) & (stamps <= end)
    assert carried.sum() > 50
    residual = frames[carried] - artefact.at(stamps[carried])
    assert float(np.abs(residual).max()) < QUIET_UV
    in_train = (stamps >= start + 0.05) & (stamps <= start + 0.2)
    at_stimulated = np.abs(frames[in_train, STIM_ROW, STIM_COL])
    assert np.median(at_stimulated) > 1000.0  # mV-scale, against a 20 µV background
    far = np.abs(frames[in_train, 0, 19]).mean()
    near = np.abs(frames[in_train, STIM_ROW - 1 : STIM_ROW + 2, STIM_COL - 1 : STIM_COL + 2])
    assert near.mean() > 5 * far > 5 * BACKGROUND_UV
