"""The leave-one-family-out bench end to end at a tiny size: every family, every column."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bench.benchmarks.generalisation import EXTRA_PREDICTORS, TRAINED, Settings, main
from bench.data.synth.mixture import FAMILIES, family_of

TINY = [
    "--train", "0-1", "--test", "1000", "--seconds", "1.5", "--steps", "2",
    "--batch-size", "2", "--hidden", "2,2", "--eval-stride", "64", "--window-stride", "16",
    "--threads", "1",
]  # fmt: skip


def test_every_family_is_held_out_and_scored_by_every_predictor(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(EXTRA_PREDICTORS, "zero", lambda data: np.zeros_like)
    main([*TINY, "--model", "default=models/weights/default.onnx", "--out", str(tmp_path)])
    table = capsys.readouterr().out
    result = json.loads((tmp_path / "generalisation.json").read_text())
    columns = [
        "default", "default blended", TRAINED, f"{TRAINED} blended", "zero", "persistence",
        "linear", "ar",
    ]  # fmt: skip
    assert list(result["families"]) == list(FAMILIES)
    for family in FAMILIES:
        assert f"### held out: {family}" in table
        assert list(result["families"][family]["predictors"]) == columns
        assert family not in result["trained"][family]["families"]  # never trained on
        assert result["trained"][family]["data"].endswith(f"/without={family}")
    assert list(result["pooled"]) == columns
    assert all(len(result["pooled"][name]["ssim"]) == 16 for name in columns)
    header = table.split("### pooled over held-out families")[1].splitlines()[2]
    for name in columns:
        assert f"{name} PSNR" in header and f"{name} SSIM" in header
    # Pooled at the one R: 10 log10(R² / mean MSE), the MSE weighted by each family's windows.
    windows = {family: result["families"][family]["n_windows"] for family in FAMILIES}
    for name in columns:
        mse = sum(
            windows[family] * np.mean(result["families"][family]["predictors"][name]["mse"])
            for family in FAMILIES
        ) / sum(windows.values())
        assert result["pooled"][name]["pooled_psnr"] == pytest.approx(10 * np.log10(2.0**2 / mse))
    assert table.count("PSNR at R = 2 normalised units") == len(FAMILIES) + 1  # every caption


def test_scoring_an_existing_model_alone_and_bad_settings(tmp_path, capsys):
    main([*TINY, "--no-train", "--family", "ou", "--model", "default=models/weights/default.onnx",
          "--out", str(tmp_path)])  # fmt: skip
    result = json.loads((tmp_path / "generalisation.json").read_text())
    assert list(result["families"]) == ["ou"] and result["trained"] == {}
    assert list(result["pooled"]) == ["default", "default blended", "persistence", "linear", "ar"]
    # One blend per held-out session (one here), its final weights in [0, 1] per frame, the
    # model's and the live AR's together at most 1.
    final = result["blend"]["final_weights"]["ou"]["default blended"]
    (weights,), (ar_weights,) = final["model"], final["ar"]
    assert len(weights) == len(ar_weights) == 16
    for w, v in zip(weights, ar_weights, strict=True):
        assert min(w, v) >= 0.0 and w + v <= 1.0 + 1e-3
    with pytest.raises(ValueError, match="'--no-train' scores only '--model' models"):
        Settings(no_train=True)
    with pytest.raises(ValueError, match=r"reserved for the bench's own columns"):
        Settings(models=(("persistence", tmp_path),))
    with pytest.raises(ValueError, match=r"ending in ' blended' name blended columns"):
        Settings(models=(("x blended", tmp_path),))
    with pytest.raises(SystemExit, match="'--model' must be NAME=PATH"):
        main([*TINY, "--model", "default", "--out", str(tmp_path)])


def test_two_models_of_one_name_are_refused_rather_than_one_scored(tmp_path):
    """Columns are keyed by name: a second ``--model a=...`` replaced the first, whose
    scores were then missing from every table without a word."""
    twice = (("a", tmp_path / "one.onnx"), ("a", tmp_path / "two.onnx"))
    with pytest.raises(ValueError, match=r"'--model' names \['a'\] two models"):
        Settings(no_train=True, models=twice)


def test_a_model_is_not_scored_on_sessions_it_learnt_from(tmp_path):
    """The shipped default learnt from ``synthetic-mix:100-119@60``: held out as ``--test
    105``, seed 105 drawn as the family it learnt it as is refused, however long (before, it
    was scored on its own training data as if held out); as another family, it is another
    session, and scored."""
    seed, model = 105, "default=models/weights/default.onnx"
    learnt = family_of(seed)
    args = [*TINY, "--test", str(seed), "--no-train", "--model", model, "--out", str(tmp_path)]
    said = rf"'--model' default was trained on synthetic-mix seed 105 \({learnt}\) \(its data: "
    with pytest.raises(SystemExit, match=said):
        main([*args, "--family", learnt])
    assert not (tmp_path / "generalisation.json").exists()
    other = next(name for name in FAMILIES if name != learnt)
    main([*args, "--family", other])
    assert list(json.loads((tmp_path / "generalisation.json").read_text())["families"]) == [other]
