import pytest

from service.core.realtime_host import RealtimeHost, read_realtime_host

THROTTLING = (
    "real-time throttling, 50 ms of every 1000 ms (kernel.sched_rt_runtime_us: 950000 of "
    "every 1000000 us)"
)


UNREAD = (
    "real-time throttling, ~50 ms of every second unless kernel.sched_rt_runtime_us (not "
    "readable here; 950000 by default) is -1"
)


@pytest.mark.parametrize(
    ("system", "kernel", "runtime", "expected"),
    [
        ("Linux", "6.18.44-fc-v1252", 950000, [THROTTLING, "fair"]),
        ("Linux", "6.18.44-fc-v1252", -1, ["fair"]),
        ("Linux", "6.12.0", -1, ["fair"]),
        ("Linux", "6.11.9-rt", 950000, [THROTTLING]),
        ("Linux", "6.6.30", -1, []),
        # Set to leave normal tasks more, or nothing: the stop is as long as the setting says.
        (
            "Linux",
            "6.6.30",
            900000,
            [
                "real-time throttling, 100 ms of every 1000 ms (kernel.sched_rt_runtime_us: 900000 "
                "of every 1000000 us)"
            ],
        ),
        ("Linux", "6.6.30", 1000000, []),  # runtime = period: real-time may take it all
        # The setting not readable: the kernel's default throttles; not "nothing stops it".
        ("Linux", "5.15.0-91-generic", None, [UNREAD]),
        ("Linux", "6.18.44-fc-v1252", None, [UNREAD, "fair"]),
        # platform.release() on macOS 14: Darwin's numbering, no fair deadline server.
        ("Darwin", "23.1.0", None, []),
        ("Windows", "10", None, []),
    ],
)
def test_what_stops_a_real_time_thread_that_fills_its_cpu(system, kernel, runtime, expected):
    stoppers = RealtimeHost(system, kernel, runtime, 1000000).stoppers()
    assert len(stoppers) == len(expected)
    for found, want in zip(stoppers, expected, strict=True):
        assert found == want if want != "fair" else found.startswith("the fair deadline server")


def test_the_settings_are_read_from_the_kernels_files(tmp_path):
    (tmp_path / "sched_rt_runtime_us").write_text("-1\n")
    (tmp_path / "sched_rt_period_us").write_text("1000000\n")
    host = read_realtime_host(tmp_path)
    assert (host.rt_runtime_us, host.rt_period_us) == (-1, 1000000)
    assert read_realtime_host(tmp_path / "missing").rt_runtime_us is None
