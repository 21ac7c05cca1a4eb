#!/usr/bin/env bash
# The GPU check in one command: pytest -m gpu, one ZeRO-2 LoRA step of LLaVA-1.5-7B, decoding
# (generate vs ours eager vs CUDA graphs) and SAM ViT-H, into one JSON report (docs/gpu.md).
#
#   tools/gpu_check.sh --prepare        # here, once: wheels + real masks/images into build/gpu_carry
#   tools/gpu_check.sh [--out DIR]      # on the GPU image: DIR/gpu_check.json (default: $OUT,
#                                       # else bench/results/gpu_check)
#   tools/gpu_check.sh --dry-run        # here: tiny sizes on the CPU, the same code paths
#                                       # (default DIR: build/gpu_check_dry)
#
# On the GPU image nothing can be installed: the package runs from this checkout (PYTHONPATH),
# and the carried wheels (DeepSpeed 0.19.8 and the dependencies the image lacks) are unpacked
# into a temporary folder; real data comes from build/gpu_carry/data (a copy of the few folders
# of ../shared/data the check reads, never committed), else from $TEXT4SEG_DATA or ../shared/data.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
CARRY=$REPO/build/gpu_carry
MODE=gpu
OUTDIR=${OUT:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --prepare) MODE=prepare ;;
    --dry-run) MODE=dry ;;
    --out) OUTDIR=${2:?--out needs a folder}; shift ;;
    *) echo "gpu_check.sh: unknown argument $1 (use --prepare, --dry-run, --out DIR)" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$OUTDIR" ]; then
  if [ "$MODE" = dry ]; then OUTDIR=$REPO/build/gpu_check_dry; else OUTDIR=$REPO/bench/results/gpu_check; fi
fi
case "$OUTDIR" in /*) ;; *) OUTDIR=$PWD/$OUTDIR ;; esac

if [ "$MODE" = prepare ]; then
  PY=${PY:-$REPO/.venv/bin/python}
  DATA=${TEXT4SEG_DATA:-$REPO/../shared/data}
  rm -rf "$CARRY"
  mkdir -p "$CARRY/wheels" "$CARRY/data"
  # --no-build-isolation: DeepSpeed's setup imports torch; isolation would fetch a CUDA torch.
  env -u PIP_CONSTRAINT "$PY" -m pip wheel -q --no-deps --no-build-isolation deepspeed==0.19.8 \
    -w "$CARRY/wheels"
  env -u PIP_CONSTRAINT "$PY" -m pip download -q --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$CARRY/wheels" \
    hjson==3.1.0 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 \
    typing-inspection==0.4.5
  for d in coco_tiny16/masks_derived coco_tiny16/images davis_blackswan/Annotations \
    davis_blackswan/JPEGImages; do
    mkdir -p "$CARRY/data/$d"
    cp -r "$DATA/$d/." "$CARRY/data/$d/"
  done
  du -sh "$CARRY"
  exit 0
fi

if [ "$MODE" = dry ]; then
  PY=${PY:-$REPO/.venv/bin/python}
  ARGS=(--dry-run)
else
  PY=${PY:-python3}
  ARGS=()
  SITE=$(mktemp -d /tmp/gpu_check_site.XXXXXX)
  for wheel in "$CARRY"/wheels/*.whl; do
    [ -e "$wheel" ] || { echo "no wheels in $CARRY/wheels: run tools/gpu_check.sh --prepare" >&2; exit 2; }
    module=$(basename "$wheel" | cut -d- -f1)
    # Only what the image lacks: never shadow an installed package with a carried one.
    if ! "$PY" -c "import $module" 2>/dev/null; then
      "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "$wheel"
    fi
  done
  export PYTHONPATH=$SITE
fi
if [ -d "$CARRY/data/coco_tiny16" ]; then
  export TEXT4SEG_DATA=${TEXT4SEG_DATA:-$CARRY/data}
fi
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$REPO/build/torch_extensions}
mkdir -p "$OUTDIR"
cd "$REPO"
exec "$PY" bench/gpu_check.py --out "$OUTDIR/gpu_check.json" "${ARGS[@]}"
