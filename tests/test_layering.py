"""Layering contracts (pyproject.toml, import-linter): they hold here, and they catch violations.

Each violation is made in a temporary copy of the packages, and ``lint-imports`` (what
``make lint`` runs) is run on the copy: it must fail and name the broken contract.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

pytestmark = pytest.mark.skipif(
    not LINT_IMPORTS.exists(), reason=f"lint-imports not installed at {LINT_IMPORTS}: make setup"
)


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the packages under ``root`` (and its pyproject.toml), as make lint."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=root,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture()
def copy(tmp_path: Path) -> Path:
    """The packages and pyproject.toml copied, so they can be broken."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pkg in ("text4seg_ros", "training"):
        shutil.copytree(REPO / pkg, tmp_path / pkg, ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}\n")


def test_contracts_hold_on_this_tree() -> None:
    out = lint_imports(REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


def test_the_copy_itself_passes(copy: Path) -> None:
    """The copy is what is analysed (not the installed package): unchanged, it passes."""
    out = lint_imports(copy)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(
    "module, line, contract, detail",
    [
        (
            "text4seg_ros/metrics.py",
            "import rclpy  # noqa",
            "The core is ROS-free",
            "text4seg_ros.metrics is not allowed to import rclpy",
        ),
        (
            "text4seg_ros/model/answers.py",
            "from ..bag import report  # noqa",
            "The core is ROS-free",
            "text4seg_ros.model is not allowed to import text4seg_ros.bag",
        ),
        (
            "text4seg_ros/refine/tiny.py",
            "import training.recipe  # noqa",
            "The core is ROS-free",
            "text4seg_ros.refine is not allowed to import training",
        ),
        (
            "text4seg_ros/cli.py",
            "from .ros import goals  # noqa",
            "text4seg-segment, text4seg-export and the training package run without ROS",
            "text4seg_ros.cli is not allowed to import text4seg_ros.ros",
        ),
        (
            "text4seg_ros/descriptors/geometry.py",
            "from ..prompts import Task  # noqa",
            "Descriptors (the codec) import nothing of the project above them",
            "text4seg_ros.descriptors is not allowed to import text4seg_ros.prompts",
        ),
        (
            # the cycle this project had: refine needed model.loading for its dtype table
            "text4seg_ros/refine/loading.py",
            "from ..model import loading as _model_loading  # noqa",
            "No import cycles between sibling packages and modules",
            "No cycles are allowed in text4seg_ros.",
        ),
        (
            "text4seg_ros/descriptors/geometry.py",
            "from . import bsd  # noqa",
            "No import cycles between sibling packages and modules",
            "No cycles are allowed in text4seg_ros.descriptors.",
        ),
    ],
)
def test_a_deliberate_violation_fails(
    copy: Path, module: str, line: str, contract: str, detail: str
) -> None:
    _append(copy / module, line)
    out = lint_imports(copy)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"{contract}" in out.stdout and "BROKEN" in out.stdout
    assert detail in out.stdout, out.stdout


def test_every_module_of_the_package_is_in_a_layer() -> None:
    """A new module must be placed: in the core contract (ROS-free) or among the front ends."""
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    contracts = {c["id"]: c for c in config["contracts"]}
    core = set(contracts["core-ros-free"]["source_modules"])
    front_ends = set(contracts["core-ros-free"]["forbidden_modules"])
    top = {
        f"text4seg_ros.{p.stem if p.is_file() else p.name}"
        for p in (REPO / "text4seg_ros").iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()
    }
    unplaced = sorted(top - core - front_ends)
    assert not unplaced, (
        f"{unplaced}: add to source_modules (core, ROS-free) or forbidden_modules (front ends) "
        "of the core-ros-free contract in pyproject.toml"
    )


def test_no_import_is_exempted() -> None:
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    exempt = {c["id"]: c["ignore_imports"] for c in config["contracts"] if c.get("ignore_imports")}
    assert not exempt, f"contracts with exemptions: {exempt}"


def test_make_lint_runs_the_contracts() -> None:
    makefile = (REPO / "Makefile").read_text()
    lint = makefile.split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "lint-imports" in lint and "ruff check" in lint
    assert "test: setup lint" in makefile
