"""Rewrite build-machine include paths baked into the ROS wheels' exported CMake files.

The ROS 2 wheels were built under ``/opt/python/cp311-cp311``; their ``share/**/*.cmake`` files
name that interpreter's include folder and numpy's include folder under it. CMake refuses
imported targets with non-existent include paths, so after every install of ROS wheels we point
them at this interpreter's include folder and this numpy (see ../shared/ROS2_BUILD.md).

Usage: python tools/fix_ros_cmake_paths.py VENV
"""

from __future__ import annotations

import re
import sys
import sysconfig
from pathlib import Path

import numpy

_BUILD_PREFIX = "/opt/python/cp311-cp311"
# numpy's include dir under the build prefix, e.g. .../site-packages/numpy/_core/include
_NUMPY_RE = re.compile(re.escape(_BUILD_PREFIX) + r"[^;\"\s]*?/numpy/(?:_core|core)/include")
_PY_INCLUDE_RE = re.compile(re.escape(_BUILD_PREFIX) + r"/include/python3\.\d+")


def fix(venv: Path) -> int:
    """Rewrite the paths in place; return the number of files changed."""
    py_include = sysconfig.get_paths()["include"]
    np_include = numpy.get_include()
    changed = 0
    for path in (venv / "share").rglob("*.cmake"):
        text = path.read_text(errors="surrogateescape")
        if _BUILD_PREFIX not in text:
            continue
        new = _NUMPY_RE.sub(np_include, text)
        new = _PY_INCLUDE_RE.sub(py_include, new)
        if new != text:
            path.write_text(new, errors="surrogateescape")
            changed += 1
    return changed


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: fix_ros_cmake_paths.py VENV")
    n = fix(Path(sys.argv[1]))
    print(f"[bootstrap] rewrote build-machine include paths in {n} CMake files")
