#!/usr/bin/env bash
# The same recipe over several nodes through DeepSpeed's launcher and a hostfile (pdsh/ssh).
#
#   HOSTFILE=training/scripts/hostfile.example MASTER_ADDR=node1 \
#     training/scripts/train_multinode.sh BASE_MODEL DATA.jsonl[,MORE.jsonl] OUTPUT_DIR [overrides]
#
# The hostfile lists "host slots=N" per node; every node needs the same checkout, venv, data
# and model paths, and passwordless ssh from this node. The global batch stays 128 (recipe):
# with 2 nodes x 8 GPUs and PER_DEVICE_BATCH=8, training/train.py derives accumulation 1.
# Nodes that do not share OUTPUT_DIR: add --shared_output false (each node keeps its own
# checkpoints; rank 0 decides the resume step for all). Extra arguments are read from the
# repository root: give paths among them absolute.
set -euo pipefail
# Relative paths the user gives are read from where the script was started, so make them
# absolute before changing to the repository root.
abspath() { case "$1" in /*) printf '%s' "$1" ;; *) printf '%s' "$PWD/$1" ;; esac; }
MODEL=$(abspath "${1:?usage: train_multinode.sh BASE_MODEL DATA.jsonl[,MORE] OUTPUT_DIR [overrides]}")
DATA=${2:?data JSONL (comma-separated list)}
OUT=$(abspath "${3:?output directory}")
shift 3
IFS=, read -ra DATA_FILES <<<"$DATA"
for i in "${!DATA_FILES[@]}"; do DATA_FILES[i]=$(abspath "${DATA_FILES[i]}"); done
REPO=$(cd "$(dirname "$0")/../.." && pwd)
HOSTFILE=$(abspath "${HOSTFILE:-$REPO/training/scripts/hostfile.example}")
cd "$REPO"
MASTER_ADDR=${MASTER_ADDR:?set MASTER_ADDR to the first host of $HOSTFILE}
MASTER_PORT=${MASTER_PORT:-29500}
PER_DEVICE_BATCH=${PER_DEVICE_BATCH:-8}
DEEPSPEED=${DEEPSPEED:-deepspeed}
# Extra launcher options, e.g. DEEPSPEED_ARGS="--no_ssh_check" for a one-host hostfile.
read -ra LAUNCHER_ARGS <<<"${DEEPSPEED_ARGS:-}"
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/build/torch_extensions}
exec "$DEEPSPEED" "${LAUNCHER_ARGS[@]}" --hostfile "$HOSTFILE" --master_addr "$MASTER_ADDR" \
  --master_port "$MASTER_PORT" --module training.train \
  --model "$MODEL" --data "${DATA_FILES[@]}" --output_dir "$OUT" \
  --per_device_batch "$PER_DEVICE_BATCH" "$@"
