"""The files a hot swap may load, decided from ``[model]`` alone (no daemon, nothing loaded)."""

import errno
import json
import os
import threading

import onnx
import pytest

from models.held_out_check import stamp_check
from models.metadata import METADATA_KEY, RASTER_STAGES, raster_stage_path
from service.inference import model_files
from service.inference.model_files import ModelFileError, ModelFiles
from service.inference.predictor import HostResourceError, StreamSpec
from service.inference.settings import ModelSettings
from tests.data.tiny_model import copy_tiny_model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """``configured/`` holds the model the daemon starts on; ``library/`` another copy."""
    root = tmp_path_factory.mktemp("files")
    copy_tiny_model(root / "configured")
    copy_tiny_model(root / "library")
    return root


def _settings(models, **values) -> ModelSettings:
    configured = models / "configured"
    return ModelSettings(
        path=configured / "model.onnx", step_path=configured / "model.step.onnx", **values
    )


def test_the_model_directory_defaults_to_the_configured_models_and_can_be_set(models):
    default = _settings(models)
    assert default.swap_directory == models / "configured"
    files = ModelFiles.for_swap(models / "configured" / "model.onnx", None, default)
    assert files.step_path == (models / "configured" / "model.step.onnx").resolve()
    with pytest.raises(ModelFileError, match="not a file inside the model directory") as refused:
        ModelFiles.for_swap(models / "library" / "model.onnx", None, default)
    assert refused.value.kind == "outside"

    elsewhere = _settings(models, directory=models / "library")
    files = ModelFiles.for_swap("model.onnx", None, elsewhere)  # relative: inside it
    assert files.path == (models / "library" / "model.onnx").resolve()
    with pytest.raises(ModelFileError) as refused:  # the configured one is outside it now
        ModelFiles.for_swap(models / "configured" / "model.onnx", None, elsewhere)
    assert refused.value.kind == "outside"


def test_the_size_limit_is_configurable(models):
    small = _settings(models, max_file_bytes=100_000)  # the tiny graphs are ~210 KB
    with pytest.raises(ModelFileError, match=r"bytes, more than \[model\] max_file_bytes") as err:
        ModelFiles.for_swap("model.onnx", None, small)
    assert err.value.kind == "unusable"


@pytest.mark.parametrize("path", ["no-such.onnx", "../configured/no-such.onnx"])
def test_a_missing_file_is_said_to_be_missing_only_inside_the_directory(models, path):
    with pytest.raises(ModelFileError, match="does not exist in the model directory") as err:
        ModelFiles.for_swap(path, None, _settings(models))
    assert err.value.kind == "missing"


@pytest.mark.parametrize("path", ["bad\0name.onnx", "/", "..", ""])
def test_paths_that_name_no_file_inside_are_refused_as_outside_or_unusable(models, path):
    with pytest.raises(ModelFileError) as err:
        ModelFiles.for_swap(path, None, _settings(models))
    assert err.value.kind in ("outside", "unusable")


def test_a_step_graph_outside_window_mode_is_refused(models):
    window = _settings(models, mode="window")
    assert ModelFiles.for_swap("model.onnx", None, window).opened == (
        (models / "configured" / "model.onnx").resolve(),
    )
    with pytest.raises(ModelFileError, match="'step_path' is for stream mode"):
        ModelFiles.for_swap("model.onnx", "model.step.onnx", window)


def test_a_raster_stage_that_escapes_the_directory_is_refused(tmp_path, models):
    directory = tmp_path / "raster"
    directory.mkdir()
    window = directory / "model.onnx"
    window.write_bytes(b"x")  # raster stages are only located here, not read
    for stage in RASTER_STAGES:
        raster_stage_path(window, stage).write_bytes(b"x")
    settings = _settings(models, mode="raster", directory=directory)
    assert len(ModelFiles.for_swap("model.onnx", None, settings).opened) == 5

    escaping = raster_stage_path(window, "decode")
    escaping.unlink()
    escaping.symlink_to(models / "library" / "model.onnx")
    with pytest.raises(ModelFileError, match=r"raster stage .* not a file inside") as err:
        ModelFiles.for_swap("model.onnx", None, settings)
    assert err.value.kind == "outside"


@pytest.mark.parametrize(
    ("mode", "beside", "kind"),
    [
        ("window", "model.int8.onnx", "outside"),
        ("window", "model.int8.step.onnx", "outside"),
        ("window", "model.step.onnx", "outside"),
        ("stream", "model.int8.onnx", "unusable"),
    ],
)
def test_a_measured_swap_refuses_a_file_beside_it_that_breaks_the_rules(
    tmp_path, mode, beside, kind
):
    """Under serving = "auto" a swap's measurement reads the step graph and the int8 copies
    beside the window graph where they are there: a symlink out of the directory, or a file
    over the size limit, refuses the swap as the named file would; unmeasured, they are not
    read, and not checked. (In stream mode the step graph beside it is the swap's own.)"""
    _, window, _ = copy_tiny_model(tmp_path / "models")
    outside = tmp_path / "outside.onnx"
    outside.write_bytes(window.read_bytes())
    settings = ModelSettings(path=window, mode=mode, max_file_bytes=1_000_000)
    if kind == "outside":
        (window.parent / beside).unlink(missing_ok=True)
        (window.parent / beside).symlink_to(outside)
    else:
        with (window.parent / beside).open("wb") as handle:  # sparse: no disk taken
            handle.truncate(2_000_000)
    ModelFiles.for_swap(window, None, settings)  # not measured: not read
    with pytest.raises(ModelFileError, match=r"serving = 'auto' reads it\)$") as refused:
        ModelFiles.for_swap(window, None, settings, measured=True)
    assert refused.value.kind == kind
    assert str(window.parent.resolve() / beside) in str(refused.value)


@pytest.mark.parametrize(
    ("backend", "precision", "refused"),
    [("tensorrt", "auto", True), ("auto", "fp16", True), ("tensorrt", "fp32", False),
     ("onnxruntime-cpu", "auto", False)],
)  # fmt: skip
def test_a_swap_that_tensorrt_may_build_in_fp16_refuses_an_fp16_graph_beside_it_from_outside(
    tmp_path, backend, precision, refused
):
    """TensorRT 11 builds an FP16 engine from ``x.fp16.onnx`` beside the window graph, where
    it may build one (window mode, backend tensorrt or auto, precision not fp32): a swap
    then reads it, measured or not, so it passes the rules first."""
    _, window, _ = copy_tiny_model(tmp_path / "models")
    (window.parent / "model.fp16.onnx").symlink_to(tmp_path.parent)  # out of the directory
    settings = ModelSettings(path=window, mode="window", backend=backend, precision=precision)
    if not refused:
        ModelFiles.for_swap(window, None, settings)
        return
    with pytest.raises(ModelFileError, match="building an FP16 engine reads it") as err:
        ModelFiles.for_swap(window, None, settings)
    assert err.value.kind == "outside"
    fp16 = window.resolve().parent / "model.fp16.onnx"
    assert str(err.value).startswith(f"the FP16 graph {str(fp16)!r} is not a file inside")


def test_a_measured_swap_reads_nothing_beside_it_that_is_not_there(tmp_path):
    _, window, step = copy_tiny_model(tmp_path / "models")
    step.unlink()
    (window.parent / "model.int8.onnx").symlink_to(window.parent / "gone.onnx")  # dangling
    settings = ModelSettings(path=window, mode="window")
    files = ModelFiles.for_swap(window, None, settings, measured=True)
    assert files.opened == (window.resolve(),)


def test_a_missing_model_directory_refuses_every_swap(tmp_path, models):
    settings = _settings(models, directory=tmp_path / "gone")
    with pytest.raises(ModelFileError, match="is not a directory here") as err:
        ModelFiles.for_swap("model.onnx", None, settings)
    assert err.value.kind == "unusable"


def _with_check(path, model_psnr, persistence_psnr, **labels):
    """Record a held-out check in ``path`` as ``corticast export`` did before checks named
    their ``data`` (``labels`` adds it, and ``split``, as export and adapt now do)."""
    check = {"split": "val", "windows": 9, "data_range": 2.0,
             "model_psnr_db": model_psnr, "persistence_psnr_db": persistence_psnr}  # fmt: skip
    stamp_check([path], {**check, **labels})


def test_a_recorded_held_out_check_below_persistence_is_warned_about(tmp_path):
    copy_tiny_model(tmp_path)
    window, step = tmp_path / "model.onnx", tmp_path / "model.step.onnx"
    unchecked = ModelFiles(window, step)
    assert unchecked.held_out_shortfall is None and unchecked.below_persistence_warning() is None

    persistence = [30.0 - k for k in range(16)]
    model = [29.5, 28.1, *(p + 0.5 for p in persistence[2:])]  # short at frames 1 and 2
    for path in (window, step):
        _with_check(path, model, persistence)
    files = ModelFiles(window, step)
    assert files.held_out_shortfall == {1: 0.5, 2: 0.9}
    warning = files.below_persistence_warning()
    assert "predicted frame(s) 1, 2 (by up to 0.90 dB)" in warning and str(window) in warning
    assert "scored on the validation split of its training data" in warning  # export's check
    # The files still start a daemon: both graphs carry the same check, so they still match.
    settings = ModelSettings(path=window, step_path=step)
    assert ModelFiles.for_swap(window, None, settings).held_out_shortfall == {1: 0.5, 2: 0.9}

    _with_check(window, [p + 0.1 for p in persistence], persistence)
    above = ModelFiles(window, step)
    assert above.held_out_shortfall == {} and above.below_persistence_warning() is None


def test_a_check_says_which_data_it_was_scored_on(tmp_path):
    """An adapted model's check is in-session (``corticast adapt``): the warning says so."""
    copy_tiny_model(tmp_path)
    window = tmp_path / "model.onnx"
    _with_check(window, [29.0, 31.0], [30.0, 30.0], data="adapted-tail", split="test")
    files = ModelFiles(window, None)
    assert files.held_out_check_data == "the held-out tail of the sessions it was adapted on"
    assert "(by up to 1.00 dB), scored on the held-out tail of the sessions it was adapted on" in (
        files.below_persistence_warning()
    )


def test_configured_files_with_metadata_of_the_wrong_type_are_refused_naming_it(tmp_path):
    """A hand-edited ``pitch_m`` of null: refused at start as the file's fault (exit 2),
    not a TypeError from the fit check."""
    _, window, step = copy_tiny_model(tmp_path)
    for path in (window, step):
        graph = onnx.load(str(path))
        entry = next(p for p in graph.metadata_props if p.key == METADATA_KEY)
        entry.value = json.dumps({**json.loads(entry.value), "pitch_m": None})
        onnx.save(graph, str(path))
    settings = ModelSettings(path=window, step_path=step)
    with pytest.raises(ModelFileError, match=r"\[model\] path: .*'pitch_m' must be a number"):
        ModelFiles.for_start(settings, StreamSpec(sample_rate_hz=277.78))


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_configured_model_path_that_is_no_regular_file_is_refused_without_opening_it(
    tmp_path, kind
):
    """A FIFO as ``[model] path`` held the daemon's start (and ``corticast doctor``) waiting
    for a writer: opened before it was looked at. Refused as what it is, and never opened."""
    path = tmp_path / "model.onnx"
    os.mkfifo(path) if kind == "fifo" else path.mkdir()
    outcome: list[BaseException | None] = []

    def start() -> None:
        try:
            ModelFiles.for_start(ModelSettings(path=path), StreamSpec(sample_rate_hz=277.78))
            outcome.append(None)
        except BaseException as err:
            outcome.append(err)

    worker = threading.Thread(target=start, daemon=True)
    worker.start()
    worker.join(10.0)
    assert outcome, "the start still waited on the model path after 10 s"
    what = "a named pipe (FIFO)" if kind == "fifo" else "a directory"
    assert isinstance(outcome[0], ModelFileError), outcome[0]
    assert str(outcome[0]) == f"[model] path {str(path)!r} is {what}, not a regular file"


def test_a_configured_model_path_unreadable_for_want_of_descriptors_is_no_unusable_file(
    models, monkeypatch
):
    """A start whose look at ``[model] path`` failed with EMFILE called the file unusable:
    exit 2, which systemd does not restart on, for a shortage that passes. The host's
    failure: exit 1. The error injected at that one open."""

    def out_of_descriptors(path, *args, **kwargs):
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), str(path))

    monkeypatch.setattr(model_files, "open_regular", out_of_descriptors)
    settings = _settings(models)
    with pytest.raises(HostResourceError, match="out of file descriptors") as failed:
        ModelFiles.for_start(settings, StreamSpec(sample_rate_hz=277.78))
    assert (failed.value.exit_code, failed.value.errno) == (1, errno.EMFILE)
    assert f"cannot read [model] path {str(settings.path)!r}" in str(failed.value)
