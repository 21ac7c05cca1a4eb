#!/usr/bin/env bash
# The same recipe over several nodes through DeepSpeed's launcher and a hostfile (pdsh/ssh).
#
#   HOSTFILE=training/scripts/hostfile.example MASTER_ADDR=node1 \
#     training/scripts/train_multinode.sh BASE_MODEL DATA.jsonl[,MORE.jsonl] OUTPUT_DIR [overrides]
#
# The hostfile lists "host slots=N" per node; every node needs the same checkout, venv, data
# and model paths, and passwordless ssh from this node. The global batch stays 128 (recipe):
# with 2 nodes x 8 GPUs and PER_DEVICE_BATCH=8, training/train.py derives accumulation 1.
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${1:?usage: train_multinode.sh BASE_MODEL DATA.jsonl[,MORE.jsonl] OUTPUT_DIR [overrides]}
DATA=${2:?data JSONL (comma-separated list)}
OUT=${3:?output directory}
shift 3
HOSTFILE=${HOSTFILE:-training/scripts/hostfile.example}
MASTER_ADDR=${MASTER_ADDR:?set MASTER_ADDR to the first host of $HOSTFILE}
MASTER_PORT=${MASTER_PORT:-29500}
PER_DEVICE_BATCH=${PER_DEVICE_BATCH:-8}
DEEPSPEED=${DEEPSPEED:-deepspeed}
# Extra launcher options, e.g. DEEPSPEED_ARGS="--no_ssh_check" for a one-host hostfile.
read -ra LAUNCHER_ARGS <<<"${DEEPSPEED_ARGS:-}"
IFS=, read -ra FILES <<<"$DATA"
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$PWD/build/torch_extensions}
exec "$DEEPSPEED" "${LAUNCHER_ARGS[@]}" --hostfile "$HOSTFILE" --master_addr "$MASTER_ADDR" \
  --master_port "$MASTER_PORT" --module training.train \
  --model "$MODEL" --data "${FILES[@]}" --output_dir "$OUT" \
  --per_device_batch "$PER_DEVICE_BATCH" "$@"
