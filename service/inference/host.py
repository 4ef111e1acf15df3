"""What about this host decides how fast a model runs on it: the serving probe's cache key and
``corticast doctor``'s facts."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any


def facts() -> dict[str, Any]:
    """What about this host makes a measurement valid here: CPU model, usable cores, ORT
    version and execution providers, the other GPU backends' packages and the NVIDIA GPUs and
    driver (a new GPU extra, card or driver changes what can run, and how fast)."""
    try:
        import onnxruntime as ort

        ort_version, providers = ort.__version__, list(ort.get_available_providers())
    except ImportError:
        ort_version, providers = None, []
    return {
        "cpu": cpu_identity(),
        "cores": usable_cores(),
        "onnxruntime": ort_version,
        "providers": providers,
        "gpu_packages": gpu_packages(),
        "gpus": nvidia_gpus(),
    }


GPU_DISTRIBUTIONS = ("tensorrt", "cuda-python", "torch")
"""What the ``gpu`` extra (and ``train``, torch) installs beside ONNX Runtime: the TensorRT and
torch backends, whose availability and speed ORT's version does not tell."""
NVIDIA_PROC = Path("/proc/driver/nvidia")
"""Where the NVIDIA driver names its version and each GPU (``gpus/<bus id>/information``);
readable under the unit with the GPU drop-in (``ProcSubset=all``), absent without a GPU."""


def gpu_packages() -> dict[str, str | None]:
    """Distribution -> installed version (None: not installed), read from its metadata
    without importing it."""
    versions: dict[str, str | None] = {}
    for name in GPU_DISTRIBUTIONS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def nvidia_gpus() -> dict[str, Any]:
    """The NVIDIA driver's version line and the model of each GPU by bus id (none without
    the driver): a card or driver replaced is another host for the GPU backends' timings."""
    try:
        driver = (NVIDIA_PROC / "version").read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        driver = None
    models = {}
    try:
        cards = sorted((NVIDIA_PROC / "gpus").iterdir())
    except OSError:
        cards = []
    for card in cards:
        try:
            lines = (card / "information").read_text().splitlines()
        except OSError:
            continue
        model = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Model:")), "")
        models[card.name] = model
    return {"driver": driver, "models": models}


CPUINFO = Path("/proc/cpuinfo")
"""Where Linux names the CPU model; hidden under the unit (``ProcSubset=pid``)."""
CPU_MODALIAS = Path("/sys/devices/system/cpu/modalias")
"""The CPU as the kernel matches drivers to it: on x86 its vendor, family and model numbers and
its feature bits (``cpu:type:x86,ven0002fam0019mod0011:feature:,0000,...``). ``/sys`` stays
readable under the unit."""


def cpu_identity() -> str:
    """The CPU as the serving probe's cache key names it: its ``/sys`` identity (vendor,
    family, model numbers, a digest of its features), which a shell (``corticast doctor``)
    and the unit (``ProcSubset=pid``) both read, so a record one takes holds for the other;
    where ``/sys`` does not say, :func:`cpu_model`."""
    try:
        return _sysfs_cpu(CPU_MODALIAS.read_text().strip())
    except (OSError, ValueError):
        return cpu_model()


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
