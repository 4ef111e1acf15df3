import numpy as np
import pytest

from service.core.channel_map import ChannelMap
from service.core.grid import DEFAULT_GRID, ElectrodeGrid

GRID = ElectrodeGrid(rows=2, cols=3)


def _xml(channels: list[tuple[str | None, str | None]], count: int | None = None) -> str:
    body = "".join(
        "<channel><label>x</label>"
        + (f"<row>{r}</row>" if r is not None else "")
        + (f"<col>{c}</col>" if c is not None else "")
        + "</channel>"
        for r, c in channels
    )
    n = len(channels) if count is None else count
    return (
        f"<info><channel_count>{n}</channel_count><desc><channels>{body}</channels></desc></info>"
    )


def test_positions_place_every_channel_on_its_electrode():
    # stream order: (1,2) (0,0) (1,0) (0,1) (0,2) (1,1)
    positions = [(1, 2), (0, 0), (1, 0), (0, 1), (0, 2), (1, 1)]
    channel_map = ChannelMap.from_stream_xml(_xml(positions), GRID)
    samples = np.array([[r * 10 + c for r, c in positions]], dtype=np.float32)
    frames = channel_map.to_frames(samples)
    np.testing.assert_array_equal(frames[0], [[0, 1, 2], [10, 11, 12]])
    assert channel_map.from_metadata and not channel_map.is_identity


def test_no_positions_falls_back_to_row_major():
    channel_map = ChannelMap.from_stream_xml(_xml([(None, None)] * 6), GRID)
    assert not channel_map.from_metadata and channel_map.is_identity
    samples = np.arange(6, dtype=np.float32)[None]
    np.testing.assert_array_equal(channel_map.to_frames(samples)[0], [[0, 1, 2], [3, 4, 5]])


def test_bare_stream_without_desc_falls_back_to_row_major():
    xml = "<info><channel_count>360</channel_count><desc/></info>"
    assert not ChannelMap.from_stream_xml(xml, DEFAULT_GRID).from_metadata


@pytest.mark.parametrize(
    ("xml", "message"),
    [
        (_xml([(0, 0)] * 5), "stream has 5 channels; the 2x3 electrode grid needs exactly 6"),
        (
            _xml([(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (None, None)]),
            "positions for some channels but not channels 5",
        ),
        (
            _xml([(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 1)]),
            r"channels 4 and 5 both claim electrode \(row=1, col=1\)",
        ),
        (
            _xml([(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (2, 0)]),
            r"channel 5 has position \(row=2, col=0\) outside the 2x3 grid",
        ),
        (
            _xml([(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), ("a", 1)]),
            "channel 5 has non-integer row 'a'",
        ),
        (_xml([(0, 0)] * 5, count=6), "declares 6 channels but describes 5"),
        ("<info><channel_count>", "not valid XML"),
    ],
)
def test_inconsistent_metadata_is_refused_with_the_reason(xml, message):
    with pytest.raises(ValueError, match=message):
        ChannelMap.from_stream_xml(xml, GRID)


def _units_xml(units: list[str | None], positions: bool = False) -> str:
    body = "".join(
        "<channel><label>x</label>"
        + (f"<row>{k // 3}</row><col>{2 - k % 3}</col>" if positions else "")
        + (f"<unit>{u}</unit>" if u is not None else "")
        + "</channel>"
        for k, u in enumerate(units)
    )
    return f"<info><channel_count>6</channel_count><desc><channels>{body}</channels></desc></info>"


@pytest.mark.parametrize(
    ("unit", "uv_per_unit"),
    [("microvolts", 1.0), ("µV", 1.0), ("-6", 1.0), ("mV", 1e3), ("volts", 1e6), ("0", 1e6)],
)
@pytest.mark.parametrize("positions", [False, True])
def test_voltage_units_are_scaled_to_microvolts(unit: str, uv_per_unit: float, positions: bool):
    channel_map = ChannelMap.from_stream_xml(_units_xml([unit] * 6, positions), GRID)
    assert channel_map.uv_per_unit == uv_per_unit
    samples = np.arange(6, dtype=np.float32)[None] * np.float32(1e-6)
    frames = channel_map.to_frames(samples)
    order = [[2, 1, 0], [5, 4, 3]] if positions else [[0, 1, 2], [3, 4, 5]]
    np.testing.assert_allclose(frames[0], np.array(order) * 1e-6 * uv_per_unit, rtol=1e-6)
    assert frames.dtype == np.float32
    assert samples[0, 1] == np.float32(1e-6)  # the pulled samples are not scaled in place


@pytest.mark.parametrize(
    ("units", "message"),
    [
        (["counts"] * 6, "channel 0 has unit 'counts'; electrode samples must be a voltage"),
        (["uV"] * 5 + ["mV"], r"same voltage unit or none; 6 of 6 give one, among them channel "),
        (["uV"] * 5 + [None], "same voltage unit or none; 5 of 6 give one"),
    ],
)
def test_other_or_mixed_units_are_refused(units: list[str | None], message: str):
    with pytest.raises(ValueError, match=message):
        ChannelMap.from_stream_xml(_units_xml(units), GRID)


def test_row_and_col_place_the_channels_whatever_their_labels_say():
    """A rig may number its labels from 1 (R01C01 on row 0, col 0): given row/col, those
    place the channels; only a stream read row-major is held to its grid-form labels."""
    body = "".join(
        f"<channel><label>R{r + 1:02d}C{c + 1:02d}</label><row>{r}</row><col>{c}</col></channel>"
        for r in range(2)
        for c in range(3)
    )
    xml = f"<info><channel_count>6</channel_count><desc><channels>{body}</channels></desc></info>"
    assert ChannelMap.from_stream_xml(xml, GRID).is_identity
    with pytest.raises(ValueError, match="channel 0 is labelled 'R01C01' but would be read"):
        ChannelMap.from_stream_xml(xml.replace("<row>", "<r>").replace("</row>", "</r>"), GRID)


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ("<rows>2</rows><cols>3</cols>", None),  # no pitch: the configured one
        ("<pitch_mm>0.5</pitch_mm>", None),
        ("<rows>3</rows>", "stream describes a 3x3 grid with pitch 0.5 mm; the grid is 2x3"),
        ("<pitch_mm>0.4</pitch_mm>", "a 2x3 grid with pitch 0.4 mm; the grid is 2x3 with pitch"),
        ("<rows>two</rows>", "desc/grid must hold integer rows, cols and a number pitch_mm"),
    ],
)
def test_a_grid_element_is_held_to_the_configured_array_in_what_it_gives(layout, message):
    xml = _xml([(None, None)] * 6).replace("</desc>", f"<grid>{layout}</grid></desc>")
    if message is None:
        assert ChannelMap.from_stream_xml(xml, GRID).is_identity
    else:
        with pytest.raises(ValueError, match=message):
            ChannelMap.from_stream_xml(xml, GRID)
