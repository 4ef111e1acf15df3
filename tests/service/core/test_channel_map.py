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
