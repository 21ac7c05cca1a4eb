"""Give an editable install the ament layout that ``ros2 launch`` / launch_ros look for.

``pip install -e .`` puts the ``perception_node`` console script in ``<prefix>/bin`` and installs
no data files, but launch_ros resolves ``Node(package="text4seg_ros",
executable="perception_node")`` to ``<prefix>/lib/text4seg_ros/perception_node`` under a prefix
that holds the ament index marker ``share/ament_index/resource_index/packages/text4seg_ros``,
and ``FindPackageShare("text4seg_ros")`` to ``<prefix>/share/text4seg_ros``. This writes that
layout (what ``colcon build --symlink-install`` would) with symlinks into the source tree and to
the console script, so edits to launch/config files take effect without reinstalling. The
shipped demo model ``models/demo`` is linked to ``share/text4seg_ros/models/demo`` (the node's
default model, see :mod:`text4seg_ros.model.meta`) whether or not it is built yet::

    python -m text4seg_ros.ros.install_layout .venv

ROS-free; idempotent.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

PACKAGE = "text4seg_ros"
REPO = Path(__file__).resolve().parents[2]
EXECUTABLES = ("perception_node",)


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)


def install_layout(prefix: Path, repo: Path = REPO, bin_dir: Path | None = None) -> list[Path]:
    """Create the ament layout of :data:`PACKAGE` under ``prefix``; return the paths made.

    ``bin_dir`` holds the console scripts (default ``<prefix>/bin``); each of
    :data:`EXECUTABLES` must exist there (FileNotFoundError otherwise: install the package first).
    """
    prefix = Path(prefix).resolve()
    bin_dir = Path(bin_dir) if bin_dir is not None else prefix / "bin"
    made = []
    marker = prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("")
    made.append(marker)
    share = prefix / "share" / PACKAGE
    _link(repo / "package.xml", share / "package.xml")
    made.append(share / "package.xml")
    for folder, pattern in (("launch", "*.launch.py"), ("config", "*.yaml"), ("config", "*.xml")):
        for src in sorted((repo / folder).glob(pattern)):
            _link(src, share / folder / src.name)
            made.append(share / folder / src.name)
    # The folder is linked even before `make demo-model` wrote it: the link then resolves.
    _link(repo / "models" / "demo", share / "models" / "demo")
    made.append(share / "models" / "demo")
    for name in EXECUTABLES:
        script = bin_dir / name
        if not (script.is_file() and os.access(script, os.X_OK)):
            raise FileNotFoundError(f"{script} missing: run `pip install -e .` first")
        _link(script.resolve(), prefix / "lib" / PACKAGE / name)
        made.append(prefix / "lib" / PACKAGE / name)
    return made


def main(argv: list[str] | None = None) -> None:
    """CLI: ``python -m text4seg_ros.ros.install_layout PREFIX [--bin-dir DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prefix", type=Path, help="install prefix (the venv)")
    parser.add_argument("--bin-dir", type=Path, default=None, help="console scripts folder")
    args = parser.parse_args(argv)
    for path in install_layout(args.prefix, bin_dir=args.bin_dir):
        print(path)


if __name__ == "__main__":
    main()
