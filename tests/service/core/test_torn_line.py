"""A log's torn last line is moved to its side file; a whole log is left as it is."""

import logging

from service.core.torn_line import set_torn_line_aside


def test_each_torn_line_is_appended_to_the_side_file_and_cut_from_the_log(tmp_path, caplog):
    log = tmp_path / "log.jsonl"
    log.write_bytes(b'{"a": 1}\n{"b": \xe2\x82')  # torn inside a UTF-8 character too
    with caplog.at_level(logging.WARNING, "corticast"):
        side = set_torn_line_aside(log)
    assert side == tmp_path / "log.jsonl.torn"
    assert log.read_bytes() == b'{"a": 1}\n'
    assert f"{log} ended with a torn last line" in caplog.text and str(side) in caplog.text
    log.write_bytes(b"x" * 100_000)  # no newline at all, longer than one read from the end
    assert set_torn_line_aside(log) == side
    assert log.read_bytes() == b""
    assert side.read_bytes() == b'{"b": \xe2\x82\n' + b"x" * 100_000 + b"\n"


def test_a_whole_log_an_empty_one_and_none_are_left_alone(tmp_path):
    log = tmp_path / "log.jsonl"
    assert set_torn_line_aside(log) is None
    log.write_bytes(b"")
    assert set_torn_line_aside(log) is None
    log.write_bytes(b'{"a": 1}\n')
    assert set_torn_line_aside(log) is None
    assert log.read_bytes() == b'{"a": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.jsonl"]
