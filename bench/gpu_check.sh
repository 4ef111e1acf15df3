#!/usr/bin/env bash
# The GPU checks, as one prepared run for a GPU machine lent for minutes (issue 19 item 8):
# every inference backend this host can run on the shipped default, the tiny test checkpoint
# and the paper-sized model (64-64), against ONNX Runtime on the CPU, with p50/p99 and the
# ratio to eager PyTorch on the GPU (bench/gpu_smoke.py); then the test cases that skip
# without CUDA. Whatever a host lacks (TensorRT, ORT's CUDA provider) is a "not run" row with
# its reason. Results go to $OUT (default /tmp/gpu_check): gpu_smoke.txt and gpu_tests.txt.
#
#   bash bench/gpu_check.sh            # from anywhere; needs the runtime packages and torch
#   PARTS=smoke bash bench/gpu_check.sh   # the timed table only (PARTS=tests: the tests only)
set -u
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
out="${OUT:-/tmp/gpu_check}"
mkdir -p "$out"
python="${PYTHON:-python3}"
parts="${PARTS:-smoke tests}"
smoke=0 tests=0
if [[ $parts == *smoke* ]]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv \
        | tee "$out/gpu_smoke.txt"
    "$python" -m bench.gpu_smoke --paper --runs "${RUNS:-300}" --cpu-runs "${CPU_RUNS:-20}" \
        --budget-s "${BUDGET_S:-240}" 2>&1 | tee -a "$out/gpu_smoke.txt"
    smoke=${PIPESTATUS[0]}
fi
if [[ $parts == *tests* ]]; then
    "$python" -m pytest -q -p no:cacheprovider -o addopts="-ra" --timeout 600 \
        tests/service/inference/test_inference.py tests/service/inference/test_gpu_paths.py \
        tests/bench/test_gpu_smoke.py >"$out/gpu_tests.txt" 2>&1
    tests=$?
    tail -n 15 "$out/gpu_tests.txt"
fi
echo "gpu_smoke exit $smoke, GPU tests exit $tests"
exit $((smoke || tests))
