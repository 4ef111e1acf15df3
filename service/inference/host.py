"""What about this host decides how fast a model runs on it: the serving probe's cache key and
``corticast doctor``'s facts."""

from __future__ import annotations

import hashlib
import os
import platform
from pathlib import Path
from typing import Any


def facts() -> dict[str, Any]:
    """What about this host makes a measurement valid here: CPU model, usable cores, ORT
    version and execution providers (a new GPU extra changes what can run)."""
    try:
        import onnxruntime as ort

        ort_version, providers = ort.__version__, list(ort.get_available_providers())
    except ImportError:
        ort_version, providers = None, []
    return {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "onnxruntime": ort_version,
        "providers": providers,
    }


CPUINFO = Path("/proc/cpuinfo")
"""Where Linux names the CPU model; hidden under the unit (``ProcSubset=pid``)."""
CPU_MODALIAS = Path("/sys/devices/system/cpu/modalias")
"""The CPU as the kernel matches drivers to it: on x86 its vendor, family and model numbers and
its feature bits (``cpu:type:x86,ven0002fam0019mod0011:feature:,0000,...``). ``/sys`` stays
readable under the unit."""


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else its identity from ``/sys`` (under the unit,
    which hides the former), else what ``platform`` says (``x86_64``, alike on every host, so
    the serving probe's cache could not tell a disk moved to another CPU)."""
    try:
        for line in CPUINFO.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        return _sysfs_cpu(CPU_MODALIAS.read_text().strip())
    except (OSError, ValueError):
        pass
    return platform.processor() or platform.machine()


def _sysfs_cpu(modalias: str) -> str:
    """``x86,ven0002fam0019mod0011, features <digest>`` from the modalias: the numbers, and a
    digest of the feature bits (a CPU whose kernel reports other features is measured again)."""
    prefix, _, rest = modalias.partition("cpu:type:")
    kind, separator, features = rest.partition(":feature:")
    if prefix or not kind or not separator:
        raise ValueError(f"not a CPU modalias: {modalias!r}")
    return f"{kind}, features {hashlib.sha256(features.encode()).hexdigest()[:12]}"


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask: a container's or a unit's limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
