"""Every shell command in README.md is runnable as written.

The ```bash blocks are split into commands (continuation lines joined, comments dropped). Each
command is checked by kind: ``make`` targets exist (and ``make -n`` accepts them); our console
scripts parse their arguments with their own argparse parser; ``python -m`` modules and ``hf``
accept every flag given (their ``--help``); ``perception_node`` gets declared parameters and
existing files; ``ros2 launch`` gets declared launch arguments; repository paths exist. The cheap
commands of the tour run for real (scene building, bag recording); the ones that need the demo
model run when its weights are present.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import shell_blocks
from helpers import shell_commands as commands

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
README = REPO / "README.md"
# Paths under these roots are inputs that must exist in the repository (or beside it).
INPUT_ROOTS = (
    "config/",
    "launch/",
    "bench/",
    "tools/",
    "training/",
    "docs/",
    "msg/",
    "models/demo",
)


def readme_commands() -> list[list[str]]:
    return [c for block in shell_blocks(README) for c in commands(block)]


def _strip_env(words: list[str]) -> list[str]:
    """Drop leading ``NAME=value`` assignments (they prefix the command)."""
    i = 0
    while i < len(words) and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[i]):
        i += 1
    return words[i:]


def _help(argv: list[str]) -> str:
    out = subprocess.run(
        argv + ["--help"], capture_output=True, text=True, timeout=120, cwd=REPO, env=_env()
    )
    assert out.returncode == 0, f"{argv} --help failed: {out.stderr[-2000:]}"
    return out.stdout


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '')}"
    env.setdefault("AMENT_PREFIX_PATH", str(VENV_BIN.parent))
    return env


def _flags(args: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in args if a.startswith("--")]


def _make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([a-zA-Z][\w-]*):", text, flags=re.M))


def _check_paths(words: list[str]) -> None:
    for w in words:
        value = w.split(":=", 1)[-1].replace("$PWD/", "")
        if value.startswith(INPUT_ROOTS) or value.startswith("../shared/"):  # not demo_out/
            assert (REPO / value).exists(), f"{' '.join(words)}: {value} does not exist"


def check_command(words: list[str]) -> str:
    """Check one command; returns its kind (for the coverage assertion)."""
    words = _strip_env(words)
    if not words:
        return "assignment"
    prog, args = words[0], words[1:]
    _check_paths(words)
    if prog == "export":
        for a in args:
            assert re.match(r"^[A-Za-z_]\w*=", a), f"export {a}: not NAME=value"
        return "export"
    if prog == "make":
        for target in args:
            assert target in _make_targets(), f"make {target}: no such target in Makefile"
            dry = subprocess.run(["make", "-n", target], cwd=REPO, capture_output=True, text=True)
            assert dry.returncode == 0, f"make -n {target}: {dry.stderr}"
        return "make"
    if prog == "text4seg-segment":
        from text4seg_ros.cli import build_parser

        build_parser().parse_args(args)
        return "console"
    if prog == "text4seg-bag":
        from text4seg_ros.bag.cli import build_parser

        build_parser().parse_args(args)
        return "console"
    if prog == "text4seg-goal":
        from text4seg_ros.ros.goal_client import build_parser

        build_parser().parse_args(args)
        return "console"
    if prog == "perception_node":
        from text4seg_ros.ros.params import SPECS

        assert (VENV_BIN / "perception_node").exists(), "perception_node is not installed"
        assert args[0] == "--ros-args", args
        i = 1
        while i < len(args):
            opt, value = args[i], args[i + 1]
            if opt == "-p":
                name = value.split(":=", 1)[0]
                assert name in SPECS, f"perception_node: no parameter {name!r}"
            elif opt == "--params-file":
                assert (REPO / value).is_file(), f"perception_node: no params file {value}"
            else:
                assert opt == "-r" and ":=" in value, f"perception_node: bad argument {opt}"
            i += 2
        return "node"
    if prog == "ros2":
        assert args[:3] == ["launch", "text4seg_ros", args[2]], args
        launch = (REPO / "launch" / args[2]).read_text()
        declared = set(re.findall(r'DeclareLaunchArgument\(\s*"(\w+)"', launch))
        for a in args[3:]:
            assert a.split(":=", 1)[0] in declared, f"ros2 launch: no argument {a}"
        return "launch"
    if prog == "python" and args[:1] == ["-m"]:
        module, rest = args[1], args[2:]
        sub = [rest[0]] if rest and not rest[0].startswith("-") else []
        text = _help([sys.executable, "-m", module, *sub])
        for flag in _flags(rest):
            assert flag in text, f"python -m {module} {' '.join(sub)}: no flag {flag}"
        return "python"
    if prog == "python" and args[:1] == ["-c"]:
        compile(args[1], "<readme>", "exec")
        return "python -c"
    if prog == "hf":
        text = _help([str(VENV_BIN / "hf"), args[0]])
        for flag in _flags(args[1:]):
            assert flag in text, f"hf {args[0]}: no flag {flag}"
        return "hf"
    if prog == "echo":
        return "echo"
    raise AssertionError(f"README command of unknown kind (add a check): {' '.join(words)}")


def test_readme_is_short_and_has_commands() -> None:
    assert len(README.read_text().splitlines()) <= 260
    assert len(readme_commands()) >= 10


@pytest.mark.parametrize(
    "words", readme_commands(), ids=lambda w: " ".join(_strip_env(w))[:60] or "env"
)
def test_readme_command_is_runnable(words: list[str]) -> None:
    check_command(words)


def test_the_first_two_commands_are_make_demo_and_make_test() -> None:
    makes = [c for c in readme_commands() if c[0] == "make"]
    assert makes[:2] == [["make", "demo"], ["make", "test"]]


def _demo_scene(root: Path) -> Path:
    """Scene 0 of the held-out split, written where make demo writes it (cheap)."""
    from text4seg_ros.demo.scenes import write_heldout_scenes

    write_heldout_scenes(root / "demo_out" / "scenes", 1)
    return root


def test_tour_files_are_what_make_demo_writes(tmp_path: Path) -> None:
    """The tour's inputs: make demo's scene files and bag (names checked against its code)."""
    import inspect

    from text4seg_ros.demo import run
    from training.data.tabletop import draw_tabletop, scene_seed

    _demo_scene(tmp_path)
    segment = next(c for c in readme_commands() if c[0] == "text4seg-segment")
    assert (tmp_path / segment[1]).is_file(), segment[1]
    bags = {w for c in readme_commands() for w in c if w.startswith("demo_out/") and "bag" in w}
    assert bags
    for bag in bags:
        assert f'"{bag.removeprefix("demo_out/")}"' in inspect.getsource(run), bag
    # the goals of step 1 are objects of that scene, named as the demo model was trained
    scene = draw_tabletop(scene_seed("heldout", 0)).objects
    objects = {f"{o.colour} {o.kind}" for o in scene} | {
        f"{o.size} {o.colour} {o.kind}" for o in scene
    }
    goals = [w for w in segment[2:] if not w.startswith("--") and w != segment[-1]]
    assert goals and set(goals) <= objects, (goals, objects)


def test_tour_segmentation_runs_with_the_demo_model(tmp_path: Path) -> None:
    """Tour step 1 for real, with the shipped demo model (skipped until its weights exist)."""
    if not any((REPO / "models" / "demo").glob("*.safetensors")):
        pytest.skip("models/demo has no weights yet (make demo-model)")
    segment = next(c for c in readme_commands() if c[0] == "text4seg-segment")
    _demo_scene(tmp_path)
    argv = [str(VENV_BIN / "text4seg-segment"), *segment[1:]]
    out = subprocess.run(
        argv, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    out_dir = tmp_path / segment[segment.index("--out") + 1]
    assert len(list(out_dir.glob("*.mask.png"))) == 2, "one mask per goal"


def test_published_checkpoint_recipe_makes_a_directory_the_node_loads(tmp_path: Path) -> None:
    """The README's recipe for the node, on a tiny model saved in the original LLaVA layout."""
    from text4seg_ros.model.llava_original import save_llava_original
    from text4seg_ros.model.loading import load_pretrained
    from text4seg_ros.model.meta import model_grid
    from text4seg_ros.model.tiny import build_tiny

    block = next(b for b in shell_blocks(README) if "mm_vision_tower" in b)
    model_dir = tmp_path / "models" / "text4seg-llava-7b-p24"
    tower = tmp_path / "models" / "clip-vit-large-patch14-336"
    model, processor = build_tiny("llava", seed=1)
    save_llava_original(model, processor, model_dir, tower)
    cfg = model_dir / "config.json"
    cfg.write_text(cfg.read_text().replace(str(tower), "openai/clip-vit-large-patch14-336"))
    script = block[: block.index("perception_node")]  # the node itself is not started here
    out = subprocess.run(
        ["bash", "-ec", script], cwd=tmp_path, env=_env(), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert model_grid(model_dir) == 24
    assert load_pretrained(model_dir).layout == "llava_original"  # no vision_tower argument
