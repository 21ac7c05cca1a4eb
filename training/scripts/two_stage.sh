#!/usr/bin/env bash
# The paper's two-stage schedule: stage 1 on the RefCOCO series (5 epochs), merge, then stage 2
# on gRefCOCO (2 epochs) starting from the merged stage-1 model, merge again.
#
#   training/scripts/two_stage.sh BASE_MODEL RES.jsonl[,MORE.jsonl] GRES.jsonl OUTPUT_DIR
#
# RES.jsonl: python -m training.data.build refer --dataset refcoco|refcoco+|refcocog ...
# GRES.jsonl: python -m training.data.build refer --dataset grefcoco ...
# LAUNCHER=training/scripts/train_multinode.sh runs both stages over a hostfile instead.
# Result: OUTPUT_DIR/stage2_merged, loadable by Segmenter.from_pretrained.
set -euo pipefail
# Relative paths the user gives are read from where the script was started, so make them
# absolute before changing to the repository root.
abspath() { case "$1" in /*) printf '%s' "$1" ;; *) printf '%s' "$PWD/$1" ;; esac; }
MODEL=$(abspath "${1:?usage: two_stage.sh BASE_MODEL RES.jsonl[,MORE] GRES.jsonl OUTPUT_DIR}")
RES=${2:?RefCOCO-series JSONL}
GRES=$(abspath "${3:?gRefCOCO JSONL}")
OUT=$(abspath "${4:?output directory}")
IFS=, read -ra RES_FILES <<<"$RES"
for i in "${!RES_FILES[@]}"; do RES_FILES[i]=$(abspath "${RES_FILES[i]}"); done
RES=$(IFS=,; printf '%s' "${RES_FILES[*]}")
REPO=$(cd "$(dirname "$0")/../.." && pwd)
LAUNCHER=$(abspath "${LAUNCHER:-$REPO/training/scripts/train_8gpu.sh}")
PY=${PY:-python}
case "$PY" in */*) PY=$(abspath "$PY") ;; esac
cd "$REPO"
DTYPE=${MERGE_DTYPE:-bf16}

"$LAUNCHER" "$MODEL" "$RES" "$OUT/stage1" --epochs 5
"$PY" -m training.merge --adapter "$OUT/stage1/adapter" --out "$OUT/stage1_merged" --dtype "$DTYPE"
"$LAUNCHER" "$OUT/stage1_merged" "$GRES" "$OUT/stage2" --epochs 2
"$PY" -m training.merge --adapter "$OUT/stage2/adapter" --out "$OUT/stage2_merged" --dtype "$DTYPE"
echo "two-stage model: $OUT/stage2_merged"
