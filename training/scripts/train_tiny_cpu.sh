#!/usr/bin/env bash
# One command, CPU only: ../shared/data/coco_tiny16 -> JSONL samples -> tiny random LLaVA ->
# LoRA under DeepSpeed ZeRO-2 on 2 gloo ranks -> merged checkpoint -> Segmenter answers goals.
#
#   training/scripts/train_tiny_cpu.sh            # about 1 minute on 2 cores
#   STEPS=200 OUT=build/my_run training/scripts/train_tiny_cpu.sh
#
# Only sizes are overridden for the tiny model (LoRA rank 8 on a 64-wide model, batch 8, a few
# steps, a higher learning rate for random weights); the rest is the recipe of
# training/recipe.py. The last line printed is the evaluation (descriptor validity, IoU).
set -euo pipefail
# Relative paths the user gives are read from where the script was started, so make them
# absolute before changing to the repository root.
abspath() { case "$1" in /*) printf '%s' "$1" ;; *) printf '%s' "$PWD/$1" ;; esac; }
REPO=$(cd "$(dirname "$0")/../.." && pwd)
DATA_DIR=$(abspath "${TEXT4SEG_DATA:-$(cd "$REPO/.." && pwd)/shared/data}")/coco_tiny16
OUT=$(abspath "${OUT:-$REPO/build/train_tiny}")
cd "$REPO"
PY=${PY:-.venv/bin/python}
STEPS=${STEPS:-20}
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/build/torch_extensions}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [ ! -f "$DATA_DIR/instances_train2017_small.json" ]; then
  echo "coco_tiny16 not found at $DATA_DIR (set TEXT4SEG_DATA to ../shared/data)" >&2
  exit 2
fi
rm -rf "$OUT"
mkdir -p "$OUT"

echo "== 1/5 data: class-name goals from the COCO instances of coco_tiny16"
"$PY" -m training.data.build coco --instances "$DATA_DIR/instances_train2017_small.json" \
  --images "$DATA_DIR/images" --out "$OUT/coco_tiny16.jsonl"
echo "== 2/5 tiny random LLaVA base model"
"$PY" -c "from text4seg_ros.model.tiny import build_tiny_model; build_tiny_model('llava', '$OUT/base')"
echo "== 3/5 LoRA under DeepSpeed ZeRO-2, 2 CPU ranks (gloo)"
"$PY" -m torch.distributed.run --nproc_per_node=2 --master_port="${MASTER_PORT:-29531}" \
  -m training.train --model "$OUT/base" --data "$OUT/coco_tiny16.jsonl" \
  --output_dir "$OUT/run" --lora_r 8 --lora_alpha 16 --lr 2e-3 --global_batch 8 \
  --per_device_batch 2 --max_steps "$STEPS" --log_steps 5 --save_steps 0 --num_workers 0
echo "== 4/5 merge the adapter"
"$PY" -m training.merge --adapter "$OUT/run/adapter" --out "$OUT/merged"
echo "== 5/5 the merged model answers goals (Segmenter)"
"$PY" -m training.evaluate --model "$OUT/merged" --data "$OUT/coco_tiny16.jsonl" --limit 8 \
  --out "$OUT/answers.json"
