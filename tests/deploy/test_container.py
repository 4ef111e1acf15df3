"""deploy/container and deploy/compose*.yaml, checked without Docker (none runs here): what
the images copy exists and passes the build context's filter, they run as a non-root user with a
health check, the health check script works, and every service shares the host's network."""

from __future__ import annotations

import http.server
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CONTAINER = DEPLOY / "container"
DOCKERFILES = sorted(CONTAINER.glob("*.Dockerfile"))
HEALTHCHECK = CONTAINER / "healthcheck.py"


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = []
    pending = ""
    for line in dockerfile.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        if line.strip():
            instruction, _, arguments = line.strip().partition(" ")
            joined.append((instruction.upper(), arguments.strip()))
    return joined


def _included(dockerfile: Path) -> list[str]:
    """The paths its <name>.dockerignore lets into the context (it excludes everything else)."""
    lines = Path(f"{dockerfile}.dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*", "the ignore file must start by excluding everything"
    return [line[1:].rstrip("/") for line in patterns if line.startswith("!")]


def test_there_is_a_gpu_and_a_cpu_image():
    assert [path.name for path in DOCKERFILES] == ["cpu.Dockerfile", "gpu.Dockerfile"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_every_copied_path_exists_and_is_in_the_build_context(dockerfile):
    included = _included(dockerfile)
    for instruction, arguments in _instructions(dockerfile):
        if instruction != "COPY" or arguments.startswith("--from"):
            continue
        *sources, _ = arguments.split()
        for source in sources:
            assert (ROOT / source).exists(), f"{dockerfile.name}: COPY {source}: no such path"
            assert any(source == path or source.startswith(f"{path}/") for path in included), (
                f"{dockerfile.name}: COPY {source} is left out of the context by its dockerignore"
            )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_the_image_runs_corticast_as_a_non_root_user_with_a_health_check(dockerfile):
    instructions = _instructions(dockerfile)
    final_stage = instructions[max(k for k, (i, _) in enumerate(instructions) if i == "FROM") :]
    users = [arguments for instruction, arguments in final_stage if instruction == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    (health,) = [
        arguments for instruction, arguments in final_stage if instruction == "HEALTHCHECK"
    ]
    assert '"/opt/corticast/healthcheck.py"' in health
    assert ("ENTRYPOINT", '["corticast"]') in final_stage
    for instruction, arguments in instructions:
        if instruction == "ARG" and "IMAGE=" in arguments:
            image = arguments.split("=", 1)[1]
            assert ":" in image and not image.endswith(":latest"), f"unpinned {image}"


def test_the_gpu_image_installs_the_gpu_extra_and_the_gpu_onnx_runtime():
    runs = " ".join(a for i, a in _instructions(CONTAINER / "gpu.Dockerfile") if i == "RUN")
    assert 'pip install ".[gpu]"' in runs
    assert "uninstall --yes onnxruntime onnxruntime-gpu" in runs
    # The reinstalled GPU wheel is the extra's pin, and the check that runs in the build is
    # the one that loads the providers (not get_available_providers(), which lists them all).
    assert "gpu_check.py --ort-requirement pyproject.toml" in runs
    assert re.search(r"python /opt/corticast/gpu_check.py\s+&&", runs), runs


def test_the_gpu_extra_and_the_gpu_image_use_one_cuda_major():
    """onnxruntime-gpu 1.27+ on PyPI is built for CUDA 13, cuda-python 13 too: the extra pins
    the CUDA 12 builds, the image is CUDA 12, and the build check expects 12."""
    import importlib.util
    import tomllib

    spec = importlib.util.spec_from_file_location("gpu_check", CONTAINER / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    major = gpu_check.EXPECTED_MAJOR
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extra = project["optional-dependencies"]["gpu"]
    assert "onnxruntime-gpu>=1.20,<1.27" in extra and major == 12
    assert any(r.startswith(f"tensorrt-cu{major}") and "<11" in r for r in extra)
    assert any(r.startswith("cuda-python") and f"<{major + 1}" in r for r in extra)
    assert gpu_check.ort_requirement(ROOT / "pyproject.toml") == "onnxruntime-gpu>=1.20,<1.27"
    images = [a for i, a in _instructions(CONTAINER / "gpu.Dockerfile") if "CUDA_IMAGE=" in a]
    assert re.search(rf"nvidia/cuda:{major}\.\d+", images[0]), images


_NOT_INSTALLED = {
    "firmware_bridge/PROTOCOL.md": "the protocol's specification, for the firmware's authors",
    "bench/gpu_check.sh": "run from a checkout (`bash bench/gpu_check.sh`)",
    "bench/benchmarks/model_study.sh": "run from a checkout",
}
"""Files inside the packages that ``pip install .`` leaves out, and why none is read there."""


def test_pip_install_installs_every_data_file_the_packages_hold():
    """The images and the systemd recipe install with ``pip install .``: a file inside a package
    that ``[tool.setuptools.package-data]`` does not name is missing there. The shipped default's
    training run (``models/weights/default.run/``, what ``corticast adapt --from default`` tunes)
    was: ``adapt`` answered that no checkpoint ships beside the default model. The globs are
    taken as setuptools takes them, relative to each package's directory."""
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    installed = {
        path.relative_to(ROOT).as_posix()
        for package, patterns in pyproject["tool"]["setuptools"]["package-data"].items()
        for pattern in patterns
        for path in (ROOT / package.replace(".", "/")).glob(pattern)
        if path.is_file()
    }
    held = {
        path.relative_to(ROOT).as_posix()
        for top in ("service", "models", "firmware_bridge", "bench")
        for path in (ROOT / top).rglob("*")
        if path.is_file() and path.suffix not in {".py", ".pyc"}
    }
    assert "models/weights/default.onnx" in installed
    assert held - installed - set(_NOT_INSTALLED) == set()


def _compose(name: str) -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / name).read_text(encoding="utf-8"))


def _volume_source(volume: str) -> str:
    """The host side of a short-syntax volume; ``${VAR:-default}`` gives its default."""
    if volume.startswith("${"):
        return volume[2 : volume.index("}")].split(":-", 1)[1]
    return volume.split(":")[0]


def test_compose_runs_every_service_on_the_host_network_with_files_that_exist():
    compose = _compose("compose.yaml")
    assert set(compose["services"]) == {"corticast", "prometheus", "grafana"}
    for name, service in compose["services"].items():
        assert service["network_mode"] == "host", f"{name}: LSL discovery needs the host network"
        assert "ports" not in service, f"{name}: ports mean nothing with host networking"
        for volume in service.get("volumes", []):
            source = _volume_source(volume)
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
    build = compose["services"]["corticast"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).exists()
    gpu = _compose("compose.gpu.yaml")["services"]["corticast"]
    assert (DEPLOY / build["context"] / gpu["build"]["dockerfile"]).exists()
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def test_the_scrape_target_is_where_compose_puts_the_api():
    port = _compose("compose.yaml")["services"]["corticast"]["environment"]["CORTICAST_API__PORT"]
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["static_configs"][0]["targets"] == [f"127.0.0.1:{port}"]


def _healthcheck(port: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK)],
        env={**os.environ, "CORTICAST_API__PORT": str(port)},
        capture_output=True,
        text=True,
        timeout=10,
    )


def test_the_health_check_fails_when_nothing_answers():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connection refused
        result = _healthcheck(port)
    assert result.returncode == 1 and "/healthz" in result.stderr


class _Healthz(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()
        self.wfile.write(b'{"status": "alive"}')

    def log_message(self, *args: object) -> None:
        pass


def test_the_health_check_passes_when_healthz_answers():
    with http.server.HTTPServer(("127.0.0.1", 0), _Healthz) as server:
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        try:
            result = _healthcheck(server.server_address[1])
        finally:
            server.shutdown()
            thread.join()
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", ["corticast", "prometheus", "grafana"])
def test_every_service_runs_read_only_without_capabilities_or_new_privileges(name):
    service = _compose("compose.yaml")["services"][name]
    assert service.get("read_only") is True, f"{name}: root file system must be read-only"
    assert service.get("cap_drop") == ["ALL"], f"{name}: must drop every capability"
    assert "no-new-privileges:true" in service.get("security_opt", []), name
    # What each writes to is a volume or a tmpfs, never the image.
    writable = {volume.split(":")[1] for volume in service["volumes"] if volume.count(":") == 1}
    writable |= set(service.get("tmpfs", []))
    needs = {
        "corticast": {"/var/lib/corticast", "/tmp"},
        "prometheus": {"/prometheus"},
        "grafana": {"/var/lib/grafana", "/tmp"},
    }
    assert needs[name] <= writable, f"{name}: {needs[name] - writable} not writable"


def test_secrets_reach_the_containers_as_files_never_as_environment_variables():
    """`docker inspect` shows a container's environment to anyone who may run it."""
    compose = _compose("compose.yaml")
    daemon = compose["services"]["corticast"]
    grafana = compose["services"]["grafana"]
    for service in (daemon, grafana):
        for key in service["environment"]:
            secret = any(word in key for word in ("TOKEN", "PASSWORD"))
            assert not secret or key.endswith("_FILE"), f"{key} passes a secret by value"
    assert daemon["environment"]["CORTICAST_API__TOKEN_FILE"] == "/run/secrets/corticast_api_token"
    assert daemon["secrets"] == ["corticast_api_token"]
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"] == (
        "/run/secrets/grafana_admin_password"
    )
    assert grafana["secrets"] == ["grafana_admin_password"]
    # File secrets: compose bind-mounts them read-only, which a read-only container can take
    # (an `environment:` secret is copied in, which a read-only root file system refuses).
    assert set(compose["secrets"]) == {"corticast_api_token", "grafana_admin_password"}
    assert all(set(secret) == {"file"} for secret in compose["secrets"].values())


def test_the_daemon_reads_its_token_from_the_secret_file_compose_names(tmp_path, monkeypatch):
    from service.config import load_settings

    daemon = _compose("compose.yaml")["services"]["corticast"]
    secret = tmp_path / "corticast_api_token"
    secret.write_text("the-secret-token-0123456789abcdef\n")
    secret.chmod(0o400)
    monkeypatch.delenv("CORTICAST_API__TOKEN", raising=False)
    for key, value in daemon["environment"].items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.setenv("CORTICAST_API__TOKEN_FILE", str(secret))  # where compose mounts it
    token = load_settings(None).api.token
    assert token is not None and token.get_secret_value() == "the-secret-token-0123456789abcdef"
