#!/usr/bin/env bash
# The paper's recipe (SPEC.md section 8) on one node of 8 GPUs under DeepSpeed ZeRO-2.
#
#   training/scripts/train_8gpu.sh BASE_MODEL DATA.jsonl[,MORE.jsonl] OUTPUT_DIR [--epochs 5 ...]
#
# Every hyper-parameter comes from training/recipe.py (LoRA r 64 / alpha 128 / dropout 0.05,
# AdamW lr 2e-4 (1e-4 InternVL) betas 0.9/0.95 wd 0, 3 % warm-up + linear decay, clip 1.0,
# bf16 where the GPU has it, global batch 128). This script only says how many GPUs and how many
# samples fit on one (PER_DEVICE_BATCH); training/train.py derives the gradient accumulation
# once: 128 = NGPUS x PER_DEVICE_BATCH x accumulation (8 x 16 x 1 by default; use 8 x 4 x 4 on
# smaller GPUs). Extra arguments override recipe fields (python -m training.train --help);
# paths among them are read from the repository root, so give those absolute.
set -euo pipefail
# Relative paths the user gives are read from where the script was started, so make them
# absolute before changing to the repository root.
abspath() { case "$1" in /*) printf '%s' "$1" ;; *) printf '%s' "$PWD/$1" ;; esac; }
MODEL=$(abspath "${1:?usage: train_8gpu.sh BASE_MODEL DATA.jsonl[,MORE.jsonl] OUTPUT_DIR [overrides]}")
DATA=${2:?data JSONL (comma-separated list)}
OUT=$(abspath "${3:?output directory}")
shift 3
IFS=, read -ra DATA_FILES <<<"$DATA"
for i in "${!DATA_FILES[@]}"; do DATA_FILES[i]=$(abspath "${DATA_FILES[i]}"); done
PY=${PY:-python}
case "$PY" in */*) PY=$(abspath "$PY") ;; esac
cd "$(dirname "$0")/../.."
NGPUS=${NGPUS:-8}
PER_DEVICE_BATCH=${PER_DEVICE_BATCH:-16}
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/build/torch_extensions}
exec "$PY" -m torch.distributed.run --standalone --nproc_per_node="$NGPUS" -m training.train \
  --model "$MODEL" --data "${DATA_FILES[@]}" --output_dir "$OUT" \
  --per_device_batch "$PER_DEVICE_BATCH" "$@"
