"""Check the GPU image's CUDA stack: one CUDA major everywhere, and the providers really load.

``get_available_providers()`` lists the providers an ONNX Runtime build was compiled with, not
those that can load here: a CUDA 13 wheel in a CUDA 12 image lists ``CUDAExecutionProvider``
and then runs every session on the CPU with a warning. So this script

1. reads the CUDA major of the image (``CUDA_VERSION``), of onnxruntime-gpu (its ``cuda``
   extra's runtime requirement), of TensorRT (``tensorrt-cuNN``) and of cuda-bindings, and
   fails unless they agree;
2. checks that the shared libraries of ORT's CUDA and TensorRT providers resolve every
   dependency (``ldd``: a library built for another CUDA major names ``libcudart.so.13``, which
   is not there);
3. where a GPU is visible, creates a session on a one-node model and asserts that the CUDA
   (and TensorRT) provider is the one it runs on, and builds a TensorRT engine.

A plain ``docker build`` has no GPU, so step 3 runs there only when the build is given one
(BuildKit's device entitlement); ``docker run --rm --gpus all --entrypoint python corticast:gpu
/opt/corticast/gpu_check.py --require-gpu`` runs it on the target host. ``--ort-requirement``
prints the onnxruntime-gpu requirement of pyproject.toml's ``gpu`` extra (the Dockerfile
reinstalls it alone, so the pin lives in one place).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

EXPECTED_MAJOR = 12
"""The CUDA major of the image and of the gpu extra's wheels."""


def ort_requirement(pyproject: Path) -> str:
    """The onnxruntime-gpu requirement in pyproject.toml's ``gpu`` extra."""
    extra = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]["gpu"]
    return next(r for r in extra if r.startswith("onnxruntime-gpu"))


def cuda_majors() -> dict[str, int | None]:
    """The CUDA major each part was built for (None: not installed / not said)."""
    majors: dict[str, int | None] = {}
    version = os.environ.get("CUDA_VERSION")
    majors["image (CUDA_VERSION)"] = int(version.split(".")[0]) if version else None
    try:
        requires = importlib.metadata.requires("onnxruntime-gpu") or []
    except importlib.metadata.PackageNotFoundError:
        requires = []
    runtime = [r for r in requires if "nvidia-cuda-runtime" in r]
    found = re.search(r"cu(\d+)|~=\s*(\d+)", runtime[0]) if runtime else None
    majors["onnxruntime-gpu"] = int(next(g for g in found.groups() if g)) if found else None
    names = {
        d.metadata["Name"].lower().replace("_", "-") for d in importlib.metadata.distributions()
    }
    trt = [n for n in names if re.fullmatch(r"tensorrt-cu\d+", n)]
    majors["tensorrt"] = int(trt[0].removeprefix("tensorrt-cu")) if trt else None
    try:
        majors["cuda-bindings"] = int(importlib.metadata.version("cuda-bindings").split(".")[0])
    except importlib.metadata.PackageNotFoundError:
        majors["cuda-bindings"] = None
    return majors


def unresolved_libraries() -> dict[str, list[str]]:
    """For each ORT GPU provider library, the dependencies ``ldd`` cannot find."""
    import onnxruntime

    capi = Path(onnxruntime.__file__).parent / "capi"
    missing = {}
    for name in ("libonnxruntime_providers_cuda.so", "libonnxruntime_providers_tensorrt.so"):
        library = capi / name
        if not library.is_file():
            missing[name] = ["(the library itself: not a GPU build of ONNX Runtime)"]
            continue
        out = subprocess.run(["ldd", str(library)], capture_output=True, text=True).stdout
        gone = [line.split()[0] for line in out.splitlines() if "not found" in line]
        if gone:
            missing[name] = gone
    return missing


def gpu_count() -> int:
    try:
        from cuda.bindings import runtime
    except ImportError:
        return 0
    err, count = runtime.cudaGetDeviceCount()
    return count if int(err) == 0 else 0


def check_sessions() -> None:
    """A session on each GPU provider runs on that provider, and TensorRT builds an engine."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "check", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    import tensorrt  # first: loads libnvinfer from the wheel for ORT's TensorRT provider

    for provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
        session = ort.InferenceSession(data, providers=[provider, "CPUExecutionProvider"])
        used = session.get_providers()
        assert used[0] == provider, f"{provider} did not load: session runs on {used}"
        out = session.run(None, {"x": np.array([[-1, 0, 1, 2]], dtype=np.float32)})[0]
        assert out.tolist() == [[0, 0, 1, 2]], out
        print(f"session on {provider}: ok")
    logger = tensorrt.Logger(tensorrt.Logger.WARNING)
    builder = tensorrt.Builder(logger)
    network = builder.create_network(0)
    parser = tensorrt.OnnxParser(network, logger)
    assert parser.parse(data), [str(parser.get_error(i)) for i in range(parser.num_errors)]
    engine = builder.build_serialized_network(network, builder.create_builder_config())
    assert engine is not None, "TensorRT could not build an engine"
    print(f"TensorRT {tensorrt.__version__} engine: ok")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ort-requirement", type=Path, metavar="PYPROJECT")
    parser.add_argument("--require-gpu", action="store_true", help="fail without a GPU")
    args = parser.parse_args()
    if args.ort_requirement:
        print(ort_requirement(args.ort_requirement))
        return 0
    problems = []
    majors = cuda_majors()
    print("CUDA majors:", majors)
    for part, major in majors.items():
        if major != EXPECTED_MAJOR:
            found = "not found" if major is None else f"CUDA {major}"
            problems.append(f"{part}: {found}, expected CUDA {EXPECTED_MAJOR}")
    for library, gone in unresolved_libraries().items():
        problems.append(f"{library} cannot load: {', '.join(gone)} not found")
    if problems:
        print("GPU stack inconsistent:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    if gpu_count() == 0:
        print("no GPU visible: provider libraries resolve; sessions not checked")
        return 1 if args.require_gpu else 0
    check_sessions()
    return 0


if __name__ == "__main__":
    sys.exit(main())
