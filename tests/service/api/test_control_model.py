"""``PUT /control/model`` through the real app: only models inside the model directory, below
the size limit, with a matching step graph in stream mode; the answer says what serves.

One daemon for the module (stream mode, the default; no rig or device: a swap needs neither),
served by uvicorn; each test looks at what serves before and after its own requests.
"""

import errno
import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import httpx
import onnx
import pytest

from models.held_out_check import stamp_check
from models.metadata import METADATA_KEY
from service.api.served import ServedDaemon
from tests.data.tiny_model import copy_tiny_model
from tests.service._loop_harness import AUTH, loop_settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """``models/`` (the configured model's directory) and ``outside/``, each a model copy."""
    root = tmp_path_factory.mktemp("swap")
    copy_tiny_model(root / "models")
    copy_tiny_model(root / "outside")
    return root


@pytest.fixture(scope="module")
def served(root):
    models = root / "models"
    settings = loop_settings(
        root,
        models / "model.onnx",
        models / "model.step.onnx",
        f"corticast-test-{uuid.uuid4().hex[:12]}",
        model={"mode": "stream"},
        bridge={"dry_run": True},
    )
    with ServedDaemon(settings) as served:
        yield served


@pytest.fixture
def http(served):
    with httpx.Client(base_url=served.url, headers=AUTH, timeout=60) as client:
        yield client


def _serving(http: httpx.Client) -> tuple[str, str]:
    model = http.get("/status").json()["model"]
    return model["model_path"], model["model_sha256"]


@pytest.mark.parametrize(
    "path",
    [
        "/etc/passwd",
        "/proc/self/environ",
        "../outside/model.onnx",  # relative: taken inside the model directory, then climbs out
        "{models}/../outside/model.onnx",
        "{models}/link-to-outside-model.onnx",  # a symlink in the directory, to a real model
        "{models}/link-to-passwd.onnx",
    ],
    ids=[
        "etc-passwd",
        "proc-environ",
        "relative-traversal",
        "absolute-traversal",
        "symlink-to-model-outside",
        "symlink-to-passwd",
    ],
)
def test_a_file_outside_the_model_directory_is_refused_and_the_model_keeps_serving(
    served, http, root, path
):
    models = root / "models"
    (models / "link-to-outside-model.onnx").unlink(missing_ok=True)
    (models / "link-to-outside-model.onnx").symlink_to(root / "outside" / "model.onnx")
    (models / "link-to-outside-model.step.onnx").unlink(missing_ok=True)
    (models / "link-to-outside-model.step.onnx").symlink_to(root / "outside" / "model.step.onnx")
    (models / "link-to-passwd.onnx").unlink(missing_ok=True)
    (models / "link-to-passwd.onnx").symlink_to("/etc/passwd")
    path = path.format(models=models)
    before, files = _serving(http), served.daemon.model_files

    answer = http.put("/control/model", json={"path": path})

    assert answer.status_code == 403, answer.text
    assert answer.json()["detail"] == _outside(path, models)
    assert _serving(http) == before and served.daemon.model_files == files


def test_a_refusal_does_not_tell_whether_a_file_outside_exists(http, root):
    missing = f"/etc/corticast-no-such-file-{uuid.uuid4().hex}"
    answers = [http.put("/control/model", json={"path": p}) for p in ("/etc/passwd", missing)]
    assert [a.status_code for a in answers] == [403, 403]
    details = [a.json()["detail"] for a in answers]
    assert details == [_outside(p, root / "models") for p in ("/etc/passwd", missing)]


@pytest.mark.parametrize(
    ("body", "where", "said"),
    [
        ({"path": ""}, "body.path", "must name a file, got an empty path"),
        ({"path": "a\x00b.onnx"}, "body.path", "must not contain a NUL byte"),
        ({"path": "x.onnx", "step_path": " "}, "body.step_path", "must name a file"),
    ],
)
def test_an_empty_path_or_one_with_a_nul_byte_is_refused_saying_so(http, body, where, said):
    """Not echoed as '.' (an empty path is the directory) or refused as outside the model
    directory (a NUL byte): the 422 says what is wrong with the path, and nothing changes."""
    before = _serving(http)
    answer = http.put("/control/model", json=body)
    assert answer.status_code == 422, answer.text
    [problem] = answer.json()["detail"]
    assert problem["where"] == where and said in problem["problem"]
    assert _serving(http) == before


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(served, http, root):
    models = root / "models"
    for name in ("big.onnx", "big.step.onnx"):  # sparse: 64 MiB that take no disk
        with (models / name).open("wb") as handle:
            handle.truncate(64 * 2**20)
    before = _serving(http)

    answer = http.put("/control/model", json={"path": str(models / "big.onnx")})

    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    big = str(models / "big.onnx")
    assert detail == f"path {big!r} is 67108864 bytes, more than [model] max_file_bytes (33554432)"
    assert _serving(http) == before


def test_stream_mode_refuses_a_model_without_its_step_graph(http, root):
    models = root / "models"
    shutil.copyfile(models / "model.onnx", models / "lonely.onnx")
    before = _serving(http)

    answer = http.put("/control/model", json={"path": str(models / "lonely.onnx")})

    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"] == (
        "stream mode runs the step graph, and 'lonely.onnx' has none beside it: export it "
        "as 'lonely.step.onnx' (corticast export RUN OUT --step STEP) or give 'step_path'"
    )
    assert _serving(http) == before


def test_stream_mode_refuses_a_step_graph_of_another_model(http, root):
    models = root / "models"
    window = onnx.load(str(models / "model.onnx"))
    entry = next(p for p in window.metadata_props if p.key == METADATA_KEY)
    metadata = json.loads(entry.value)
    metadata["provenance"] = {**metadata["provenance"], "steps_done": 999}  # another training
    entry.value = json.dumps(metadata)
    onnx.save(window, str(models / "other.onnx"))
    shutil.copyfile(models / "model.step.onnx", models / "other.step.onnx")
    before = _serving(http)

    answer = http.put("/control/model", json={"path": "other.onnx"})

    assert answer.status_code == 422, answer.text
    assert "'other.step.onnx' is not the step graph of 'other.onnx'" in answer.json()["detail"]
    assert "provenance" in answer.json()["detail"]
    assert _serving(http) == before


def test_a_window_graph_given_as_the_step_graph_is_refused(http):
    before = _serving(http)
    answer = http.put("/control/model", json={"path": "model.onnx", "step_path": "model.onnx"})
    assert answer.status_code == 422, answer.text
    assert "'model.onnx' is a 'window' graph, not a step graph" in answer.json()["detail"]
    assert _serving(http) == before


def test_a_valid_swap_serves_the_new_files_and_says_so(served, http, root, caplog):
    models = root / "models"
    shutil.copyfile(models / "model.onnx", models / "next.onnx")
    shutil.copyfile(models / "model.step.onnx", models / "next.step.onnx")
    # The new model's export found it below persistence at frame 2: the swap must say so.
    check = {"split": "val", "windows": 9, "data_range": 2.0,
             "model_psnr_db": [30.0, 27.5], "persistence_psnr_db": [29.0, 28.0]}  # fmt: skip
    stamp_check([models / "next.onnx", models / "next.step.onnx"], check)

    with caplog.at_level(logging.WARNING, logger="corticast.daemon"):
        answer = http.put("/control/model", json={"path": str(models / "next.onnx")})

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["path"], body["step_path"]) == (
        str((models / "next.onnx").resolve()),
        str((models / "next.step.onnx").resolve()),  # derived from the sibling's name
    )
    assert body["model"]["model_path"] == body["step_path"]  # stream mode runs the step graph
    status = http.get("/status").json()["model"]
    assert status["model_path"] == body["step_path"]
    assert status["files"] == {"path": body["path"], "step_path": body["step_path"]}
    assert status["held_out_shortfall_db"] == {"2": 0.5}
    assert status["held_out_check_data"] == "the validation split of its training data"
    assert any(
        "below persistence on its held-out check at predicted frame(s) 2 (by up to 0.50 dB)"
        in record.getMessage()
        for record in caplog.records
    ), [record.getMessage() for record in caplog.records]

    # Back, by names relative to the model directory and an explicit step graph.
    back = http.put("/control/model", json={"path": "model.onnx", "step_path": "model.step.onnx"})
    assert back.status_code == 200, back.text
    assert back.json()["step_path"] == str((models / "model.step.onnx").resolve())
    assert _serving(http)[0] == back.json()["step_path"]
    unchecked = http.get("/status").json()["model"]
    assert unchecked["held_out_shortfall_db"] is unchecked["held_out_check_data"] is None


def test_a_swap_whose_read_runs_out_of_descriptors_is_a_503_not_a_bad_file(http, root, monkeypatch):
    """The swap's own reads (here the window graph's metadata, read by ``onnx.load`` through
    Python's ``open``) raise EMFILE as a plain OSError, which the route answered 422 "[Errno
    24] Too many open files", as if the file were bad. The host's failure: 503, saying what
    ran out; the running model serves on. The error injected at that one read."""
    models = root / "models"
    for name in ("short.onnx", "short.step.onnx"):
        shutil.copyfile(models / name.replace("short", "model"), models / name)
    load = onnx.load

    def out_of_descriptors(path, *args, **kwargs):
        if Path(path).name == "short.onnx":
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), str(path))
        return load(path, *args, **kwargs)

    monkeypatch.setattr(onnx, "load", out_of_descriptors)
    before = _serving(http)

    answer = http.put("/control/model", json={"path": str(models / "short.onnx")})

    assert answer.status_code == 503, answer.text
    detail = answer.json()["detail"]
    assert f"cannot swap to {str(models / 'short.onnx')!r}" in detail
    assert "this process is out of file descriptors" in detail
    assert _serving(http) == before


def _outside(path: str, models) -> str:
    return (
        f"path {path!r} is not a file inside the model directory {str(models.resolve())!r} "
        "([model] directory): models load only from there"
    )
