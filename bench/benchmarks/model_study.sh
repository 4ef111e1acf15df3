#!/usr/bin/env bash
# The paper-000 comparison on CPU: three generators, each with and without the adversarial
# loss, same data, same steps, same seed; then one evaluation of all six on the same held-out
# windows. Two runs at a time, one thread each (2-core machines). Usage:
#   bash bench/benchmarks/model_study.sh [STEPS] [OUT]      (defaults: 1500 runs/study)
set -euo pipefail
STEPS=${1:-1500}
OUT=${2:-runs/study}
DATA=synthetic:100-115@60
BIN=.venv/bin
mkdir -p "$OUT"
train() {  # family, adversarial flag
    "$BIN/corticast" train "$1" --data "$DATA" --run "$OUT/$1$3" --steps "$STEPS" \
        --hidden 16,16 --kernel-size 3 --batch-size 16 "$2" --seed 0 --threads 1 \
        --checkpoint-every 250 > "$OUT/$1$3.log" 2>&1
}
for family in convlstm mr_layer_lstm mr_lstm; do
    train "$family" --no-adversarial -l2 &
    train "$family" --adversarial -adv &
    wait
done
runs=() names=()
for family in convlstm mr_lstm mr_layer_lstm; do
    for loss in l2 adv; do runs+=("$OUT/$family-$loss"); names+=("$family-$loss"); done
done
"$BIN/corticast" evaluate "${runs[@]}" --data "$DATA" --out "$OUT/evaluation" \
    --names "$(IFS=,; echo "${names[*]}")" | tee "$OUT/evaluation.md"
