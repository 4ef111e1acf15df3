import os

import pytest

from service.config import ConfigError, load_settings
from service.core.realtime_settings import online_cpus, parse_cpu_list
from service.core.thread_placement import ThreadPlacement


def test_off_by_default_and_nothing_to_apply():
    realtime = load_settings(None).realtime
    assert realtime.policy == "off"
    assert realtime.placement("ingest") is None and realtime.placement("inference") is None


def test_the_section_gives_each_thread_its_priority_and_cpus(tmp_path):
    path = tmp_path / "rt.toml"
    path.write_text(
        '[realtime]\npolicy = "fifo"\ningest_priority = 30\ninference_priority = 12\n'
        "inference_cpus = [0]\n"
    )
    realtime = load_settings(path).realtime
    assert realtime.placement("ingest") == ThreadPlacement("fifo", 30, frozenset())
    assert realtime.placement("inference") == ThreadPlacement("fifo", 12, frozenset({0}))


def test_pinning_alone_applies_under_the_normal_policy(monkeypatch):
    monkeypatch.setenv("CORTICAST_REALTIME__INGEST_CPUS", "[0]")
    realtime = load_settings(None).realtime
    assert realtime.placement("ingest") == ThreadPlacement(None, 20, frozenset({0}))
    assert realtime.placement("inference") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('policy = "deadline"', r"realtime\.policy: Input should be 'off', 'fifo' or 'rr'"),
        ("ingest_priority = 0", r"realtime\.ingest_priority: .*greater than or equal to 1, got 0"),
        ("inference_priority = 100", r"realtime\.inference_priority: .*less than or equal to 99"),
        ("ingest_cpus = [0, 0]", r"realtime\.ingest_cpus: .*must list each CPU once, got \[0, 0\]"),
        ("inference_cpus = [-1]", r"realtime\.inference_cpus: .*\[-1\] not here"),
        (f"inference_cpus = [{os.cpu_count()}]", r"realtime\.inference_cpus: .*CPUs of this host"),
        ("cpus = [0]", r"realtime\.cpus: not a setting"),
    ],
)
def test_bad_values_are_refused_by_name(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(f"[realtime]\n{text}\n")
    with pytest.raises(ConfigError, match=message):
        load_settings(path)


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        ("0", {0}),
        ("0-3", {0, 1, 2, 3}),
        ("0,2,4,6", {0, 2, 4, 6}),
        ("0-1,8,10-11", {0, 1, 8, 10, 11}),
    ],
)
def test_a_kernel_cpu_list_gives_its_ids(text, ids):
    """With SMT off the online CPUs may be 0, 2, 4, 6: a [realtime] CPU is checked against
    those, not against 0 to the count of online CPUs (which refused 4 and 6 and let 1 by)."""
    assert parse_cpu_list(text) == ids


def test_this_hosts_online_cpus_are_those_the_process_can_count(tmp_path):
    online, listed = online_cpus()
    assert online == parse_cpu_list(listed) and len(online) == os.cpu_count()
    missing = tmp_path / "no-such-list"
    assert online_cpus(missing) == (frozenset(range(os.cpu_count())), f"0-{os.cpu_count() - 1}")
    bad = tmp_path / "bad"
    bad.write_text("zero-one\n")
    with pytest.raises(ValueError, match="not a CPU list: 'zero-one'"):
        online_cpus(bad)
