"""The GPU smoke script: the CPU reference and the eager baseline run and agree, and every
backend this host cannot run is a "not run" row with its reason, not an abort. On a GPU host
the eager baseline is torch on CUDA; elsewhere it is torch on the CPU."""

import pytest

from bench.gpu_smoke import ROOT, Target, smoke, table

torch = pytest.importorskip("torch")


def test_every_backend_runs_against_the_reference_or_is_reported_not_run_with_its_reason():
    tiny = ROOT / "tests/data/tiny_model"
    rows = smoke(
        [Target("tiny", tiny / "model.onnx", tiny / "run")], runs=2, cpu_runs=2, budget_s=600
    )
    by_case = {(r.backend, r.asked): r for r in rows}
    assert by_case["onnxruntime-cpu", "fp32"].note == "reference"
    eager = by_case["torch-cuda" if torch.cuda.is_available() else "torch-cpu", "fp32"]
    assert eager.note == "ok" and eager.error <= eager.tolerance and eager.speedup == 1.0
    for row in rows:
        if row.p50_ms is None:
            assert row.note.startswith("not run: ") and len(row.note) > len("not run: ") + 10
        elif row.note != "reference":
            assert row.note == "ok" and row.error <= row.tolerance, row
    if not torch.cuda.is_available():
        assert "not run: " in table(rows)
