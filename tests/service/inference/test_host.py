"""The host facts the serving probe's cache key holds: the CPU model must still tell hosts apart
under the unit's ``ProcSubset=pid``, which hides ``/proc/cpuinfo``. The readers' paths are
pointed at files written here (two CPUs, or none)."""

from __future__ import annotations

import platform

import pytest

from service.inference import host

EPYC_MILAN = "cpu:type:x86,ven0002fam0019mod0001:feature:,0000,0001,0002,00C0\n"
EPYC_GENOA = "cpu:type:x86,ven0002fam0019mod0011:feature:,0000,0001,0002,00C0,0125\n"
XEON = "cpu:type:x86,ven0000fam0006mod008F:feature:,0000,0001,0003\n"


@pytest.fixture
def no_cpuinfo(monkeypatch, tmp_path):
    """``/proc`` as the unit leaves it (``ProcSubset=pid``): no cpuinfo."""
    monkeypatch.setattr(host, "CPUINFO", tmp_path / "no-cpuinfo")


def _with_modalias(monkeypatch, tmp_path, text: str) -> str:
    path = tmp_path / f"modalias-{abs(hash(text))}"
    path.write_text(text)
    monkeypatch.setattr(host, "CPU_MODALIAS", path)
    return host.facts()["cpu"]


def test_without_proc_cpuinfo_the_cpu_is_told_apart_by_sysfs(no_cpuinfo, monkeypatch, tmp_path):
    """Under the unit every x86 host read ``x86_64``: measurements a disk brought from another
    host were taken as this one's."""
    seen = {_with_modalias(monkeypatch, tmp_path, text) for text in (EPYC_MILAN, EPYC_GENOA, XEON)}
    assert len(seen) == 3
    assert platform.machine() not in seen and "" not in seen
    # The same CPU whose kernel reports one more feature is measured again, to be safe.
    assert _with_modalias(monkeypatch, tmp_path, EPYC_MILAN.strip() + ",0130\n") not in seen


def test_the_model_name_is_read_first_and_platform_is_the_last_resort(monkeypatch, tmp_path):
    """The name the doctor shows; the key holds the ``/sys`` identity whether ``/proc`` shows
    the name (a shell) or not (the unit), so that both key one CPU alike."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9654 96-Core Processor\n")
    monkeypatch.setattr(host, "CPUINFO", cpuinfo)
    shell = _with_modalias(monkeypatch, tmp_path, XEON)
    assert host.cpu_model() == "AMD EPYC 9654 96-Core Processor"
    monkeypatch.setattr(host, "CPUINFO", tmp_path / "no-cpuinfo")
    assert host.facts()["cpu"] == shell
    monkeypatch.setattr(host, "CPU_MODALIAS", tmp_path / "no-modalias")
    assert host.cpu_model() == host.facts()["cpu"] == (platform.processor() or platform.machine())
    monkeypatch.setattr(host, "CPUINFO", cpuinfo)  # no /sys identity: the name is the key
    assert host.facts()["cpu"] == "AMD EPYC 9654 96-Core Processor"
