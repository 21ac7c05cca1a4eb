#!/usr/bin/env bash
# Install the ROS 2 Jazzy tools that have no PyPI wheel (launch, launch_ros, ros2cli: `ros2
# launch`, `ros2 lifecycle`, `ros2 topic`, ...) from ../shared/ros2_extra into the venv, as its
# README says: the wheels with --no-deps (launch_ros names `launch` as a dependency, and PyPI's
# `launch` is an unrelated 2017 tool that would shadow it), their PyPI dependencies pinned in
# requirements/constraints.txt, and composition_interfaces built with cmake like msg/.
# Where ../shared/ros2_extra is absent (a robot has these from apt) it says so and does nothing;
# the tests that need the tools then skip with a clear message.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$(cd "${VENV:-.venv}" && pwd)
EXTRA=${ROS2_EXTRA:-../shared/ros2_extra}
BUILD=${BUILD_DIR:-build/msg}
if [ ! -d "$EXTRA/wheels" ]; then
  echo "[ros2_extra] $EXTRA not found: ros2 launch/lifecycle/topic tests will skip"
  exit 0
fi
VPY=$VENV/bin/python
echo "[ros2_extra] installing launch, launch_ros, ros2cli wheels from $EXTRA"
# Not launch_testing / launch_testing_ros: nothing here uses them, and their pytest plugin
# (registered for every pytest run in the venv) uses a hook argument pytest 9 refuses.
wheels=()
for whl in "$EXTRA"/wheels/*.whl; do
  case "$(basename "$whl")" in launch_testing*) continue ;; esac
  wheels+=("$whl")
done
"$VPY" -m pip install -q --no-deps "${wheels[@]}"
"$VPY" -m pip uninstall -q -y launch_testing launch_testing_ros 2>/dev/null || true
# `lark` is not installed: rosidl_parser's lark-parser 0.12 already provides the `lark` module
# (both distributions own the same files), and launch's grammar runs on it.
UV_LINK_MODE=copy "$VENV/bin/uv" pip install -q --python "$VPY" \
  --constraint requirements/constraints.txt -r requirements/ros_extra.txt
export AMENT_PREFIX_PATH=$VENV CMAKE_PREFIX_PATH=$VENV PATH=$VENV/bin:$PATH
pkg=composition_interfaces
echo "[ros2_extra] building $pkg"
mkdir -p "$BUILD"
cmake -S "$EXTRA/src/$pkg" -B "$BUILD/$pkg" -DCMAKE_INSTALL_PREFIX="$VENV" \
  -DPython3_EXECUTABLE="$VPY" -DBUILD_TESTING=OFF -Wno-dev > "$BUILD.$pkg.log" 2>&1 \
  && cmake --build "$BUILD/$pkg" -j "$(nproc)" >> "$BUILD.$pkg.log" 2>&1 \
  && cmake --install "$BUILD/$pkg" >> "$BUILD.$pkg.log" 2>&1 \
  || { tail -40 "$BUILD.$pkg.log"; exit 1; }
"$VPY" -c 'import launch, launch_ros, ros2cli; from composition_interfaces.srv import LoadNode; print("[ros2_extra] import ok")'
