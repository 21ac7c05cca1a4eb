#!/usr/bin/env bash
# Build the interface packages under msg/ with plain cmake into the venv (the venv is the ROS
# prefix, see ../shared/ROS2_BUILD.md). vision_msgs first: nothing of ours depends on it, but
# consumers of Detection2DArray do. It is skipped where vision_msgs is installed already in
# another prefix of AMENT_PREFIX_PATH (a sourced ROS 2 from apt): msg/vision_msgs/CMakeLists.txt
# makes the same check for colcon builds.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(cd "${VENV:-.venv}" && pwd)
BUILD=${BUILD_DIR:-build/msg}
OUTSIDE=${AMENT_PREFIX_PATH:-}  # a sourced ROS 2 underlay, if any
export AMENT_PREFIX_PATH=$VENV${OUTSIDE:+:$OUTSIDE} CMAKE_PREFIX_PATH=$VENV${OUTSIDE:+:$OUTSIDE}
export PATH=$VENV/bin:$PATH
mkdir -p "$BUILD"
packages=(text4seg_msgs)
installed=""
IFS=: read -r -a prefixes <<< "$OUTSIDE"
for prefix in "${prefixes[@]}"; do
  if [ -n "$prefix" ] && [ "$(realpath -m "$prefix")" != "$(realpath -m "$VENV")" ] \
      && [ -e "$prefix/share/ament_index/resource_index/packages/vision_msgs" ]; then
    installed=$prefix
    break
  fi
done
if [ -n "$installed" ]; then
  echo "[msgs] vision_msgs is installed in $installed: not built (same definitions)"
else
  packages=(vision_msgs text4seg_msgs)
fi
for pkg in "${packages[@]}"; do
  echo "[msgs] building $pkg"
  cmake -S "msg/$pkg" -B "$BUILD/$pkg" -DCMAKE_INSTALL_PREFIX="$VENV" \
    -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF -Wno-dev > "$BUILD.$pkg.log" 2>&1 \
    || { tail -40 "$BUILD.$pkg.log"; exit 1; }
  cmake --build "$BUILD/$pkg" -j "$(nproc)" >> "$BUILD.$pkg.log" 2>&1 \
    && cmake --install "$BUILD/$pkg" >> "$BUILD.$pkg.log" 2>&1 \
    || { tail -40 "$BUILD.$pkg.log"; exit 1; }
done
check='from text4seg_msgs.msg import Goal, SegmentationArray'
[ -n "$installed" ] || check="$check; from vision_msgs.msg import Detection2DArray"
"$VENV/bin/python" -c "$check; print('[msgs] import ok')"
