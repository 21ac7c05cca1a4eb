#!/usr/bin/env bash
# Build the interface packages under msg/ with plain cmake into the venv (the venv is the ROS
# prefix, see ../shared/ROS2_BUILD.md). vision_msgs first: nothing of ours depends on it, but
# consumers of Detection2DArray do.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(cd "${VENV:-.venv}" && pwd)
BUILD=${BUILD_DIR:-build/msg}
export AMENT_PREFIX_PATH=$VENV CMAKE_PREFIX_PATH=$VENV PATH=$VENV/bin:$PATH
mkdir -p "$BUILD"
for pkg in vision_msgs text4seg_msgs; do
  echo "[msgs] building $pkg"
  cmake -S "msg/$pkg" -B "$BUILD/$pkg" -DCMAKE_INSTALL_PREFIX="$VENV" \
    -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF -Wno-dev > "$BUILD.$pkg.log" 2>&1 \
    || { tail -40 "$BUILD.$pkg.log"; exit 1; }
  cmake --build "$BUILD/$pkg" -j "$(nproc)" >> "$BUILD.$pkg.log" 2>&1 \
    && cmake --install "$BUILD/$pkg" >> "$BUILD.$pkg.log" 2>&1 \
    || { tail -40 "$BUILD.$pkg.log"; exit 1; }
done
"$VENV/bin/python" -c 'from text4seg_msgs.msg import Goal, SegmentationArray; from vision_msgs.msg import Detection2DArray; print("[msgs] import ok")'
