"""The GPU smoke script on a CPU-only machine: the reference and the eager baseline run and
agree, and every GPU backend is a "not run" row with its reason, not an abort."""

import pytest

from bench.gpu_smoke import ROOT, Target, smoke, table

pytest.importorskip("torch")


def test_without_a_gpu_every_gpu_backend_is_reported_not_run_with_its_reason():
    tiny = ROOT / "tests/data/tiny_model"
    rows = smoke([Target("tiny", tiny / "model.onnx", tiny / "run")], runs=2, budget_s=600)
    by_case = {(r.backend, r.asked): r for r in rows}
    assert by_case["onnxruntime-cpu", "fp32"].note == "reference"
    eager = by_case["torch-cpu", "fp32"]
    assert eager.note == "ok" and eager.error <= eager.tolerance and eager.speedup == 1.0
    for (backend, _), row in by_case.items():
        if backend not in ("onnxruntime-cpu", "torch-cpu") and row.p50_ms is None:
            assert row.note.startswith("not run: ") and len(row.note) > len("not run: ") + 10
    assert "not run: " in table(rows)
