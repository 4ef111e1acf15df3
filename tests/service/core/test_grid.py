"""The electrode array: one comparison of arrays, and the text a user names one with."""

import pytest

from service.core.grid import DEFAULT_GRID, ElectrodeGrid, parse_grid


def test_a_pitch_through_mm_and_back_is_the_same_array_and_another_pitch_is_not() -> None:
    pitch = 0.71e-3
    read_back = float(repr(pitch * 1e3)) / 1e3  # as an XDF header's pitch_mm is read
    assert read_back != pitch
    grid = ElectrodeGrid(16, 16, pitch)
    assert grid.same_array(ElectrodeGrid(16, 16, read_back))
    assert not grid.same_array(ElectrodeGrid(16, 16, 0.72e-3))
    assert not grid.same_array(ElectrodeGrid(16, 17, pitch))
    assert not grid.same_array(ElectrodeGrid(17, 16, pitch))


def test_an_array_is_named_rows_by_columns_at_its_pitch_in_mm() -> None:
    assert parse_grid("18x20@0.5mm") == DEFAULT_GRID
    assert parse_grid(" 8x16@0.71mm ") == ElectrodeGrid(8, 16, 0.71 / 1e3)
    assert parse_grid("8x16@.25mm").describe() == "8x16 at 0.25 mm pitch"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("8x16@0.0005", r"named ROWSxCOLS@PITCHmm .*got '8x16@0\.0005'"),  # no unit: m? mm?
        ("8x16@500um", r"named ROWSxCOLS@PITCHmm"),
        ("8x16", r"named ROWSxCOLS@PITCHmm"),
        ("0x16@0.5mm", r"'0x16@0\.5mm' names no electrode array: grid must have rows, cols >= 1"),
        ("8x16@0mm", r"'8x16@0mm' names no electrode array: 'pitch_m' must be > 0"),
    ],
)
def test_a_text_naming_no_array_is_refused_saying_how_to_name_one(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_grid(text)
