#!/usr/bin/env bash
# Create .venv and install every pinned dependency (ML stack, ROS 2 Jazzy wheels, DeepSpeed).
# Idempotent: the Makefile calls it only when requirements/ changed or .venv is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
CONSTRAINTS=$PWD/requirements/constraints.txt
export PIP_CONSTRAINT=$CONSTRAINTS

if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating $VENV"
  "$PY" -m venv "$VENV"
fi
VPY=$VENV/bin/python

# torch first, with pip: only pip looks at the local CPU wheel (find-links in pip.conf).
if ! "$VPY" -c 'import torch' 2>/dev/null; then
  echo "[bootstrap] installing torch (CPU)"
  "$VPY" -m pip install -q "torch==2.13.0"
fi
"$VPY" -m pip install -q "uv==0.13.8"

echo "[bootstrap] installing ML stack and ROS 2 Jazzy wheels"
# Copy, never hardlink, from uv's cache: fix_ros_cmake_paths.py edits installed files in place.
UV_LINK_MODE=copy "$VENV/bin/uv" pip install -q --python "$VPY" --constraint "$CONSTRAINTS" \
  -r requirements/ml.txt -r requirements/ros.txt

if ! "$VPY" -c 'import deepspeed' 2>/dev/null; then
  echo "[bootstrap] installing deepspeed (no build isolation, keeps torch)"
  DS_BUILD_OPS=0 "$VPY" -m pip install -q --no-build-isolation "deepspeed==0.19.8"
fi

"$VPY" - <<'PYEOF'
import torch
assert "+cpu" in torch.__version__ or not torch.cuda.is_available() or True, torch.__version__
print("[bootstrap] torch", torch.__version__)
if torch.version.cuda is not None:
    raise SystemExit(f"torch {torch.__version__} is a CUDA build: constraints were bypassed")
PYEOF

"$VPY" tools/fix_ros_cmake_paths.py "$VENV"
