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
# smaller GPUs). Extra arguments override recipe fields (python -m training.train --help).
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${1:?usage: train_8gpu.sh BASE_MODEL DATA.jsonl[,MORE.jsonl] OUTPUT_DIR [recipe overrides]}
DATA=${2:?data JSONL (comma-separated list)}
OUT=${3:?output directory}
shift 3
NGPUS=${NGPUS:-8}
PER_DEVICE_BATCH=${PER_DEVICE_BATCH:-16}
PY=${PY:-python}
IFS=, read -ra FILES <<<"$DATA"
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/build/torch_extensions}
exec "$PY" -m torch.distributed.run --standalone --nproc_per_node="$NGPUS" -m training.train \
  --model "$MODEL" --data "${FILES[@]}" --output_dir "$OUT" \
  --per_device_batch "$PER_DEVICE_BATCH" "$@"
