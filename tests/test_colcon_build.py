"""The robot workspace of docs/robot_install.md: ``colcon build`` of the package and its interfaces.

A temporary colcon workspace holds a copy of the sources (the tree colcon would see in
``~/ros2_ws/src/text4seg_ros``); ``colcon build`` (colcon from PyPI, installed by ``make
setup``) builds text4seg_msgs and the ament_python package text4seg_ros over the venv as the
underlay, as a robot builds them over ``/opt/ros/jazzy``. The underlay has vision_msgs already
(the venv's own build of it, standing in for ros-jazzy-vision-msgs), so msg/vision_msgs builds
nothing: the installed one is used. Then the overlay is sourced and checked: imports, the
ament index, the node executable and launch file where ``ros2 launch`` looks for them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv"
SOURCES = ("package.xml", "setup.py", "setup.cfg", "resource", "launch", "config", "msg")
PACKAGES = ("text4seg_ros", "training")
PY = "lib/python3.11/site-packages"

pytestmark = pytest.mark.slow


def _copy_sources(dest: Path) -> None:
    """The files a clone of the repository gives colcon (no venv, build or model folders)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    dest.mkdir(parents=True)
    for name in (*SOURCES, *PACKAGES):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)


def _env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("PYTHONPATH", "COLCON_PREFIX_PATH", "FASTRTPS_DEFAULT_PROFILES_FILE"):
        env.pop(key, None)
    env.update(
        AMENT_PREFIX_PATH=str(VENV),  # the underlay, as /opt/ros/jazzy on a robot
        CMAKE_PREFIX_PATH=str(VENV),
        PATH=f"{VENV / 'bin'}:{env.get('PATH', '')}",
        COLCON_HOME=str(tmp / "colcon_home"),  # no user defaults or mixins
        MAKEFLAGS="-j2",
    )
    return env


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    colcon = VENV / "bin" / "colcon"
    if not colcon.is_file():
        pytest.skip(f"{colcon} is missing: make setup installs colcon (requirements/ros.txt)")
    ws = tmp_path_factory.mktemp("ros2_ws")
    _copy_sources(ws / "src" / "text4seg_ros")
    cmd = [
        str(colcon), "build",
        # the package at the repository root, its interface packages below msg/
        "--base-paths", "src/text4seg_ros", "src/text4seg_ros/msg",
        "--parallel-workers", "2",
        "--event-handlers", "console_direct-",
        "--cmake-args", "-DBUILD_TESTING=OFF", f"-DPython3_EXECUTABLE={VENV / 'bin' / 'python'}",
        "-Wno-dev",
    ]  # fmt: skip
    out = subprocess.run(cmd, cwd=ws, env=_env(ws), capture_output=True, text=True, timeout=900)
    return ws, out


def test_colcon_builds_the_interfaces_and_the_python_package(workspace):
    ws, out = workspace
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    for pkg in ("text4seg_msgs", "vision_msgs", "text4seg_ros"):
        assert f"Finished <<< {pkg}" in out.stdout, out.stdout[-3000:]
    install = ws / "install"
    index = "share/ament_index/resource_index/packages"
    assert (install / "text4seg_msgs" / index / "text4seg_msgs").is_file()
    assert (install / "text4seg_msgs" / PY / "text4seg_msgs" / "msg" / "_goal.py").is_file()
    ros = install / "text4seg_ros"
    assert (ros / index / "text4seg_ros").is_file()
    exe = ros / "lib" / "text4seg_ros" / "perception_node"
    assert exe.is_file() and os.access(exe, os.X_OK)
    assert (ros / "share" / "text4seg_ros" / "launch" / "perception.launch.py").is_file()
    assert (ros / "share" / "text4seg_ros" / "config" / "perception.yaml").is_file()


def test_vision_msgs_installed_in_the_underlay_is_not_built_again(workspace):
    ws, out = workspace
    assert out.returncode == 0, out.stdout[-4000:]
    log = "\n".join(p.read_text() for p in (ws / "log" / "latest_build" / "vision_msgs").glob("*"))
    assert f"vision_msgs is installed in {VENV.resolve()}: not built here" in log, log[-2000:]
    overlay = ws / "install" / "vision_msgs"
    assert not (overlay / "share/ament_index/resource_index/packages/vision_msgs").exists()
    assert not (overlay / PY / "vision_msgs").exists()


def test_sourced_overlay_finds_its_packages_and_the_underlays_vision_msgs(workspace):
    ws, out = workspace
    assert out.returncode == 0, out.stdout[-4000:]
    probe = (
        "import text4seg_msgs, text4seg_ros, vision_msgs\n"
        "from text4seg_msgs.msg import Goal\n"
        "from vision_msgs.msg import Detection2DArray\n"
        "from ament_index_python.packages import get_package_prefix as p\n"
        "print(text4seg_msgs.__file__, text4seg_ros.__file__, vision_msgs.__file__)\n"
        "print(p('text4seg_ros'), p('text4seg_msgs'), p('vision_msgs'))\n"
    )
    script = f". install/setup.sh && python -c {_quote(probe)}"
    env = _env(ws)
    done = subprocess.run(
        ["bash", "-c", script], cwd=ws, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    files, prefixes = (line.split() for line in done.stdout.strip().splitlines()[-2:])
    install = str(ws / "install")
    assert files[0].startswith(install) and files[1].startswith(install), files
    assert files[2].startswith(str(VENV)), files  # vision_msgs from the underlay
    assert prefixes == [f"{install}/text4seg_ros", f"{install}/text4seg_msgs", str(VENV)]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"
