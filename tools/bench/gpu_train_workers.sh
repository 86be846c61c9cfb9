#!/usr/bin/env bash
# Batched training on the GPU with the DataLoader work off the main process: B = 1/8/32,
# 8 workers, pinned memory (tools/bench/train_batch.py synthetic). One short device call.
set -uo pipefail
OUT=${OUT:-outputs/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:${PYTHONPATH:-}"
for loss in ce ncmi_mil; do
  timeout 200 python3 tools/bench/train_batch.py synthetic --bags 256 --patches 5000 --dim 1024 \
    --batch-sizes 1 8 32 --repeats 2 --workers 8 --loss "$loss" --accelerator gpu \
    --precision bf16-mixed --json "$OUT/train_batch_gpu_workers8_${loss}.json" 2>&1 | tail -n 12
done
